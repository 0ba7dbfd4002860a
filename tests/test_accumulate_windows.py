"""Gradient accumulation windows aligned to epochs (as timm, Lightning and the HF Trainer do): each epoch's batches
are grouped into windows of `trainer.accumulate` from its first batch, and its last batch ends a possibly shorter
window whose update steps with the mean gradient of its batches. A trainer.max_steps budget that ends inside a
window is refused; checkpoints, stop requests and early stops never cut a window, so resuming and extending a run
stay bitwise equal to a run that never stopped."""

import copy
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.nn.utils import clip_grad_norm_

from dlx import prepare
from dlx.errors import ConfigError
from dlx.stepper import Stepper
from tests.conftest import build_run, fit_in_process, run_dirs, run_dlx, summary

# 256 * 0.9 = 230 training images in batches of 32: 8 batches per epoch (the last of 6 images).
QUIET = ["trainer.progress=false", "trainer.device=cpu", "data.limit=256", "data.batch_size=32"]
GAN = ["task=gan", "model=mlp_gan", "loss=gan_nonsat", "data.normalize=false", "task.fid_samples=0", "task.k=2"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for the in-process runs (a busy 2-core machine), and torch's global state put back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


# ---- the Stepper: a short window's update is the mean of its batches' gradients ------------------------------
def batches(seed: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 5, generator=g), torch.randn(8, 2, generator=g)) for _ in range(count)]


def plain_reference(net: torch.nn.Module, windows: list[list], clip: float | None, wrong: bool = False
                    ) -> torch.nn.Module:
    """Plain PyTorch: per window, backward of the mean of its batches' losses, clip, SGD step. `wrong`: the
    mistakes it must differ from: the losses summed over 3 (a short window not rescaled), or with clipping,
    rescaled to the mean only after clipping the sum."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for window in windows:
        opt.zero_grad()
        (sum(F.mse_loss(net(x), y) for x, y in window) / (3 if wrong else len(window))).backward()
        if clip is not None:
            clip_grad_norm_(net.parameters(), clip)
            if wrong:
                torch._foreach_mul_([p.grad for p in net.parameters()], 3 / len(window))
        opt.step()
    return net


@pytest.mark.parametrize("scaled", [False, True], ids=["fp32", "gradscaler"])
@pytest.mark.parametrize("clip", [None, 0.05], ids=["noclip", "clip"])
def test_a_short_window_updates_with_the_mean_gradient_of_its_batches(scaled: bool, clip: float | None) -> None:
    # An epoch of 5 batches in windows of 3: batches 1-3, then 4-5 (short, ended by the epoch's last step),
    # then the next epoch's 6-8. Under the GradScaler and with clipping too: clipping must see the mean.
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2)
    windows = [batches(1, 3), batches(2, 2), batches(3, 3)]
    mean = plain_reference(copy.deepcopy(net), windows, clip)
    wrong = plain_reference(copy.deepcopy(net), windows, clip, wrong=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    stepper = Stepper({"main": opt}, {"main": sched}, scaler=torch.amp.GradScaler("cpu") if scaled else None,
                      grad_clip=clip, accumulate=3)
    positions = [[(0, False), (1, False), (2, False)], [(3, False), (4, True)], [(0, False), (1, False), (2, False)]]
    step = 0
    for window, places in zip(windows, positions, strict=True):
        for (x, y), (batch, epoch_end) in zip(window, places, strict=True):
            step += 1
            stepper.begin(step, batch=batch, ends_epoch=epoch_end)
            stepper("main", F.mse_loss(net(x), y))
        assert not stepper.in_window
    assert stepper.updates == {"main": 3} and sched.last_epoch == 3
    for a, b in zip(net.parameters(), mean.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # The comparison can tell the mistakes apart.
    assert max((a - b).abs().max().item() for a, b in zip(mean.parameters(), wrong.parameters(), strict=True)) > 1e-3


def test_windows_stay_aligned_to_the_epoch_after_a_resume_that_changes_accumulate() -> None:
    # Resumed at batch 3 of an epoch of 8 (saved between windows of 3) with accumulate=2: the epoch's windows of
    # 2 are 2-3, 4-5, 6-7, so batch 3 alone ends one (a short window: its own gradient), then 4-5 and 6-7.
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 2)
    data = batches(4, 5)
    ref = plain_reference(copy.deepcopy(net), [data[0:1], data[1:3], data[3:5]], None)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    stepper = Stepper({"main": opt}, {"main": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)}, accumulate=2)
    updates = []
    for batch, (x, y) in zip(range(3, 8), data, strict=True):
        stepper.begin(batch + 1, batch=batch, ends_epoch=batch == 7)
        stepper("main", F.mse_loss(net(x), y))
        updates.append(stepper.updates["main"])
    assert updates == [1, 1, 2, 2, 3] and not stepper.in_window
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_gan_ends_each_optimizers_window_at_the_epochs_last_step(tmp_path: Path) -> None:
    # 8 steps of an epoch, k=2: "disc" makes 16 backward passes (windows of 3: five full, one of 1 pass at the
    # last step), "gen" 8 (3, 3, 2). Each cosine schedule is sized in those updates and ends at the last one.
    r = fit_in_process(build_run(tmp_path / "gan", *GAN, *QUIET, "trainer.accumulate=3", "trainer.max_steps=8",
                                 "scheduler=cosine", "trainer.val_every=8"))
    assert r.stepper.updates == {"gen": 3, "disc": 6} and not r.stepper.in_window
    assert {k: s.last_epoch for k, s in r.schedulers.items()} == {"gen": 3, "disc": 6}
    assert all(opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12) for opt in r.optimizers.values())


def test_the_loop_steps_the_epochs_short_window_like_plain_pytorch(tmp_path: Path) -> None:
    # One epoch of 8 batches in windows of 3: 3, 3 and a short 2. SGD without momentum, no BatchNorm, no dropout.
    r = build_run(tmp_path / "run", *QUIET, "trainer.accumulate=3", "trainer.max_steps=8", "model.batch_norm=false",
                  "optimizer=sgd", "optimizer.momentum=0", "scheduler=none", "trainer.val_every=8",
                  "trainer.deterministic=true")
    net = copy.deepcopy(r.task.model)
    data = list(r.data.batches("train", 0))
    assert len(data) == 8 and r.steps_per_epoch == 8
    opt = torch.optim.SGD(net.parameters(), lr=r.cfg.optimizer.lr)
    for window in (data[0:3], data[3:6], data[6:8]):
        opt.zero_grad()
        (sum(F.cross_entropy(net(x), y) for x, y in window) / len(window)).backward()
        opt.step()
    fit_in_process(r)
    assert r.stepper.updates == {"main": 3}
    for (name, a), b in zip(r.task.model.named_parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


# ---- budgets -------------------------------------------------------------------------------------------------
def test_an_epochs_budget_trains_whatever_the_epochs_size(tmp_path: Path) -> None:
    # 2 epochs of 8 batches in windows of 3 (used to be refused: 16 is not a multiple of 3): 3 updates per epoch.
    r = fit_in_process(build_run(tmp_path / "epochs", *QUIET, "trainer.accumulate=3", "trainer.epochs=2",
                                 "trainer.max_steps=null", "trainer.val_every=100"))
    assert r.state.step == 16 and r.stepper.updates == {"main": 6}
    # trainer.overfit_batches=5 makes an epoch 5 batches: windows of 2, 2 and a short 1 in each.
    r = fit_in_process(build_run(tmp_path / "overfit", *QUIET, "trainer.accumulate=2", "trainer.overfit_batches=5",
                                 "trainer.epochs=2", "trainer.max_steps=null", "trainer.val_every=100"))
    assert (r.steps_per_epoch, r.state.step, r.stepper.updates) == (5, 10, {"main": 6})


def test_a_max_steps_budget_that_ends_inside_a_window_is_refused(workdir: Path) -> None:
    done = run_dlx("train", *QUIET, "trainer.accumulate=2", "trainer.max_steps=5", cwd=workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("dlx: error: trainer.max_steps=5 ") and "trainer.accumulate=2" in line, line
    assert "4 or 6" in line, line
    assert not list(workdir.rglob("metrics.jsonl")), "refused before training"
    # Step 7 of an epoch of 8 in windows of 3: the nearest window ends are 6 steps in and the epoch's end.
    with pytest.raises(ConfigError, match="trainer.max_steps=15 .*use 14 or 16"):
        prepare.check_windows(OmegaConf.create({"trainer": {"accumulate": 3, "max_steps": 15}}), 8, 15)
    for fine in (14, 16, 24):
        prepare.check_windows(OmegaConf.create({"trainer": {"accumulate": 3, "max_steps": fine}}), 8, fine)


# ---- stops and resumes never cut a window --------------------------------------------------------------------
def test_an_early_stop_inside_a_window_waits_for_its_end(workdir: Path) -> None:
    # monitor_mode=max on a falling val/loss: the second validation (step 6) is stale and stops the run,
    # inside the window of steps 5-8 (an epoch of 8 in windows of 4): the run stops at step 8.
    done = run_dlx("train", *QUIET, "trainer.accumulate=4", "trainer.max_steps=40", "trainer.val_every=3",
                   "trainer.early_stop=1", "trainer.monitor=val/loss", "trainer.monitor_mode=max", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir)
    s = summary(run)
    assert (s["status"], s["stop_reason"], s["step"]) == ("completed", "early_stop", 8), s
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["state"]["step"] == 8 and state["stepper"]["updates"] == {"main": 2}


def test_a_killed_run_with_short_windows_resumes_bitwise(tmp_path: Path) -> None:
    # 2 epochs of 8 in windows of 3 (3, 3, 2 each). The checkpoint due at step 10 (inside the window 9-11) is
    # written at 11; killed after step 13, the run resumes from 11 and crosses the short window of steps 15-16.
    common = ["train", *QUIET, "trainer.accumulate=3", "trainer.epochs=2", "trainer.max_steps=null",
              "model.dropout=0.2", "trainer.deterministic=true", "trainer.ckpt_every=5", "trainer.val_every=100",
              "trainer.log_every=2"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = run_dlx(*common, cwd=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run_dlx(*common, cwd=tmp_path / "parts", env={"DLX_FAULT_KILL_AT_STEP": "13"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "parts")
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["state"]["step"] == 11
    resumed = run_dlx("resume", str(run), cwd=tmp_path / "parts")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (reference,) = run_dirs(tmp_path / "whole")
    a = torch.load(reference / "checkpoints/last.pt", weights_only=True)
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert a["state"]["step"] == b["state"]["step"] == 16
    assert a["stepper"] == b["stepper"] and a["stepper"]["updates"] == {"main": 6}
    assert [k for k in a["task"] if not torch.equal(a["task"][k], b["task"][k])] == []


def test_extending_a_finished_accumulating_run_is_bitwise_an_uninterrupted_one(tmp_path: Path) -> None:
    # Windows of 3 in epochs of 8: a first run to step 6, extended to 16 (epoch 2's end, past two short
    # windows, 7-8 and 15-16); 7 would end inside the short window 7-8 and is refused.
    common = ["train", *QUIET, "trainer.accumulate=3", "model.dropout=0.2", "trainer.deterministic=true",
              "trainer.val_every=3", "trainer.log_every=2"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    assert run_dlx(*common, "trainer.max_steps=16", cwd=tmp_path / "whole").returncode == 0
    first = run_dlx(*common, "trainer.max_steps=6", cwd=tmp_path / "parts")
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = run_dirs(tmp_path / "parts")
    odd = run_dlx("resume", str(run), "trainer.max_steps=7", cwd=tmp_path / "parts")
    assert odd.returncode == 2 and "trainer.max_steps=7" in odd.stderr and "6 or 8" in odd.stderr, odd.stderr[-2000:]
    more = run_dlx("resume", str(run), "trainer.max_steps=16", cwd=tmp_path / "parts")
    assert more.returncode == 0, more.stderr[-2000:]
    (reference,) = run_dirs(tmp_path / "whole")
    a = torch.load(reference / "checkpoints/last.pt", weights_only=True)
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert a["stepper"] == b["stepper"] and a["stepper"]["updates"] == {"main": 6}
    assert [k for k in a["task"] if not torch.equal(a["task"][k], b["task"][k])] == []


# ---- data parallelism: the epoch's last batch all-reduces ----------------------------------------------------
def test_two_processes_sync_the_short_window_at_the_epochs_end(tmp_path: Path) -> None:
    # 284 * 0.9 = 256 training images: 4 batches of 64 in one process, or 4 of 32 on each of 2 ranks (the same
    # global batches). Windows of 3: steps 1-3, then 4 alone. DDP skips the all-reduce inside a window (no_sync);
    # the epoch's last step must all-reduce, or rank 0 would step with its own half of the gradient.
    common = ["train", "trainer.progress=false", "trainer.device=cpu", "data.limit=284", "model.batch_norm=false",
              "trainer.accumulate=3", "trainer.epochs=1", "trainer.max_steps=null", "trainer.deterministic=true"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run_dlx(*common, "data.batch_size=64", cwd=tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_dlx(*common, "data.batch_size=32", "trainer.devices=2", cwd=tmp_path / "two", timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    (a,), (b,) = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    assert summary(b)["world_size"] == 2 and summary(a)["step"] == summary(b)["step"] == 4
    wa = torch.load(a / "checkpoints/last.pt", weights_only=True)
    wb = torch.load(b / "checkpoints/last.pt", weights_only=True)
    assert wa["stepper"]["updates"] == wb["stepper"]["updates"] == {"main": 2}
    for k in wa["task"]:
        torch.testing.assert_close(wb["task"][k], wa["task"][k], rtol=0, atol=1e-6, msg=k)
