"""A dlx command that starts a child dlx process (`dlx claims` runs `dlx train -m ...`) forwards SIGTERM/SIGINT to it
and waits: the child's sweep stops as a stop signal stops any run (saved, `interrupted`), and no orphan keeps
training after the parent has gone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DLX, run_dirs, summary


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` ends (or is a zombie) within `seconds`."""
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def kill_left(*pids: int | None) -> None:
    """Never leave a process behind, whatever failed."""
    for pid in pids:
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_dlx_claims_stops_its_training_child(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DLX_")}, "OMP_NUM_THREADS": "1"}
    argv = [DLX, "claims", "ce_vs_mse", "--seeds", "1", "--runs", str(tmp_path / "runs"), "--out",
            str(tmp_path / "claims.md"), "--readme", str(tmp_path / "README.md"), "trainer.max_steps=1000000",
            "trainer.val_every=1000000", "trainer.log_every=5"]
    log = tmp_path / "out.txt"  # a file, not a pipe: an orphan holding the pipe would hang the reader
    with log.open("w") as out:
        parent = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    child = None
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "runs").rglob("metrics.jsonl")):  # the child trains
            assert parent.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        (child,) = children(parent.pid)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=60)
        assert gone_within(child, 10), "the training child outlived dlx claims"
    finally:
        kill_left(parent.pid, child)
    out = log.read_text()
    assert parent.returncode == 3, out[-2000:]
    (run,) = run_dirs(tmp_path / "runs")
    assert summary(run)["status"] == "interrupted", out[-2000:]
    assert not (tmp_path / "claims.json").exists(), "an interrupted sweep is not measured"


CHILD = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    out.write_text(signal.Signals(signum).name)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
out.write_text("ready")
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_gets_sigterm_when_its_parent_is_killed_with_sigkill(tmp_path: Path) -> None:
    # The parent is dlx.child.run itself (what `dlx claims` calls), killed with SIGKILL: it forwards nothing; the
    # kernel sends the child its parent-death signal, which it handles as any stop (here: writes its name).
    marker = tmp_path / "child.txt"
    parent_code = f"import sys; from dlx.child import run; run([sys.executable, '-c', {CHILD!r}, {str(marker)!r}])"
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])})
    child = None
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text() == "ready"):
            assert parent.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        (child,) = children(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert gone_within(child, 10), "the child outlived its SIGKILLed parent"
        assert marker.read_text() == "SIGTERM"
    finally:
        kill_left(parent.pid, child)
