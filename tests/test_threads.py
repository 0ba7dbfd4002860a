"""`trainer.threads`: torch's CPU thread count for a run (torch.set_num_threads before anything is built), recorded
in summary.json and train.log; null keeps torch's default (OMP_NUM_THREADS, else the cores)."""

from pathlib import Path

import yaml

from tests.conftest import run_dirs, run_dlx, summary


def test_threads_reach_torch_and_null_keeps_its_default(workdir: Path) -> None:
    # One process, two jobs: the second (null) gets torch's default back, not the first job's setting.
    done = run_dlx("train", "-m", "trainer=debug", "trainer.max_steps=2", "trainer.threads=1,null", cwd=workdir,
                   env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    got = {}
    for run in run_dirs(workdir / "experiments"):
        s = summary(run)
        setting = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["trainer"]["threads"]
        got[setting] = s["threads"]
        assert f"torch threads {s['threads']}" in (run / "train.log").read_text()
    assert got == {1: 1, None: 2}, got


def test_threads_below_one_are_refused(workdir: Path) -> None:
    done = run_dlx("train", "trainer=debug", "trainer.threads=0", cwd=workdir)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dlx: error: trainer.threads=0 "), line
