"""Reference recipes (conf/experiment/vae_mnist, lenet5_mnist) and what they need from the data modules:
training on every training image (data.val_fraction=0) and MNIST-format IDX files read where they are installed."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from dlx.config import check_config, compose
from dlx.data.digits import Digits
from dlx.data.torchvision_sets import MNIST, FashionMNIST
from dlx.errors import ConfigError, DlxError
from tests.conftest import run_dirs, run_dlx, summary
from tests.data_files import _idx


def write_flat_idx(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    """The four IDX files directly in `folder`, gzipped as released (Debian's dataset-fashion-mnist layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 10)
        for kind, array in (("images-idx3", x), ("labels-idx1", y)):
            name = folder / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
            name.write_bytes(gzip.compress(_idx(array)) if gz else _idx(array))
        out[split] = (x, y)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_directly_in_the_root_are_read_plain_or_gzipped(tmp_path: Path, gz: bool) -> None:
    written = write_flat_idx(tmp_path / "fashion-mnist", gz=gz)
    splits = FashionMNIST(root=str(tmp_path / "fashion-mnist"), cache=False).load()
    for split in ("train", "test"):
        x, y = getattr(splits, split)
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x[:, 0], torch.from_numpy(written[split][0]))
        assert torch.equal(y, torch.from_numpy(written[split][1]))
    assert splits.classes[0] == "T-shirt/top" and len(splits.classes) == 10


def test_a_flat_root_is_read_in_place_without_writing_a_cache_into_it(tmp_path: Path) -> None:
    write_flat_idx(tmp_path / "installed")
    before = sorted(p.name for p in (tmp_path / "installed").iterdir())
    splits = MNIST(root=str(tmp_path / "installed")).load()  # cache=True, the config's default
    assert splits.train[0].shape[0] == 30
    assert sorted(p.name for p in (tmp_path / "installed").iterdir()) == before


def test_a_corrupt_gzipped_idx_file_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    write_flat_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(DlxError, match="corrupt") as err:
        MNIST(root=str(tmp_path), cache=False).load()
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_val_fraction_zero_trains_on_every_image_and_validates_on_the_test_split() -> None:
    held, every = Digits(val_fraction=0.1), Digits(val_fraction=0)
    held.setup("cpu")
    every.setup("cpu")
    assert len(every) == len(held) + len(held.splits["val"][0])  # nothing held out
    assert every.val_is_test and not held.val_is_test
    assert every.splits["val"] is every.splits["test"]  # the same tensors, not a copy
    assert [b[1].tolist() for b in every.batches("val")] == [b[1].tolist() for b in every.batches("test")]


def test_val_fraction_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        check_config(compose(["data.val_fraction=1"]))


def test_a_run_validated_on_the_test_split_tests_its_final_weights(tmp_path: Path) -> None:
    out = run_dlx("train", "data.val_fraction=0", "trainer.max_steps=4", "trainer.val_every=2",
                  "trainer.progress=false", "data.batch_size=32", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = run_dirs(tmp_path)
    assert "test (final weights, step 4)" in (run / "train.log").read_text()
    final = summary(run)["metrics"]["final"]
    assert final["test/acc"] == pytest.approx(final["val/acc"])  # validation at step 4 was the test split


# ---- the presets -----------------------------------------------------------------------------------------
def test_vae_preset_is_the_reference_recipe() -> None:
    cfg = compose(["experiment=vae_mnist"])
    check_config(cfg)
    assert cfg.data._target_.endswith(".MNIST") and cfg.data.val_fraction == 0  # all 60k images train
    assert cfg.data.batch_size == 128 and cfg.data.normalize is False  # Bernoulli on [0, 1] pixels
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.optimizer.weight_decay == 0 and cfg.scheduler._target_.endswith("constant")
    assert cfg.loss.criterion == "bce" and cfg.trainer.epochs == 10
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # 784-400-(20, 20) encoder, 20-400-784 decoder: pytorch/examples' fc1, fc21, fc22, fc3, fc4.
    assert sorted((m.in_features, m.out_features) for m in linear) == sorted(
        [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)])
    text = (Path(cfg_dir()) / "vae_mnist.yaml").read_text()
    assert "105" in text and "pytorch/examples" in text and "dlx train experiment=vae_mnist" in text


def test_lenet5_preset_composes_to_the_papers_layers() -> None:
    from dlx import models_table

    cfg = compose(["experiment=lenet5_mnist"])
    check_config(cfg)
    assert cfg.model._target_ == "dlx.models.lenet.LeNet" and cfg.data._target_.endswith(".MNIST")
    row = models_table.measure("lenet5_mnist", "classify", cfg)
    assert row.problem is None and row.params == 61_706  # LeNet-5 with a 10-way linear output
    text = (Path(cfg_dir()) / "lenet5_mnist.yaml").read_text()
    assert "0.990" in text and "dlx train experiment=lenet5_mnist" in text


def cfg_dir() -> Path:
    from dlx.config import conf_dir

    return conf_dir() / "experiment"
