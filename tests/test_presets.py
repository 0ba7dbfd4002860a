"""The experiment presets that check the lectures' claims (conf/experiment/).

Each preset is a sweep (`hydra.sweeper.params`): its job list is expanded and every job's config is
composed, pre-checked and its model run once on the meta device at the preset's own data shape (no data
loaded). Smoke runs train one job per preset for a couple of steps on digits (one `dlx train -m
experiment=a,b,...` process: a sweep over presets runs each preset's default job). Two claims are checked
on real runs: the residual net trains where the plain net of depth 56 does not (degradation), and the
deep sigmoid MLP's first-layer gradient vanishes without skips (read from metrics.jsonl and the event file).
"""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlx.config import conf_dir

DLX = str(Path(sys.executable).parent / "dlx")

# What each preset sweeps: the job list it is meant to produce.
SWEEPS = {
    "plain_vs_residual": {"model": ["plain", "resnet"], "model.depth": ["20", "56"]},
    "vanishing_gradient": {"model.residual": ["false", "true"]},
    "init_comparison": {"init": ["gaussian", "xavier_normal", "he_normal"], "model.activation": ["tanh", "relu"]},
    "ce_vs_mse": {"loss": ["cross_entropy", "mse"]},
    "dropout_and_l2": {"model.dropout": ["0.0", "0.5"], "optimizer.weight_decay": ["0.0", "0.005"],
                       "loss.l1": ["0.0", "0.0001"]},
    "stochastic_depth": {"model.stochastic_depth": ["0.0", "0.5"]},
    "fractal_droppath": {"model.drop_path_local": ["0.0", "0.15"], "model.drop_path_global": ["0.0", "0.5"]},
    "rnn_vs_lstm_parity": {"model": ["rnn", "lstm", "gru"], "data.length": ["4", "8", "16"]},
    "depth_sweep": {"model.depth": ["20", "32", "44", "56"]},
    "char_lm": {"model": ["char_rnn", "char_lstm", "char_gru", "gpt"]},
}
KINDS = {"char_lm": "language_model"}  # the others are classifiers: logits (1, num_classes)
# The GPU-sized presets train on CIFAR-10; on this CPU their smoke runs use digits.
IMAGE_PRESETS = [p for p in SWEEPS if p not in ("rnn_vs_lstm_parity", "vanishing_gradient", "char_lm")]
QUICK = ["trainer.progress=false", "trainer.max_steps=2", "trainer.val_every=2", "trainer.log_every=1",
         "data.batch_size=16"]


def dlx(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([DLX, *args, f"paths.experiments={tmp_path / 'exp'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def sweep_params(preset: str) -> dict[str, str]:
    """`hydra.sweeper.params` of a preset, as Hydra composes it for `dlx train -m experiment=<preset>`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from dlx import config, resolvers

    resolvers.register()
    config.register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    return {str(k): str(v) for k, v in OmegaConf.to_container(cfg.hydra.sweeper.params).items()}


def job_dirs(tmp_path: Path, name: str) -> list[Path]:
    """The job folders of the (single) sweep of experiment `name`, in job order."""
    sweeps = list((tmp_path / "exp" / name).glob("multirun-*"))
    assert len(sweeps) == 1, sweeps
    return sorted((d for d in sweeps[0].iterdir() if d.is_dir()), key=lambda d: int(d.name.split("-")[0]))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---- composition: every job of every preset ----------------------------------------------------------
def test_the_presets_are_the_listed_ones() -> None:
    mine = {p.stem for p in (conf_dir() / "experiment").glob("*.yaml")} & set(SWEEPS)
    assert mine == set(SWEEPS)


@pytest.mark.parametrize("preset", list(SWEEPS))
def test_preset_expands_to_its_jobs_and_each_job_builds(preset: str) -> None:
    from dlx import models_table
    from dlx.cli import job_overrides
    from dlx.config import check_config, compose

    text = (conf_dir() / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")  # then the sentence on what it shows
    assert "Look at" in text and f"dlx train -m experiment={preset}" in text
    params = sweep_params(preset)
    assert {k: v.split(",") for k, v in params.items()} == SWEEPS[preset]
    jobs = job_overrides([f"{k}={v}" for k, v in params.items()])
    assert len(jobs) == len(list(itertools.product(*SWEEPS[preset].values())))
    for job in jobs:
        cfg = compose([f"experiment={preset}", *job])
        check_config(cfg)
        assert cfg.name == preset
        for override in job:  # the swept value reached the config
            key, value = override.split("=")
            if "." in key:
                assert str(cfg[key.split(".")[0]][key.split(".")[1]]).lower() == value.lower(), (key, value)
        # On the meta device, at the preset's data shape.
        row = models_table.measure(preset, KINDS.get(preset, "classify"), cfg)
        assert row.problem is None and row.params, (job, row)


# ---- smoke runs: one job of each preset, a couple of steps -----------------------------------------------
@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_one_job_of_each_image_preset_trains(tmp_path: Path) -> None:
    dlx(tmp_path, "train", "-m", f"experiment={','.join(IMAGE_PRESETS)}", "data=digits", *QUICK)
    runs = {summary(d)["name"]: d for d in (tmp_path / "exp").glob("*/multirun-*/*") if (d / "summary.json").exists()}
    assert sorted(runs) == sorted(IMAGE_PRESETS)
    for name, d in runs.items():
        s = summary(d)
        assert s["status"] == "completed" and s["step"] == 2, (name, s)
        assert "test/acc" in s["metrics"]["final"], name
    # The presets that watch gradients log them per layer.
    assert any(k.startswith("grad_norm/") for r in records(runs["plain_vs_residual"]) for k in r)


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_parity_preset_sweeps_the_cells_at_a_given_length(tmp_path: Path) -> None:
    # A command-line value replaces the preset's sweep of that key: 3 jobs (rnn, lstm, gru) at length 6.
    dlx(tmp_path, "train", "-m", "experiment=rnn_vs_lstm_parity", "data.length=6", *QUICK)
    dirs = job_dirs(tmp_path, "rnn_vs_lstm_parity")
    assert [d.name for d in dirs] == ["0-model=rnn", "1-model=lstm", "2-model=gru"]
    for d in dirs:
        s = summary(d)
        assert s["status"] == "completed" and 0.0 <= s["metrics"]["final"]["val/acc"] <= 1.0


# ---- the claims --------------------------------------------------------------------------------------------
def first_layer_grad(run_dir: Path) -> tuple[str, float]:
    """(name, value) of the first per-layer gradient norm of the last log step (layers are in model order)."""
    last = [r for r in records(run_dir) if any(k.startswith("grad_norm/") for k in r)][-1]
    name = next(k for k in last if k.startswith("grad_norm/"))
    return name, last[name]


def test_deep_sigmoid_mlp_gradient_vanishes_without_skips(tmp_path: Path) -> None:
    dlx(tmp_path, "train", "-m", "experiment=vanishing_gradient", "trainer.max_steps=10", "trainer.log_every=5",
        "trainer.progress=false")
    plain, residual = job_dirs(tmp_path, "vanishing_gradient")
    assert plain.name.endswith("model.residual=False") and residual.name.endswith("model.residual=True")
    name_p, g_plain = first_layer_grad(plain)
    name_r, g_res = first_layer_grad(residual)
    assert name_p == name_r == "grad_norm/features.1.0"  # the first hidden layer, the same in both nets
    assert g_res >= 100 * g_plain, (g_plain, g_res)  # measured: about 1e-17 against 0.3
    # The diagnostics are in TensorBoard too: scalars, gradient and activation histograms.
    events = EventAccumulator(str(plain), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert "grad_norm/features.1.0" in tags["scalars"] and "grad_norm/classifier" in tags["scalars"]
    assert "grad/features.1.0" in tags["histograms"]
    assert {f"activations/features.{i}" for i in range(1, 21)} <= set(tags["histograms"])
    hist = events.Histograms("activations/features.20")[-1].histogram_value
    assert 0.0 <= hist.min <= hist.max <= 1.0  # sigmoid outputs


def train_loss(run_dir: Path) -> float:
    return [r for r in records(run_dir) if "train/loss" in r][-1]["train/loss"]


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_residual_net_trains_where_the_plain_net_of_depth_56_degrades(tmp_path: Path) -> None:
    # Digits, 56 layers, the preset's SGD at a lower lr and without warm-up for the short run: training loss over
    # steps 11-20 (measured: plain about 2.26, residual about 0.8).
    dlx(tmp_path, "train", "-m", "experiment=plain_vs_residual", "data=digits", "model.depth=56", "optimizer.lr=0.02",
        "scheduler.warmup_steps=0", "trainer.max_steps=20", "trainer.log_every=10", "trainer.val_every=20",
        "trainer.progress=false")
    plain, residual = job_dirs(tmp_path, "plain_vs_residual")
    assert plain.name == "0-model=plain" and residual.name == "1-model=resnet"
    assert summary(plain)["params"] == summary(residual)["params"]  # option A shortcuts: no extra weights
    assert train_loss(residual) < train_loss(plain) - 0.5, (train_loss(plain), train_loss(residual))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(SWEEPS))
def test_whole_sweep_of_each_preset_runs(tmp_path: Path, preset: str) -> None:
    data = [] if preset in ("rnn_vs_lstm_parity", "vanishing_gradient") else ["data=digits"]
    dlx(tmp_path, "train", "-m", f"experiment={preset}", *data, *QUICK)
    dirs = job_dirs(tmp_path, preset)
    assert len(dirs) == len(list(itertools.product(*SWEEPS[preset].values())))
    assert all(summary(d)["status"] == "completed" for d in dirs)
