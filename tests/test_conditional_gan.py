"""Class-conditional GAN (Mirza & Osindero 2014): labels into both nets, `task.conditional=true`, and
`dlx sample --class`, checked with the judge classifier of dlx.tasks.frechet."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from dlx import build
from dlx.analysis.loading import load_run
from dlx.config import compose
from dlx.errors import ConfigError
from dlx.losses.gan import GANLoss
from dlx.models.dcgan import DCGAN
from dlx.models.mlp_gan import MLPGAN
from dlx.tasks.frechet import judge_folder, train_judge
from dlx.tasks.gan import GAN
from tests.conftest import run_dirs, run_dlx, summary


@pytest.mark.parametrize("make", [lambda k: DCGAN(1, 8, latent_dim=16, width=8, num_classes=k),
                                  lambda k: MLPGAN(1, 8, latent_dim=16, hidden=[32], num_classes=k)],
                         ids=["dcgan", "mlp_gan"])
def test_both_nets_read_the_label(make):
    torch.manual_seed(0)
    model = make(10).eval()
    z = torch.randn(4, 16).repeat(2, 1)  # the same noise for two sets of labels
    y = torch.tensor([3] * 4 + [7] * 4)
    images = model.generator(z, y)
    assert images.shape == (8, 1, 8, 8)
    assert not torch.allclose(images[:4], images[4:])  # only the label differs
    logits = model.discriminator(images, y)
    assert logits.shape == (8,)
    assert not torch.allclose(logits, model.discriminator(images, (y + 1) % 10))
    with pytest.raises(ValueError, match="needs class labels"):
        model.generator(z)
    # Unconditional nets keep the weights' names of before (their checkpoints still load).
    names = set(make(0).state_dict())
    assert {"generator.net.1.weight", "discriminator.net.0.weight"} <= names or \
        {"generator.0.weight", "discriminator.1.weight"} <= names


def test_conditional_is_refused_without_a_label_input_and_class_without_conditional():
    with pytest.raises(ConfigError, match="task.conditional"):
        GAN(DCGAN(1, 8, width=8), GANLoss(), conditional=True)
    task = GAN(DCGAN(1, 8, width=8), GANLoss())
    with pytest.raises(ConfigError, match="--class"):
        task.sample(4, label=3)
    cfg = compose(["task=gan", "model=dcgan", "loss=gan_nonsat", "task.conditional=true"])
    assert cfg.model.num_classes == 10  # task.conditional sizes the models' label input from the data
    assert compose(["task=gan", "model=dcgan", "loss=gan_nonsat"]).model.num_classes == 0
    assert build.build_task(cfg).conditional


def test_the_class_input_changes_what_the_judge_sees(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    done = run_dlx("train", "task=gan", "model=dcgan", "loss=gan_nonsat", "data.normalize=false",
                   "task.conditional=true", "model.width=32", "trainer.max_steps=200", "trainer.val_every=200",
                   "trainer.log_every=50", "task.judge_steps=200", "task.fid_samples=500", "optimizer.lr=1e-3",
                   "optimizer.betas=[0.5,0.999]", "trainer.progress=false", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir / "experiments")
    final = summary(run)["metrics"]["final"]
    assert final["val/judge_class_acc"] > 0.3, final  # the judge sees the asked class far above chance (0.1)

    from dlx.sample import load_task, main

    out = workdir / "three.png"
    assert main([str(run), "--class", "3", "--n", "16", "--out", str(out)]) == 0
    assert Image.open(out).size == (8 * 10 + 2, 2 * 10 + 2)
    # The same noise with another class: the judge sees another digit. It is the run's own judge (cached per
    # data set beside the data): loading it trains nothing, so the test's judge is the one that scored the run.
    monkeypatch.chdir(workdir)  # data.root (and the judge cache under it) is relative to where the run was started
    task = load_task(run, "cpu")
    data = load_run(run, device="cpu").data
    assert (judge_folder(data, 200) / "judge.json").is_file()
    judge = train_judge(data, task.pixels.to_pixels, 200)
    predicted = {}
    for label in (3, 7):
        images = task.sample(100, torch.Generator().manual_seed(0), label=label)
        predicted[label] = judge.features_and_probs(images)[1].argmax(-1)
    assert (predicted[3] == 3).float().mean() > 0.3 and (predicted[7] == 7).float().mean() > 0.3, predicted
    assert (predicted[3] != predicted[7]).float().mean() > 0.3
    with pytest.raises(ConfigError, match="--class"):
        main([str(run), "--class", "10"])
