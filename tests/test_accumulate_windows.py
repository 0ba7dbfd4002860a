"""Gradient accumulation and the end of a run: a budget is a whole number of accumulation windows (a partial last
window would never update the weights, and its gradients would be in no checkpoint), an early stop waits for the
window's end, and extending a finished run continues exactly as a run that never stopped."""

from pathlib import Path

import torch

from tests.conftest import run_dirs, run_dlx, summary

QUIET = ["trainer.progress=false", "trainer.device=cpu", "data.limit=256", "data.batch_size=32"]


def test_a_budget_that_is_not_whole_windows_is_refused(workdir: Path) -> None:
    done = run_dlx("train", *QUIET, "trainer.accumulate=2", "trainer.max_steps=5", cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dlx: error: trainer.max_steps=5 ") and "trainer.accumulate=2" in line, line
    assert "4 or 6" in line, line
    # trainer.epochs: 256 * 0.9 = 230 training images in batches of 32 = 8 per epoch (the last one partial).
    done = run_dlx("train", *QUIET, "trainer.accumulate=3", "trainer.epochs=2", "trainer.max_steps=null",
                   cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dlx: error: trainer.epochs=2 ") and "16 steps" in line and "trainer.max_steps=15" in line
    assert not list(workdir.rglob("metrics.jsonl")), "refused before training"


def test_an_early_stop_inside_a_window_waits_for_its_end(workdir: Path) -> None:
    # monitor_mode=max on a falling val/loss: the second validation (step 6) is stale and stops the run,
    # inside the window of steps 5-8: the run stops at step 8 with every update applied.
    done = run_dlx("train", *QUIET, "trainer.accumulate=4", "trainer.max_steps=40", "trainer.val_every=3",
                   "trainer.early_stop=1", "trainer.monitor=val/loss", "trainer.monitor_mode=max", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir)
    s = summary(run)
    assert (s["status"], s["stop_reason"], s["step"]) == ("completed", "early_stop", 8), s
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["state"]["step"] == 8 and state["stepper"]["updates"] == {"main": 2}


def test_extending_a_finished_accumulating_run_is_bitwise_an_uninterrupted_one(tmp_path: Path) -> None:
    common = ["train", *QUIET, "trainer.accumulate=2", "model.dropout=0.2", "trainer.deterministic=true",
              "trainer.val_every=3", "trainer.log_every=2"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    assert run_dlx(*common, "trainer.max_steps=8", cwd=tmp_path / "whole").returncode == 0
    first = run_dlx(*common, "trainer.max_steps=4", cwd=tmp_path / "parts")
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "parts")
    odd = run_dlx("resume", str(run), "trainer.max_steps=7", cwd=tmp_path / "parts")
    assert odd.returncode == 2 and "trainer.max_steps=7" in odd.stderr, odd.stderr[-2000:]
    more = run_dlx("resume", str(run), "trainer.max_steps=8", cwd=tmp_path / "parts")
    assert more.returncode == 0, more.stderr[-2000:]
    (reference,) = run_dirs(tmp_path / "whole")
    a = torch.load(reference / "checkpoints/last.pt", weights_only=True)
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert a["stepper"] == b["stepper"]
    assert [k for k in a["task"] if not torch.equal(a["task"][k], b["task"][k])] == []
