"""The loop features of issue 3, each doing what it says, on real digits runs; and the speed presets.

Most runs are in-process (`dlx.config.compose` -> `dlx.prepare.setup` -> `dlx.loop.fit`), as `dlx train` runs
them after Hydra, so each costs a fraction of a second; the CLI is run where composition through the
real command is the point (`trainer=debug`, `dlx --help` without torch). No timing assertions: speed
is measured by benchmarks/bench_train.py.
"""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlx import checkpoint, config, loop
from tests.conftest import build_run, fit_in_process, run_dirs, run_dlx, summary


@pytest.fixture(autouse=True)
def torch_globals():
    """One intra-op thread (these batches are small, and on a busy 2-core machine two OpenMP threads spin
    against other processes: 10x slower); runs set process-wide torch state (determinism, anomaly mode):
    put it all back for the next test."""
    threads = torch.get_num_threads()
    deterministic, anomaly = torch.are_deterministic_algorithms_enabled(), torch.is_anomaly_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.autograd.set_detect_anomaly(anomaly)


setup, fit = build_run, fit_in_process


def run(run_dir: Path, *overrides: str) -> loop.Run:
    return fit(setup(run_dir, *overrides))


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ---- EMA ---------------------------------------------------------------------------------------------
def test_ema_weights_are_evaluated_and_kept_as_best(tmp_path: Path) -> None:
    r = run(tmp_path / "ema", "trainer.ema=0.9", "trainer.max_steps=12", "trainer.val_every=12")
    raw, ema = r.task.state_dict(), r.ema.module.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    best = checkpoint.load(r.run_dir / "checkpoints" / "best.pt")["task"]
    assert best.keys() == ema.keys() and all(torch.equal(best[k], ema[k]) for k in ema)
    # The loop's validation metrics are the EMA weights' metrics, not the raw weights'.
    assert loop.evaluate(r, "val") == r.last_val
    r.ema = None
    assert loop.evaluate(r, "val")["val/loss"] != r.last_val["val/loss"]


def test_the_ema_copy_of_a_fractalnet_gets_the_batchnorm_statistics_of_its_own_weights(tmp_path: Path) -> None:
    r = run(tmp_path / "fractal", "model=fractalnet", "model.width=8", "model.columns=2", "model.blocks=2",
            "trainer.ema=0.9", "trainer.max_steps=6", "trainer.val_every=6")
    ema = r.ema.module.model
    assert r.recent, "the loop keeps the latest training inputs for recalibration (the EMA copy never trains)"
    joined = copy.deepcopy(ema).eval()  # the EMA weights with statistics recomputed on those batches
    for m in joined.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for x in r.recent:
            joined.features(x)
    loop.evaluate(r, "val")
    bn = torch.nn.BatchNorm2d
    norms = [(a, b) for a, b in zip(ema.modules(), joined.modules(), strict=True) if isinstance(a, bn)]
    for a, b in norms:
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)


# ---- gradient accumulation --------------------------------------------------------------------------
def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path: Path) -> None:
    # No BatchNorm (its statistics depend on the batch), SGD (an update proportional to the gradient),
    # deterministic kernels; the epoch's order does not depend on the batch size, so batches 2i and
    # 2i+1 of size 32 are batch i of size 64.
    common = ["model.batch_norm=false", "optimizer=sgd", "trainer.deterministic=true"]
    full = run(tmp_path / "full", *common, "data.batch_size=64", "trainer.max_steps=4")
    halves = run(tmp_path / "halves", *common, "data.batch_size=32", "trainer.accumulate=2", "trainer.max_steps=8")
    small = run(tmp_path / "small", *common, "data.batch_size=32", "trainer.max_steps=4")
    assert full.stepper.updates == halves.stepper.updates == small.stepper.updates == {"main": 4}
    a, b, c = params(full.task), params(halves.task), params(small.task)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    assert max((c[k] - a[k]).abs().max().item() for k in a) > 1e-4  # the comparison can tell batches apart


# ---- early stopping ---------------------------------------------------------------------------------
def test_early_stop_ends_the_run_when_the_monitor_cannot_improve(tmp_path: Path) -> None:
    # A learning rate far below float32's resolution of the weights: val/acc stays exactly where it is.
    r = run(tmp_path / "stop", "model.batch_norm=false", "optimizer.lr=1e-12", "trainer.early_stop=2",
            "trainer.val_every=1", "trainer.max_steps=50")
    assert r.state.step == 3 and r.state.stale == 2  # best at step 1, then two validations without improvement
    assert "early stop at step 3" in (r.run_dir / "train.log").read_text()


# ---- trainer=debug, overfit_batches, data.limit -----------------------------------------------------
def test_debug_trainer_runs_few_steps_on_a_subset_with_anomaly_detection(tmp_path: Path) -> None:
    r = setup(tmp_path / "debug", "trainer=debug")
    training = []  # anomaly mode at each training forward pass (the ones with gradients)
    r.task.model.register_forward_hook(
        lambda *_: training.append(torch.is_anomaly_enabled()) if torch.is_grad_enabled() else None)
    assert loop.train_and_test(r) == 0
    assert r.state.step == 10 and len(r.data) == 256 and r.steps_per_epoch == 256 // 64
    assert training == [True] * 10
    assert not torch.is_anomaly_enabled()  # on for the training loop only


def test_debug_trainer_composes_through_the_cli(workdir: Path) -> None:
    done = run_dlx("train", "trainer=debug", cwd=workdir, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["step"] == 10 and s["epoch"] == 2.5  # 256 samples: 4 steps an epoch
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.detect_anomaly is True


def test_overfit_one_batch_drives_the_training_loss_to_zero(tmp_path: Path) -> None:
    r = run(tmp_path / "overfit", "trainer.overfit_batches=1", "trainer.max_steps=150", "trainer.log_every=10",
            "optimizer.lr=0.003")
    assert r.steps_per_epoch == 1
    assert r.last_train["train/loss"] < 0.01  # mean over steps 141-150
    assert r.last_val["val/acc"] == 1.0  # validation is on the same batch


def test_data_limit_trains_on_the_first_n_samples(tmp_path: Path) -> None:
    every = setup(tmp_path / "all", "trainer.max_steps=1")
    every.tracker.close()
    r = run(tmp_path / "limit", "data.limit=100", "trainer.max_steps=3")
    x, y = r.data.splits["train"]
    assert len(r.data) == 100 and r.steps_per_epoch == 1  # 100 samples, batch 64, last partial batch dropped
    assert torch.equal(x, every.data.splits["train"][0][:100]) and torch.equal(y, every.data.splits["train"][1][:100])
    assert r.state.epoch == 3


# ---- fine-tuning: init_from + freeze ----------------------------------------------------------------
def test_init_from_loads_matching_weights_and_freeze_keeps_them(tmp_path: Path) -> None:
    source = run(tmp_path / "source", "trainer.max_steps=5")
    best = checkpoint.load(source.run_dir / "checkpoints" / "best.pt")["task"]

    tuned = setup(tmp_path / "tuned", f"init_from={source.run_dir}", "freeze=[features]", "trainer.max_steps=5")
    loaded = tuned.task.state_dict()
    assert all(torch.equal(loaded[k], best[k]) for k in best)  # same model: every tensor loaded
    fit(tuned)
    after = params(tuned.task)
    frozen = [k for k in after if k.startswith("model.features.")]
    assert frozen and all(torch.equal(after[k], best[k]) for k in frozen)  # bitwise unchanged
    # The frozen BatchNorm layers keep their pretrained running statistics (they stay in eval mode).
    stats = {k: v for k, v in tuned.task.state_dict().items() if k.startswith("model.features.") and "running" in k}
    assert stats and all(torch.equal(v, best[k]) for k, v in stats.items())
    assert tuned.task.training and not any(m.training for m in tuned.task.model.features.modules()
                                           if isinstance(m, torch.nn.BatchNorm1d))
    assert not torch.equal(after["model.classifier.weight"], best["model.classifier.weight"])  # the head trained

    # Another width: only tensors of the same name and shape come over (the classifier's bias).
    wider = setup(tmp_path / "wider", f"init_from={source.run_dir}", "model.width=128", "trainer.max_steps=1")
    wider.tracker.close()
    w = wider.task.state_dict()
    assert torch.equal(w["model.classifier.bias"], best["model.classifier.bias"])
    assert w["model.classifier.weight"].shape != best["model.classifier.weight"].shape


# ---- the CLI's non-training commands never import torch ---------------------------------------------
def test_help_and_runs_do_not_import_torch(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from dlx import cli\n"
        f"for argv in (['--help'], ['runs', {str(tmp_path)!r}]):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "assert 'dlx.runs' in sys.modules\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---- the speed presets ------------------------------------------------------------------------------
def test_cifar10_speedrun_preset_is_the_airbench_recipe_and_runs_on_cpu(tmp_path: Path) -> None:
    cfg, _ = config.check(["experiment=cifar10_speedrun"])  # composes and passes the checks with CIFAR-10
    assert cfg.model._target_ == "dlx.models.airbench.Airbench" and cfg.data._target_.endswith("CIFAR10")
    assert cfg.task.tta_flip and cfg.loss.label_smoothing == 0.2 and cfg.trainer.ema
    assert cfg.trainer.precision == "bf16" and str(cfg.trainer.channels_last).lower() == "true" and cfg.data.on_device
    r = run(tmp_path / "speedrun", "experiment=cifar10_speedrun", "data=digits", "trainer.max_steps=2")
    assert r.precision == "bf16" and r.channels_last and r.state.step == 2
    assert 0 <= r.last_val["val/acc"] <= 1 and r.last_train["train/loss"] == r.last_train["train/loss"]  # not NaN


def test_mnist_fast_preset_trains_on_digits(tmp_path: Path) -> None:
    cfg, _ = config.check(["experiment=mnist_fast"])
    assert cfg.data._target_.endswith(".MNIST")
    r = run(tmp_path / "mnist_fast", "experiment=mnist_fast", "data=digits", "trainer.max_steps=40")
    assert r.last_val["val/acc"] > 0.5  # it learns (10 classes: chance is 0.1)


# ---- start-up ---------------------------------------------------------------------------------------
def test_digits_load_without_importing_scikit_learn() -> None:
    # Importing sklearn.datasets costs 1-2 s of every default run's start-up; the bundled file is read directly.
    probe = (
        "import sys\n"
        "import numpy as np\n"
        "from dlx.data.digits import Digits\n"
        "d = Digits()\n"
        "d.setup('cpu')\n"
        "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n"
        "from sklearn.datasets import load_digits\n"
        "from dlx.data.digits import _digits_arrays\n"
        "images, labels = _digits_arrays()\n"
        "bunch = load_digits()\n"
        "assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)\n"
        "assert len(d) + len(d.splits['val'][0]) + len(d.splits['test'][0]) == 1797\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---- weight decay on chosen parameters ------------------------------------------------------------
def test_decay_puts_weight_decay_on_the_named_parameters_only(tmp_path: Path) -> None:
    """decay=[...] (Gal et al. 2017 decay their CNN's dense weights only): with lr 0 a step of SGD changes a
    parameter only through its decay term, so exactly the named ones shrink (by lr * weight_decay each step)."""
    r = setup(tmp_path / "decay", "model=bayesian_cnn", "decay=[classifier.2.weight]", "optimizer=sgd",
              "optimizer.lr=0.1", "optimizer.momentum=0.0", "optimizer.weight_decay=0.5", "trainer.max_steps=1")
    groups = r.optimizers["main"].param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert groups[0]["params"] == [r.task.model.classifier[2].weight]
    assert len(groups[1]["params"]) == sum(1 for _ in r.task.model.parameters()) - 1
    r.tracker.close()

    done = run_dlx("train", "model=bayesian_cnn", "decay=[classifier.9]", "trainer.max_steps=1", cwd=tmp_path)
    assert done.returncode == 2 and "decay" in done.stderr and "classifier.9" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
