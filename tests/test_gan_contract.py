"""The GAN keeps the task contract: the caller (the loop, dlx sample) sets train/eval mode, generate never does; and
the FID judge, a classify run trained by the same loop, logs into its own run folder, not the GAN's train.log."""

from pathlib import Path

import torch

from dlx.losses.gan import GANLoss
from dlx.models.dcgan import DCGAN
from dlx.tasks.gan import GAN
from tests.conftest import run_dirs, run_dlx

GAN_RUN = ["experiment=dcgan_mnist", "data=digits", "data.limit=256", "trainer.max_steps=2", "trainer.val_every=2",
           "task.judge_steps=3", "task.fid_samples=32", "model.width=8", "data.batch_size=32", "trainer.progress=false"]


def test_generate_runs_in_the_mode_its_caller_set() -> None:
    task = GAN(DCGAN(1, 8, latent_dim=16, width=8), GANLoss())  # BatchNorm in G: the modes give other images
    z = torch.randn(6, 16)
    for training in (True, False):
        task.train(training)
        expected = task.model.generator(z).add(1).div(2).clamp(0, 1)
        torch.testing.assert_close(task.generate(z), expected, rtol=0, atol=0)
        assert all(m.training == training for m in task.modules())
    task.train()
    assert not torch.allclose(task.generate(z), task.eval().generate(z))


def test_the_judge_logs_into_its_own_run_folder_with_the_runs_threads(workdir: Path) -> None:
    done = run_dlx("train", *GAN_RUN, "trainer.threads=1", cwd=workdir, env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir / "experiments")
    (judge,) = (workdir / "data" / ".dlx-cache" / "judges").glob("*/judge.json")
    own = (run / "train.log").read_text()
    assert own.count("training starts at step") == 1, own
    (line,) = [x for x in own.splitlines() if "FID judge" in x]
    assert str(judge.parent) in line and "trained" in line, line
    theirs = (judge.parent / "train.log").read_text()
    assert theirs.count("training starts at step 0") == 1 and "JudgeNet" in theirs, theirs
    assert "torch threads 1 " in theirs, "the judge trains with the calling run's threads"
