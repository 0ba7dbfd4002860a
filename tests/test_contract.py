"""The task/loop contract and what the loop owns: schedules per optimizer, fp16 skip bookkeeping, eval-mode
visuals, rank-0 decisions under data parallelism, bitwise resume of drop-path, GAN and accumulation runs.

Each test is a regression test for a defect that an unwritten contract caused (see docs/architecture.md).
"""

import json
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlx import config, loop, prepare
from dlx.stepper import Stepper
from dlx.tasks.classify import Classify
from tests.conftest import build_run, events, fit_in_process, metrics_lines, run_dirs, run_dlx, summary

QUIET = ["trainer.progress=false", "trainer.device=cpu"]
GAN = ["task=gan", "model=mlp_gan", "loss=gan_nonsat", "data.normalize=false", "task.fid_samples=0", "task.k=2"]


fit = fit_in_process


# ---- schedules are sized in each optimizer's own updates ----------------------------------------------
def test_gan_with_k2_ends_both_cosine_schedules_at_the_last_step_and_runs_with_onecycle(tmp_path: Path) -> None:
    r = fit(build_run(tmp_path / "cosine", *GAN, "scheduler=cosine", "trainer.max_steps=8", "trainer.log_every=4",
                      "trainer.val_every=8"))
    lrs = {m["step"]: (m["lr/gen"], m["lr/disc"]) for m in metrics_lines(r.run_dir) if "lr/gen" in m}
    lr = r.cfg.optimizer.lr
    # Halfway through the run both schedules are halfway down (the discriminator's used to be at its end)...
    assert lrs[4] == pytest.approx((lr / 2, lr / 2))
    # ...and both reach the end of the cosine at the last step.
    assert lrs[8] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert r.stepper.updates == {"gen": 8, "disc": 16}
    # OneCycleLR raised once the discriminator's updates passed the run's step count.
    fit(build_run(tmp_path / "onecycle", *GAN, "scheduler=onecycle", "trainer.max_steps=6", "trainer.val_every=6"))


# ---- fp16 + skip: the scaler's bookkeeping ------------------------------------------------------------
def test_fp16_skip_survives_nonfinite_losses_and_counts_them() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    stepper = Stepper({"main": opt}, {"main": sched}, scaler=torch.amp.GradScaler("cpu"), on_nonfinite="skip")
    x = torch.randn(8, 4)
    for poisoned in (False, True, False, True, True, False):
        loss = net(x).pow(2).mean() * (float("nan") if poisoned else 1.0)
        stepper("main", loss)  # used to raise "unscale_() has already been called" after the first skip
    assert stepper.skipped == 3 and stepper.updates == {"main": 3}
    assert sched.last_epoch == 6  # the schedule follows the run's position, skipped updates included
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_skipped_updates_are_logged(workdir: Path) -> None:
    done = run_dlx("train", *QUIET, "trainer.on_nonfinite=skip", "trainer.max_steps=6", "trainer.log_every=3",
                   "trainer.val_every=6", cwd=workdir, env={"DLX_FAULT_NAN_AT_STEPS": "2,5"})
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir)
    skipped = {m["step"]: m["train/skipped"] for m in metrics_lines(run) if "train/skipped" in m}
    assert skipped == {3: 1, 6: 2}
    assert summary(run)["status"] == "completed"


# ---- the loop owns train/eval mode ----------------------------------------------------------------------
class DropoutPictures(Classify):
    """A classifier whose visuals are its own softmax outputs: with dropout on they change on every call."""

    def visuals(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {"probs": self.model(batch[0][:16]).softmax(-1)[None]}  # (1, 16, K) as a one-channel image


def test_visuals_of_a_dropout_model_are_made_in_eval_mode(tmp_path: Path) -> None:
    cfg = config.compose([*QUIET, "model.dropout=0.5", "model.batch_norm=false", f"paths.experiments={tmp_path}"])
    OmegaConf.resolve(cfg)
    config.check_config(cfg)
    cfg.task._target_ = f"{__name__}.DropoutPictures"  # after the allowlist check: a test-only task
    r = prepare.setup(cfg, tmp_path / "run")
    try:
        r.task.train()
        for step in (1, 2):  # two validations of the same weights
            r.state.step = step
            loop.validate(r)
            assert r.task.training, "the loop restores training mode after evaluating"
    finally:
        r.tracker.close()
    first, second = (e.encoded_image_string for e in events(tmp_path / "run").Images("probs"))
    assert first == second


# ---- data parallelism: run-wide decisions are rank 0's -------------------------------------------------
def test_ranks_that_see_different_validation_numbers_agree_on_best_and_early_stop(workdir: Path) -> None:
    # Rank 1's validation numbers are negated: what improves on rank 0 worsens on rank 1. Deciding on their
    # own numbers, one rank early-stopped while the other waited in an all-reduce until the timeout.
    done = run_dlx("train", *QUIET, "trainer.devices=2", "data.batch_size=32", "model.batch_norm=false",
                   "trainer.max_steps=40", "trainer.val_every=4", "trainer.early_stop=1", "trainer.log_every=4",
                   cwd=workdir, env={"DLX_FAULT_VAL_NEGATE_RANK": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir)
    s = summary(run)
    assert s["status"] == "completed" and s["world_size"] == 2
    accs = [m["val/acc"] for m in metrics_lines(run) if "val/acc" in m]
    assert all(a > 0 for a in accs) and s["metrics"]["best"]["val/acc"] == max(accs)  # rank 0's numbers


# ---- bitwise resume after SIGKILL at awkward steps ------------------------------------------------------
KILLS = {
    # Drop-path: killed after step 5 (last.pt at 4), shortly before the validation at 6 whose BatchNorm
    # recalibration needs the inputs of steps 1-6; they were not in last.pt.
    "drop_path": (["model=fractalnet", "model.width=8", "model.columns=2", "model.blocks=2",
                   "trainer.val_every=6", "trainer.ckpt_every=4"], 5, 4),
    # A GAN: two optimizers, k=2 discriminator updates per step, cosine schedules, dropout in D.
    "gan": ([*GAN, "scheduler=cosine", "trainer.val_every=6", "trainer.ckpt_every=3"], 5, 3),
    # Accumulation over 2 batches: the checkpoint due at step 3 (inside a window) waits for step 4.
    "accumulate": (["trainer.accumulate=2", "model.dropout=0.2", "trainer.ckpt_every=3", "trainer.val_every=100"],
                   5, 4),
}


# Three runs each: the GAN and drop-path ones are slow (make test-all); accumulation stays in the fast suite.
@pytest.mark.parametrize("name", [pytest.param(k, marks=pytest.mark.slow) if k != "accumulate" else k for k in KILLS])
def test_killed_runs_resume_bitwise(name: str, tmp_path: Path) -> None:
    args, kill_at, saved_at = KILLS[name]
    common = ["train", *QUIET, *args, "trainer.deterministic=true", "trainer.max_steps=8", "trainer.log_every=2"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = run_dlx(*common, cwd=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run_dlx(*common, cwd=tmp_path / "parts", env={"DLX_FAULT_KILL_AT_STEP": str(kill_at)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "parts")
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["state"]["step"] == saved_at
    resumed = run_dlx("resume", str(run), cwd=tmp_path / "parts")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (reference,) = run_dirs(tmp_path / "whole")
    a = torch.load(reference / "checkpoints/last.pt", weights_only=True)["task"]
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)["task"]
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # weights and buffers (BatchNorm statistics)


# ---- the Frechet judge: trained once per data set, by the loop ----------------------------------------------
def test_the_judge_is_trained_once_per_data_set_through_the_loop(tmp_path: Path) -> None:
    from dlx.data.digits import Digits
    from dlx.tasks.frechet import train_judge

    data = Digits(root=str(tmp_path), normalize=False)
    data.setup("cpu")
    rng = torch.get_rng_state()
    first = train_judge(data, lambda x: x, 4)
    assert torch.equal(rng, torch.get_rng_state()), "training the judge leaves the calling run's RNG alone"
    (folder,) = [p for p in (tmp_path / ".dlx-cache" / "judges").iterdir() if p.is_dir()]
    assert json.loads((folder / "judge.json").read_text())["steps"] == 4
    assert [m["step"] for m in metrics_lines(folder) if "train/loss" in m] == [1, 2, 3, 4]  # the loop's records
    stamp = (folder / "checkpoints" / "best.pt").stat().st_mtime_ns
    second = train_judge(data, lambda x: x, 4)  # a resume, another rank, the next run: loaded, not trained
    assert (folder / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values(),
                                                  strict=True))


# ---- the loop switches modes, tasks never do ----------------------------------------------------------------
def test_regress_checks_its_outputs_before_training_in_the_loops_eval_mode(tmp_path: Path) -> None:
    from dlx.errors import ConfigError

    hetero = ["experiment=aleatoric_1d", "model.batch_norm=true", "trainer.max_steps=2"]
    with pytest.raises(ConfigError, match="model.num_classes=2"):  # 3 outputs for [y_hat, log sigma^2]
        build_run(tmp_path / "wrong", *hetero, "model.num_classes=3")
    r = build_run(tmp_path / "ok", *hetero)
    norms = [m for m in r.task.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    # The check's forward ran in the eval mode the loop set (no statistics update), and training mode is back.
    assert norms and all(int(m.num_batches_tracked) == 0 for m in norms) and r.task.training
    r.tracker.close()
    # The task itself switches nothing: its check in train mode would update the statistics.
    with torch.no_grad():
        r.task.check_batch(next(iter(r.data.batches("val"))))
    assert all(int(m.num_batches_tracked) == 1 for m in norms)
