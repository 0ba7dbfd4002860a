"""Data modules on real files: torchvision's formats written by tests/data_files.py, PNG folders, generators.

No mocks: every loader reads what a writer put on disk in the official format and must give back the
same pixels and labels; configs are the real conf/data/*.yaml files.
"""

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dlx import resolvers
from dlx.data.digits import Digits
from dlx.data.hetero1d import Hetero1D, mean_fn, noise_std
from dlx.data.image_folder import ImageFolder
from dlx.data.parity import Parity
from dlx.data.shapes import Shapes
from dlx.data.torchvision_sets import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST
from dlx.errors import DlxError
from tests.data_files import write_cifar10, write_cifar100, write_image_folder, write_mnist, write_svhn

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
DECLARATIONS = ("channels", "size", "num_classes", "in_features", "input_size", "seq_len")  # dlx.build's

# name -> (class, writer that lays out real files under a root, constructor arguments for those files)
TORCHVISION = {
    "mnist": (MNIST, write_mnist, {}),
    "fashion_mnist": (FashionMNIST, lambda root: write_mnist(root, fashion=True), {}),
    "cifar10": (CIFAR10, write_cifar10, {"verify": False}),
    "cifar100": (CIFAR100, write_cifar100, {"verify": False}),
    "svhn": (SVHN, write_svhn, {"verify": False}),
}


def config(name: str, **overrides: object) -> tuple[dict, dict]:
    """Resolve conf/data/<name>.yaml as `dlx train` would: (constructor arguments, declarations)."""
    resolvers.register()
    cfg = OmegaConf.create({"paths": {"data": "data"}, "seed": 0, "data": OmegaConf.load(CONF / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"data.{key}", value)
    args = OmegaConf.to_container(cfg.data, resolve=True)
    return {k: v for k, v in args.items() if k not in DECLARATIONS}, {k: args[k] for k in DECLARATIONS if k in args}


# ---- torchvision sets --------------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_set_round_trips_pixels_and_labels(name, tmp_path):
    cls, write, args = TORCHVISION[name]
    written = write(tmp_path)
    splits = cls(root=str(tmp_path), **args).load()
    for split, (x, y) in (("train", splits.train), ("test", splits.test)):
        want_x, want_y = written[split]
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape == want_x.shape and x.shape[1:] in ((1, 28, 28), (3, 32, 32))
        assert torch.equal(x, torch.from_numpy(want_x)), "pixels must round-trip exactly"
        assert torch.equal(y, torch.from_numpy(want_y))
        assert 0 <= y.min() and y.max() < len(splits.classes)
    assert len(splits.classes) == (100 if name == "cifar100" else 10)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_config_declarations_match_loaded_data(name, tmp_path):
    _, write, _ = TORCHVISION[name]
    write(tmp_path)
    overrides = {"root": str(tmp_path), "batch_size": 8}
    if name in ("cifar10", "cifar100", "svhn"):
        overrides["verify"] = False
    args, declared = config(name, **overrides)
    data = hydra.utils.instantiate(args)
    data.setup("cpu")
    assert data.facts() == declared
    x, y = next(data.batches("train"))
    assert x.dtype == torch.float32 and x.shape == (8, declared["channels"], declared["size"], declared["size"])
    assert y.shape == (8,)


@pytest.mark.parametrize("name", TORCHVISION)
def test_missing_files_name_the_folder_and_the_fix(name, tmp_path):
    cls, _, args = TORCHVISION[name]
    with pytest.raises(DlxError) as err:
        cls(root=str(tmp_path / "nothing"), **args).load()
    msg = str(err.value)
    assert "\n" not in msg and name in msg and "data.download=true" in msg
    assert str(tmp_path / "nothing") in msg  # the absolute folder it looked in


# ---- the decoded-tensor cache ------------------------------------------------------------------------
LOAD_IN_A_FRESH_PROCESS = """
import sys, torch
from dlx.data.torchvision_sets import {cls}
s = {cls}(root=sys.argv[1], **{args!r}).load()
torch.save({{"train": list(s.train), "test": list(s.test), "classes": s.classes,
            "torchvision": "torchvision" in sys.modules}}, sys.argv[2])
"""


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_second_load_reads_the_cache_without_importing_torchvision(name, tmp_path):
    cls, write, args = TORCHVISION[name]
    written = write(tmp_path / "data")
    first = cls(root=str(tmp_path / "data"), **args).load()
    assert len(list((tmp_path / "data" / ".dlx-cache").glob(f"{name}-*.pt"))) == 1
    code = LOAD_IN_A_FRESH_PROCESS.format(cls=cls.__name__, args=args)
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "data"), str(tmp_path / "out.pt")], check=True)
    second = torch.load(tmp_path / "out.pt", weights_only=True)
    assert second["torchvision"] is False, "a cache hit must not import torchvision"
    for split in ("train", "test"):
        assert all(torch.equal(a, b) for a, b in zip(second[split], getattr(first, split), strict=True))
        assert torch.equal(second[split][0], torch.from_numpy(written[split][0]))
    assert second["classes"] == first.classes


def test_changed_files_are_decoded_again_and_replace_the_cache(tmp_path):
    write_mnist(tmp_path, seed=0)
    MNIST(root=str(tmp_path)).load()
    new = write_mnist(tmp_path, seed=1)  # same sizes, other pixels: a rewritten file
    for f in (tmp_path / "MNIST" / "raw").iterdir():  # one second later, as a real rewrite would be
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    splits = MNIST(root=str(tmp_path)).load()
    assert torch.equal(splits.train[0], torch.from_numpy(new["train"][0]))
    assert len(list((tmp_path / ".dlx-cache").glob("mnist-*.pt"))) == 1  # the stale one is gone


def test_unreadable_cache_is_decoded_again(tmp_path):
    written = write_mnist(tmp_path)
    MNIST(root=str(tmp_path)).load()
    (cached,) = (tmp_path / ".dlx-cache").glob("mnist-*.pt")
    cached.write_bytes(b"not a tensor file")
    splits = MNIST(root=str(tmp_path)).load()
    assert torch.equal(splits.train[0], torch.from_numpy(written["train"][0]))
    assert torch.load(cached, weights_only=True)["classes"] == splits.classes  # rewritten


def test_cache_false_writes_nothing(tmp_path):
    write_cifar10(tmp_path)
    CIFAR10(root=str(tmp_path), verify=False, cache=False).load()
    assert not (tmp_path / ".dlx-cache").exists()


def test_truncated_idx_file_is_reported_as_corrupt(tmp_path):
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:3])  # header cut short
    with pytest.raises(DlxError, match="corrupt") as err:
        MNIST(root=str(tmp_path)).load()
    assert str(images.parent) in str(err.value) and "\n" not in str(err.value)


def test_cifar_md5_check_is_on_by_default_and_names_the_way_out(tmp_path):
    write_cifar10(tmp_path)  # real format, but not the official files' md5 sums
    with pytest.raises(DlxError, match="md5") as err:
        CIFAR10(root=str(tmp_path)).load()
    assert "data.verify=false" in str(err.value)


def test_unparsable_cifar_pickle_is_reported_as_corrupt(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DlxError, match="corrupt"):
        CIFAR10(root=str(tmp_path), verify=False).load()


# ---- image folders -----------------------------------------------------------------------------
def image_folder(root: Path, seed: int = 0, num_workers: int = 0) -> ImageFolder:
    data = ImageFolder(root=str(root), image_size=12, batch_size=4, num_workers=num_workers, seed=seed)
    data.setup("cpu")
    return data


def test_image_folder_batches_have_the_right_shape(tmp_path):
    write_image_folder(tmp_path, per_class={"train": 10, "test": 2})
    data = image_folder(tmp_path)
    assert data.classes == ["cat", "dog", "fish"]
    assert data.facts() == {"num_classes": 3, "in_features": 3 * 12 * 12, "channels": 3, "size": 12}
    assert len(data) == 27 and len(data.parts["val"][1]) == 3  # 10% of 30 training images held out
    x, y = next(data.batches("train"))
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32 and y.shape == (4,) and y.dtype == torch.int64
    test = list(data.batches("test"))
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 1, 1, 2, 2]  # the test/ folder, in order
    assert abs(torch.cat([x for x, _ in data.batches("train")]).mean()) < 0.5  # normalized


def test_image_folder_order_is_a_function_of_seed_and_epoch(tmp_path):
    write_image_folder(tmp_path, per_class={"train": 10, "test": 2})
    a, b = image_folder(tmp_path, seed=3), image_folder(tmp_path, seed=3)
    for epoch in (0, 1):
        xa, xb = list(a.batches("train", epoch)), list(b.batches("train", epoch))
        assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(xa, xb, strict=True))
    first, second = torch.cat([x for x, _ in a.batches("train", 0)]), torch.cat([x for x, _ in a.batches("train", 1)])
    assert not torch.equal(first, second)
    # The labels follow permutation(epoch) exactly.
    folder, idx = a.parts["train"]
    order = idx[a.permutation(1)][: a.num_batches("train") * 4]
    assert torch.cat([y for _, y in a.batches("train", 1)]).tolist() == [folder.targets[i] for i in order]


def test_image_folder_workers_persist_across_epochs_and_give_the_same_batches(tmp_path):
    write_image_folder(tmp_path, per_class={"train": 10, "test": 2})
    plain, workers = image_folder(tmp_path, seed=2), image_folder(tmp_path, seed=2, num_workers=2)

    def same(a: list, b: list) -> bool:
        return all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))

    loaders = set()
    for epoch in (0, 1, 2):
        assert same(list(plain.batches("train", epoch)), list(workers.batches("train", epoch)))
        loaders.add(id(workers._loaders["train"]))
    assert len(loaders) == 1 and workers._loaders["train"].persistent_workers  # one loader, its workers kept
    # A pass abandoned midway (early stop) and one nested in another (the train split evaluated inside a
    # training epoch) both still give exactly their own batches.
    epoch = workers.batches("train", 3)
    first = next(epoch)
    inner = list(workers.batches("train", 4))
    assert same(inner, list(plain.batches("train", 4)))
    rest = [first, *epoch]
    assert same(rest, list(plain.batches("train", 3)))
    abandoned = workers.batches("train", 5)
    next(abandoned)
    abandoned.close()  # the persistent workers still hold prefetched batches of epoch 5: they are dropped
    assert same(list(workers.batches("train", 6)), list(plain.batches("train", 6)))


def test_image_folder_resumes_mid_epoch_without_decoding_skipped_batches(tmp_path):
    written = write_image_folder(tmp_path, per_class={"train": 10, "test": 2})
    data = image_folder(tmp_path, seed=1)
    full = list(data.batches("train", epoch=2))
    # Break every image of the first two batches: resuming at batch 2 must never open them.
    folder, idx = data.parts["train"]
    skipped = idx[data.permutation(2)[:8]]
    for i in skipped.tolist():
        Path(folder.samples[i][0]).write_bytes(b"broken")
    resumed = list(data.batches("train", epoch=2, start=2))
    assert len(resumed) == len(full) - 2
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(full[2:], resumed, strict=True))
    with pytest.raises(Exception, match="cannot identify image"):
        list(data.batches("train", epoch=2))
    assert len(written["train"]) == 30


def test_image_folder_with_workers_gives_the_same_batches(tmp_path):
    write_image_folder(tmp_path, per_class={"train": 6, "test": 1})
    one, two = image_folder(tmp_path), image_folder(tmp_path, num_workers=1)
    x1 = torch.cat([x for x, _ in one.batches("train", 4)])
    x2 = torch.cat([x for x, _ in two.batches("train", 4)])
    assert torch.equal(x1, x2)


def test_image_folder_without_split_folders_holds_out_a_fixed_test_split(tmp_path):
    write_image_folder(tmp_path, per_class={"": 10})  # root/<class>/ directly
    a, b = image_folder(tmp_path, seed=0), image_folder(tmp_path, seed=5)
    assert {k: len(v[1]) for k, v in a.parts.items()} == {"train": 22, "val": 2, "test": 6}
    assert torch.equal(a.parts["test"][1], b.parts["test"][1])  # test fixed across run seeds
    assert not torch.equal(a.parts["val"][1], b.parts["val"][1])  # val drawn from the run seed
    parts = [set(v[1].tolist()) for v in a.parts.values()]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 30  # disjoint, and together all images


def test_image_folder_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DlxError, match="data.root"):
        image_folder(tmp_path / "missing")
    write_image_folder(tmp_path, classes=("a", "b"), per_class={"train": 3})
    write_image_folder(tmp_path, classes=("a", "c"), per_class={"test": 1})
    with pytest.raises(DlxError, match="differ"):
        image_folder(tmp_path)


def test_image_folder_config_declarations_match(tmp_path):
    write_image_folder(tmp_path, per_class={"train": 4, "val": 1})
    args, declared = config("image_folder", root=str(tmp_path), num_classes=3, num_workers=0, image_size=16)
    data = hydra.utils.instantiate(args)
    data.setup("cpu")
    assert data.facts() == declared
    assert len(data.parts["test"][1]) == 3  # val/ serves as the test split when there is no test/


# ---- synthetic sets ----------------------------------------------------------------------------
def test_parity_labels_are_the_parity_of_the_bits():
    data = Parity(length=6, n_train=300, n_test=100)
    data.setup("cpu")
    x, y = data.splits["test"]
    assert x.shape == (100, 6, 2) and x.dtype == torch.float32
    strings = ["".join("1" if step[1] == 1 else "0" for step in row.tolist()) for row in x]
    assert y.tolist() == [s.count("1") % 2 for s in strings]
    assert data.classes == ["even", "odd"]
    args, declared = config("parity")
    parity = hydra.utils.instantiate(args)
    parity.setup("cpu")
    assert parity.facts() == declared


def test_parity_variable_lengths_are_padded_on_the_left():
    data = Parity(length=10, variable=True, n_train=500, n_test=100)
    data.setup("cpu")
    x, y = data.splits["train"]
    real = x.sum(-1) == 1  # (N, T): a one-hot bit; padding is all zeros
    assert ((x.sum(-1) == 0) | real).all()
    assert real[:, -1].all(), "the last step is always a real bit"
    assert (real.int().diff(dim=1) >= 0).all(), "padding only before the first real bit"
    lengths = real.sum(1)
    assert lengths.min() == 2 and lengths.max() == 10  # both strings of length 1 are test strings
    assert (data.splits["test"][0].sum(-1) == 1).sum(1).min() == 1
    assert torch.equal(y, x[..., 1].sum(1).long() % 2)


@pytest.mark.parametrize("length,variable", [(4, False), (8, False), (6, True), (24, False)])
def test_parity_test_strings_are_never_trained_on(length: int, variable: bool):
    # Length 8 has 256 strings, far fewer than n_train: drawn independently, every test string would be a
    # training string too, and test accuracy would measure memory instead of parity.
    splits = Parity(length=length, variable=variable, n_train=4096, n_test=512).load()

    def strings(x: torch.Tensor) -> set[bytes]:
        return {bytes(row) for row in x.flatten(1).to(torch.uint8).tolist()}

    assert not strings(splits.train[0]) & strings(splits.test[0])
    assert set(splits.test[1].tolist()) == {0, 1}, "unseen strings of both labels"
    assert len(splits.train[0]) == 4096 and len(splits.test[0]) == 512


def test_parity_of_length_one_is_refused():
    with pytest.raises(DlxError, match="data.length"):
        Parity(length=1)


def test_synthetic_test_sets_are_fixed_and_train_sets_follow_the_seed():
    a, b = Parity(seed=1).load(), Parity(seed=2).load()
    assert torch.equal(a.test[0], b.test[0]) and not torch.equal(a.train[0], b.train[0])
    c, d = Hetero1D(seed=1).load(), Hetero1D(seed=1).load()
    assert torch.equal(c.train[1], d.train[1])


def assert_masks_match(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> None:
    """Each mask marks exactly the image's one flat-coloured shape, with the class y + 1."""
    inside = mask > 0  # (N, H, W)
    assert ((mask == 0) | (mask == y[:, None, None] + 1)).all(), "the mask's class is the label"
    assert inside.flatten(1).any(1).all(), "every image has a shape"
    xf = x.float()
    hi = xf.masked_fill(~inside[:, None], -torch.inf).amax((2, 3))  # (N, 3): brightest shape pixel
    lo = xf.masked_fill(~inside[:, None], torch.inf).amin((2, 3))
    assert torch.equal(hi, lo), "one flat colour under the mask"
    same = (xf == hi[:, :, None, None]).all(1)  # (N, H, W): pixels of the shape's colour
    assert not (same & ~inside).any(), "no shape pixel outside the mask"


def test_shapes_masks_agree_with_labels_and_images():
    data = Shapes(n_train=300, n_test=60, noise=0.1)
    data.setup("cpu")
    x, y, mask = data.splits["train"]
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8 and mask.shape[1:] == (32, 32)
    assert y.dtype == mask.dtype == torch.int64
    assert_masks_match(x, y, mask)
    assert set(y.tolist()) == {0, 1, 2} and data.classes == ["circle", "square", "triangle"]


def test_shapes_augmentation_moves_the_mask_with_the_image():
    data = Shapes(n_train=200, n_test=10, crop_padding=6, flip=True, batch_size=64)
    data.setup("cpu")
    torch.manual_seed(0)
    for x, y, mask in data.batches("train"):
        assert x.shape == (64, 3, 32, 32) and mask.shape == (64, 32, 32)
        assert_masks_match(x, y, mask)  # still exactly the shape after crop and flip
    args, declared = config("shapes", n_train=100, n_test=10, image_size=24)
    shapes = hydra.utils.instantiate(args)
    shapes.setup("cpu")
    assert shapes.facts() == declared and declared["size"] == 24  # generated at image_size


def test_hetero1d_noise_grows_with_x():
    data = Hetero1D(n_train=20000, n_test=100)
    data.setup("cpu")
    x, y = data.splits["train"]
    assert x.shape[1:] == (1,) and y.shape[1:] == (1,) and y.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    residual = (y - mean_fn(x))[:, 0]
    bins = torch.linspace(-1, 1, 5)
    stds = [residual[(x[:, 0] >= lo) & (x[:, 0] < hi)].std().item() for lo, hi in pairwise(bins)]
    assert all(a < b for a, b in pairwise(stds)), stds
    centres = (bins[:-1] + bins[1:]) / 2
    assert np.allclose(stds, noise_std(centres).tolist(), rtol=0.15)
    args, declared = config("hetero1d")
    hetero = hydra.utils.instantiate(args)
    hetero.setup("cpu")
    assert hetero.facts() == declared == {"in_features": 1, "num_classes": 1}


# ---- the base class's batches ------------------------------------------------------------------
def test_augmentation_keeps_batch_shapes():
    plain, augmented = Digits(batch_size=32), Digits(batch_size=32, crop_padding=2, flip=True, cutout=3)
    plain.setup("cpu")
    augmented.setup("cpu")
    p, a = next(plain.batches("train")), next(augmented.batches("train"))
    assert [t.shape for t in p] == [t.shape for t in a] == [(32, 1, 8, 8), (32,)]
    assert torch.equal(p[1], a[1]) and not torch.equal(p[0], a[0])  # same order, changed pixels


def test_the_same_seed_gives_the_same_split_and_order():
    a, b, c = Digits(seed=7), Digits(seed=7), Digits(seed=8)
    for d in (a, b, c):
        d.setup("cpu")
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    assert torch.equal(a.permutation(3), b.permutation(3)) and not torch.equal(a.permutation(3), a.permutation(4))
