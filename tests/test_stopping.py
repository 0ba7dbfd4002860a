"""The gradient-norm stopping rule (trainer.stop_grad_norm) beside early stopping, through the real `dlx train`."""

import math
from pathlib import Path

import pytest

from dlx.config import check_config, compose
from dlx.errors import ConfigError
from tests.conftest import metrics_lines, run_dirs, run_dlx, summary


def test_a_threshold_must_be_positive():
    with pytest.raises(ConfigError, match="trainer.stop_grad_norm"):
        check_config(compose(["trainer.stop_grad_norm=-1"]))


def test_training_stops_once_the_gradient_norm_falls_below_the_threshold(workdir: Path):
    # SGD on digits: the gradient norm starts near 1 and shrinks as the loss does; stop at the first update
    # whose global norm is below 0.3, long before the 400-step budget.
    args = ["optimizer=sgd", "optimizer.lr=0.1", "trainer.max_steps=400", "trainer.val_every=1000",
            "trainer.log_every=1", "trainer.progress=false", "trainer.stop_grad_norm=0.3"]
    done = run_dlx("train", *args, cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gradient norm" in done.stdout
    (run,) = run_dirs(workdir / "experiments")
    s = summary(run)
    assert s["status"] == "completed" and s["stop_reason"] == "grad_norm", s
    norms = [m["train/grad_norm"] for m in metrics_lines(run) if "train/grad_norm" in m]
    assert len(norms) == s["step"] < 400
    assert norms[-1] < 0.3 and all(n >= 0.3 for n in norms[:-1]), norms  # the first norm below it, not later
    assert f"{norms[-1]:.3g}" in s["stop_detail"]
    assert math.isfinite(s["metrics"]["final"]["test/acc"])  # validated and tested at the stop, like a budget end
