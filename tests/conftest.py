"""Shared test helpers: the real `dlx` console script in a subprocess, run folders, event files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DLX = str(Path(sys.executable).parent / "dlx")


def run_dlx(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `dlx ARGS` in `cwd` (runs land in cwd/experiments) and capture its output."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DLX_")}
    full_env = {**base, "COLUMNS": "200", **(env or {})}
    return subprocess.run([DLX, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def run_dirs(root: Path) -> list[Path]:
    """Every run folder (one holding summary.json) below `root`, sorted."""
    return sorted(p.parent for p in Path(root).rglob("summary.json"))


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]


def events(run_dir: Path):  # noqa: ANN201 - EventAccumulator
    """TensorBoard's own reader over the run folder's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    return acc


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh current directory for dlx runs (experiments/ and data/ go inside)."""
    return tmp_path
