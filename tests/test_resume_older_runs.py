"""Runs trained by an earlier dlx resume as before: a summary.json without `steps_per_epoch` and a saved config
without the trainer keys added since (`trainer.threads`)."""

import json
from pathlib import Path

from tests.conftest import run_dirs, run_dlx, summary

# 64 digits, 10% held out: 58 training images in batches of 32 = 2 steps per epoch, 2 epochs.
ARGS = ["trainer.progress=false", "trainer.device=cpu", "data.limit=64", "data.batch_size=32", "trainer.epochs=2",
        "trainer.max_steps=null", "trainer.log_every=1"]


def files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file()}


def test_a_completed_run_of_an_older_dlx_is_complete_and_extends(workdir: Path) -> None:
    done = run_dlx("train", *ARGS, cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir)
    s = summary(run)
    assert (s["steps_per_epoch"], s["step"]) == (2, 4)
    del s["steps_per_epoch"]
    (run / "summary.json").write_text(json.dumps(s))
    config = run / ".hydra" / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(True) if "threads:" not in line))
    before = files(run)
    for overrides in (["trainer.epochs=2"], ["trainer.max_steps=4"]):
        again = run_dlx("resume", str(run), *overrides, cwd=workdir)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "is complete (4 steps" in again.stdout, again.stdout[-2000:]
    assert files(run) == before  # not tested again: not a byte, not a timestamp
    more = run_dlx("resume", str(run), "trainer.epochs=3", cwd=workdir)
    assert more.returncode == 0, more.stderr[-2000:]
    s = summary(run)
    assert (s["status"], s["step"], s["steps_per_epoch"]) == ("completed", 6, 2)
