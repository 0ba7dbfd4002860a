"""Nothing is lost: exact resume after SIGKILL (mid-epoch and mid-save), SIGTERM, divergence, locking.

Kills are made exact by dlx's failpoints (dlx/faults.py), not by timing.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlx.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_USER_ERROR
from tests.conftest import DLX, metrics_lines, run_dirs, run_dlx, summary

# 1437 digits training samples / batch 64 = 22 steps an epoch: 50 steps end mid-epoch (step 44 + 6).
# Dropout and augmentation make the RNG state matter; ckpt_every=4 with kills at 13 and 31 means the
# resumes start mid-epoch from checkpoints 12 and 28, replaying steps that were already trained once.
ARGS = ["trainer.deterministic=true", "trainer.max_steps=50", "trainer.val_every=20", "trainer.ckpt_every=4",
        "trainer.log_every=5", "model.dropout=0.2", "data.crop_padding=1", "trainer.progress=false"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["task"]


def assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must match bit for bit."""
    cwd = tmp_path_factory.mktemp("reference")
    done = run_dlx("train", *ARGS, cwd=cwd)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(cwd / "experiments")
    return run_dir


def killed_run(cwd: Path, env: dict) -> Path:
    done = run_dlx("train", *ARGS, cwd=cwd, env=env)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
    (run_dir,) = run_dirs(cwd / "experiments")
    assert summary(run_dir)["status"] == "running"  # what a crash leaves: the run never got to say more
    return run_dir


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(reference: Path, workdir: Path) -> None:
    run_dir = killed_run(workdir, {"DLX_FAULT_KILL_AT_STEP": "13"})
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["state"]["step"] == 12
    done = run_dlx("resume", str(run_dir), cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert summary(run_dir)["status"] == "completed"
    assert_bitwise_equal(reference, run_dir)
    # The resumed run's records continue where the checkpoint was: no step is logged twice, and the
    # logged values equal the uninterrupted run's.
    steps = [m["step"] for m in metrics_lines(run_dir) if "train/loss" in m]
    assert steps == sorted(set(steps))
    drop = ("time", "perf/samples_per_sec")
    ours = [{k: v for k, v in m.items() if k not in drop} for m in metrics_lines(run_dir)]
    theirs = [{k: v for k, v in m.items() if k not in drop} for m in metrics_lines(reference)]
    assert ours == theirs
    from tests.conftest import events

    acc = events(run_dir)
    loss_steps = [e.step for e in acc.Scalars("train/loss")]
    assert loss_steps == sorted(set(loss_steps)) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


def test_sigkill_mid_save_keeps_the_previous_checkpoint(reference: Path, workdir: Path) -> None:
    # Saves: step 4, 8, 12, 16, val@20 (best+last), 24, 28, ... the 8th save is last.pt at step 28.
    run_dir = killed_run(workdir, {"DLX_FAULT_KILL_IN_SAVE": "8"})
    ckpt = run_dir / "checkpoints"
    assert list(ckpt.glob(".last.pt.*.tmp")), "the torn temp file is left behind, beside the good one"
    state = torch.load(ckpt / "last.pt", weights_only=True)
    assert state["state"]["step"] == 24
    done = run_dlx("resume", str(run_dir), cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert_bitwise_equal(reference, run_dir)


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_same_seed_same_metrics_other_seed_differs(reference: Path, workdir: Path) -> None:
    for seed in (0, 1):
        done = run_dlx("train", *ARGS, f"seed={seed}", cwd=workdir)
        assert done.returncode == 0, done.stderr
    same, other = sorted(run_dirs(workdir / "experiments"), key=lambda d: summary(d)["command"])
    assert summary(same)["command"].endswith("seed=0") and summary(other)["command"].endswith("seed=1")
    assert summary(same)["metrics"]["final"]["test/acc"] == summary(reference)["metrics"]["final"]["test/acc"]
    assert_bitwise_equal(reference, same)
    assert not torch.equal(weights(reference)["model.classifier.weight"], weights(other)["model.classifier.weight"])


def _wait_for_checkpoint(run_root: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(run_root.rglob("checkpoints/last.pt"))
        if found:
            return found[0].parents[1]
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_sigterm_saves_marks_interrupted_and_resumes(workdir: Path) -> None:
    args = ["trainer.max_steps=100000", "trainer.ckpt_every=5", "trainer.val_every=1000", "trainer.progress=false"]
    proc = subprocess.Popen([DLX, "train", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    run_dir = _wait_for_checkpoint(workdir / "experiments", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_INTERRUPTED
    s = summary(run_dir)
    assert s["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["state"]["step"] == s["step"]
    # Resuming may change trainer settings (here: a shorter run), and completes in the same folder.
    done = run_dlx("resume", str(run_dir), f"trainer.max_steps={s['step'] + 10}", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["step"] == s["step"] + 10
    assert len(run_dirs(workdir / "experiments")) == 1
    # The override is now the run's config: a later `dlx resume` without it keeps the new step budget.
    assert OmegaConf.load(run_dir / ".hydra/config.yaml").trainer.max_steps == s["step"] + 10


def test_a_running_run_cannot_be_resumed_twice(workdir: Path) -> None:
    args = ["trainer.max_steps=100000", "trainer.ckpt_every=5", "trainer.progress=false"]
    proc = subprocess.Popen([DLX, "train", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        run_dir = _wait_for_checkpoint(workdir / "experiments", proc)
        os.kill(proc.pid, signal.SIGSTOP)  # holds its lock while frozen
        done = run_dlx("resume", str(run_dir), cwd=workdir)
        assert done.returncode == EXIT_USER_ERROR
        assert "in use by another dlx process" in done.stderr and "Traceback" not in done.stderr
    finally:
        proc.kill()
        proc.wait()


def test_divergence_stops_before_the_update_and_keeps_a_finite_checkpoint(workdir: Path) -> None:
    done = run_dlx("train", "optimizer=sgd", "optimizer.lr=1e30", "model.batch_norm=false", "trainer.max_steps=50",
                   "trainer.val_every=1", "trainer.progress=false", cwd=workdir)
    assert done.returncode == EXIT_DIVERGED, done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    s = summary(run_dir)
    assert s["status"] == "diverged" and "diverged at step" in s["error"]
    step = int(s["error"].split("diverged at step ")[1].split(":")[0])
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert state["state"]["step"] == step - 1
    assert all(torch.isfinite(t).all() for t in state["task"].values() if t.is_floating_point())
    assert "diverged at step" in (run_dir / "train.log").read_text()


def test_skip_policy_drops_bad_updates_and_goes_on(workdir: Path) -> None:
    done = run_dlx("train", "optimizer=sgd", "optimizer.lr=1e30", "model.batch_norm=false", "trainer.max_steps=10",
                   "trainer.on_nonfinite=skip", "trainer.progress=false", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    assert summary(run_dir)["status"] == "completed"


def test_resume_refuses_changes_to_what_is_trained(reference: Path, workdir: Path) -> None:
    config = (reference / ".hydra/config.yaml").read_text()
    for override, key in (("model.width=128", "model.width"), ("data.batch_size=32", "data.batch_size"),
                          ("seed=3", "seed")):
        done = run_dlx("resume", str(reference), override, cwd=workdir)
        assert done.returncode == EXIT_USER_ERROR, done.stderr
        assert done.stderr.startswith(f"dlx: error: {key}") and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads((reference / "summary.json").read_text())["status"] == "completed"
    assert (reference / ".hydra/config.yaml").read_text() == config  # a refused resume changes nothing


def _files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file()}


def test_resume_of_a_completed_run_changes_nothing(reference: Path, workdir: Path) -> None:
    before = _files(reference)
    for overrides in ([], ["optimizer.lr=0.5"]):
        done = run_dlx("resume", str(reference), *overrides, cwd=workdir)
        assert done.returncode == 0, done.stderr
        assert "is complete (50 steps" in done.stdout and "trainer.max_steps=" in done.stdout
    # A budget below the step the run is at is refused in one line.
    short = run_dlx("resume", str(reference), "trainer.max_steps=5", cwd=workdir)
    assert short.returncode == EXIT_USER_ERROR
    assert short.stderr.startswith("dlx: error: trainer.max_steps") and len(short.stderr.strip().splitlines()) == 1
    assert _files(reference) == before  # not a byte, not a timestamp


def test_a_resume_override_of_the_learning_rate_takes_effect_at_the_next_step(workdir: Path) -> None:
    run_dir = killed_run(workdir, {"DLX_FAULT_KILL_AT_STEP": "13"})  # last.pt at step 12
    done = run_dlx("resume", str(run_dir), "optimizer.lr=0.0005", "trainer.max_steps=20", cwd=workdir)
    assert done.returncode == 0, done.stderr
    lrs = {m["step"]: m["lr"] for m in metrics_lines(run_dir) if "lr" in m}
    assert lrs == {5: 0.001, 10: 0.001, 15: 0.0005, 20: 0.0005}
    assert "resume override optimizer.lr: 0.001 -> 0.0005" in (run_dir / "train.log").read_text()
    assert OmegaConf.load(run_dir / ".hydra/config.yaml").optimizer.lr == 0.0005
