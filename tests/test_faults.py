"""Signals and the environment (failpoints in dlx/faults.py make each fault exact): nothing is lost, nothing is
left half-done, and the user reads one line.

- a second Ctrl-C aborts at once: status `aborted`, exit code 3, one line, and the run resumes;
- a signal while the run is set up leaves no run folder behind;
- a crash in the test phase is recorded as `failed`, not `completed`;
- an experiments folder that cannot be written, and a disk that fills up mid-save, are one line (the previous
  checkpoint survives the full disk);
- a kill mid-save leaves a `.tmp` file that the next start removes; a torn last metrics line is dropped on resume.
"""

import json
import os
from pathlib import Path

import pytest

from dlx.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR
from tests.conftest import metrics_lines, run_dirs, run_dlx, summary

TINY = ["trainer.max_steps=12", "trainer.ckpt_every=2", "trainer.log_every=2", "trainer.val_every=6",
        "trainer.progress=false", "model.width=16"]


def one_line(stderr: str, start: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def tmp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob(".*.tmp")]


def test_second_ctrl_c_aborts_in_one_line_and_the_run_resumes(workdir: Path) -> None:
    done = run_dlx("train", *TINY, cwd=workdir, env={"DLX_FAULT_SIGINT_TWICE_AT_STEP": "5"})
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-2000:]
    line = one_line(done.stderr, "dlx: aborted at step 5")
    (run,) = run_dirs(workdir / "experiments")
    assert str(run) in line and summary(run)["status"] == "aborted"
    resumed = run_dlx("resume", str(run), cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert summary(run)["status"] == "completed" and summary(run)["step"] == 12


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_a_signal_during_setup_leaves_no_run_folder(sig: str, workdir: Path) -> None:
    done = run_dlx("train", *TINY, cwd=workdir, env={"DLX_FAULT_SIGNAL_IN_SETUP": sig})
    assert done.returncode == EXIT_INTERRUPTED, done.stderr[-2000:]
    one_line(done.stderr, f"dlx: stopped by SIG{sig} before training started")
    assert not (workdir / "experiments").exists(), list((workdir / "experiments").rglob("*"))


def test_a_crash_in_the_test_phase_is_recorded_as_failed(workdir: Path) -> None:
    done = run_dlx("train", *TINY, cwd=workdir, env={"DLX_FAULT_CRASH_IN_TEST": "1"})
    assert done.returncode not in (0, EXIT_USER_ERROR), done.stderr[-2000:]
    (run,) = run_dirs(workdir / "experiments")
    record = summary(run)
    assert record["status"] == "failed" and "injected crash" in record["error"]


def test_an_experiments_folder_that_cannot_be_written_is_one_line(workdir: Path) -> None:
    (workdir / "afile").write_text("not a folder")
    done = run_dlx("train", *TINY, "paths.experiments=afile/runs", cwd=workdir)
    assert done.returncode == EXIT_USER_ERROR
    assert "paths.experiments" in one_line(done.stderr, "dlx: error: ")
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs an ordinary user
        (workdir / "ro").mkdir(mode=0o500)
        done = run_dlx("train", *TINY, "paths.experiments=ro/runs", cwd=workdir)
        assert done.returncode == EXIT_USER_ERROR
        assert "Permission denied" in one_line(done.stderr, "dlx: error: paths.experiments")
    assert sorted(p.name for p in workdir.iterdir()) == ["afile", "ro"][: 1 + (os.geteuid() != 0)]


def test_a_full_disk_mid_save_is_one_line_and_keeps_the_previous_checkpoint(workdir: Path) -> None:
    done = run_dlx("train", *TINY, cwd=workdir, env={"DLX_FAULT_FULL_DISK_IN_SAVE": "2"})
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-2000:]
    assert "No space left on device" in one_line(done.stderr, "dlx: error: cannot write ")
    (run,) = run_dirs(workdir / "experiments")
    assert summary(run)["status"] == "failed" and not tmp_files(run)
    from dlx import checkpoint

    assert checkpoint.load(run / "checkpoints" / "last.pt")["state"]["step"] == 2  # the first save, intact


def test_a_kill_mid_save_leaves_a_tmp_file_and_a_torn_line_that_resume_cleans_up(workdir: Path) -> None:
    done = run_dlx("train", *TINY, cwd=workdir, env={"DLX_FAULT_KILL_IN_SAVE": "3"})
    assert done.returncode < 0  # SIGKILL
    (run,) = [p.parent.parent for p in (workdir / "experiments").rglob("checkpoints/last.pt")]
    assert tmp_files(run), "the failpoint should leave the torn temp file a kill leaves"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "train/lo')  # what a kill in the middle of a metrics write leaves
    resumed = run_dlx("resume", str(run), cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not tmp_files(run)
    steps = [r["step"] for r in metrics_lines(run)]  # every line parses: the torn one is gone
    assert steps == sorted(steps) and steps[-1] == 12 and 99 not in steps
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
