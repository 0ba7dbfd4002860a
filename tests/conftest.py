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


# ---- runs built and trained in this process (no start-up: for tests that inspect the Run itself) ----------
IN_PROCESS = ["trainer.progress=false", "trainer.device=cpu"]


def build_run(run_dir: Path, *overrides: str):  # noqa: ANN201 - dlx.state.Run
    """Compose and check like `dlx train`, then build the run in `run_dir` (digits, CPU) in this process."""
    from omegaconf import OmegaConf

    from dlx import config, prepare

    cfg = config.compose([*IN_PROCESS, f"paths.experiments={run_dir.parent}", *overrides])
    OmegaConf.resolve(cfg)
    config.check_config(cfg)
    prepare.configure_logging(run_dir)
    return prepare.setup(cfg, run_dir)


def fit_in_process(r):  # noqa: ANN001, ANN201 - dlx.state.Run
    """Train a built run to its budget (asserting it completes), closing its TensorBoard writer."""
    from dlx import loop
    from dlx.runtime import StopSignal

    try:
        with StopSignal() as stop:
            assert loop.fit(r, stop) == "completed"
    finally:
        r.tracker.close()
    return r

