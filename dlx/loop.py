"""The one training loop: `run()` trains a run folder (fresh or resumed), `fit()` is the loop.

Counted in steps (one step = one training batch); epochs are derived from the data's batches per
epoch. Metrics accumulate on the device (`Meter`) and are read only every `trainer.log_every` steps.
Building a run and resuming it live in dlx.prepare, the agreement between data-parallel processes in
the Run's `processes` (dlx.state, dlx.distributed), the progress bar in dlx.console.

The loop owns train/eval mode: it trains in train mode, and every evaluation (validation, visuals,
histograms, test) runs in eval mode under no_grad, the previous mode restored afterwards.
"""

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dlx import checkpoint, diagnostics, faults, rundir, runtime, topk
from dlx.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, Aborted, ConfigError, DlxError
from dlx.lock import RunLock
from dlx.prepare import best_state, check_resumable, configure_logging, last_state, record_config, setup
from dlx.schedulers import Plateau
from dlx.state import Meter, Run, TrainState  # noqa: F401 - re-exported: dlx.loop.Meter, Run, TrainState
from dlx.stepper import Diverged

log = logging.getLogger("dlx")


# ---- the whole run ----------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: Path, resume: bool = False) -> int:
    """Train one run in `run_dir` in this process (fresh, or resumed from its last.pt); return the exit code."""
    run_dir = Path(run_dir)
    configure_logging(run_dir)
    with RunLock(run_dir):
        for stale in rundir.clean_stale_tmp(run_dir):  # a kill mid-save left it; the file it was for is intact
            log.info("removed %s, left by a process killed while writing it", stale)
        state = checkpoint.load(run_dir / "checkpoints" / "last.pt") if resume else None
        if state is not None:
            check_resumable(state["config"], cfg)
        r = setup(cfg, run_dir, resume_state=state)
        if state is not None:
            record_config(run_dir, cfg)
        return train_and_test(r)


def train_and_test(r: Run) -> int:
    """fit(), then test the best weights, recording the outcome in summary.json whatever happens."""
    from dlx import console

    if r.is_main:
        write_summary(r, "running")
        console.start(r)
    status, code = "failed", 1
    try:
        # trainer.detect_anomaly (trainer=debug): autograd names the forward op behind a NaN/inf gradient.
        with runtime.StopSignal() as stop, torch.autograd.set_detect_anomaly(r.cfg.trainer.detect_anomaly):
            status = fit(r, stop)
        if status == "completed":
            test_best(r)
            code = 0
        else:
            r.stop_reason = "interrupted"
            r.stop_detail = f"by {r.stopped_by} at step {r.state.step}"
            log.info("interrupted by %s at step %d; resume with: dlx resume %s", r.stopped_by, r.state.step,
                     r.run_dir)
            code = EXIT_INTERRUPTED
    except Diverged as e:
        status, code = "diverged", EXIT_DIVERGED
        r.error = str(e)
        r.stop_reason, r.stop_detail = "diverged", str(e).splitlines()[0]
        log.error(str(e))
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a save after the last checkpoint
        status = "aborted"
        r.error = f"aborted at step {r.state.step}; `dlx resume {r.run_dir}` continues from its last checkpoint"
        raise Aborted(r.error) from None
    except (DlxError, Exception) as e:
        status = "failed"  # also in the test phase, after fit() said "completed": the run did not complete
        r.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        r.stop_reason, r.stop_detail = ("interrupted", "KeyboardInterrupt") if isinstance(e, KeyboardInterrupt) \
            else ("failed", r.error)
        raise
    finally:
        if r.is_main:
            try:
                write_summary(r, status, r.error)
            except OSError as e:  # a full disk: the error that caused it is the one to report
                log.error("summary.json not written: %s", e)
            r.tracker.session_end(status)
            r.tracker.close()
            console.finish(r, status)
    return code


# ---- the loop -------------------------------------------------------------------------------------
def fit(r: Run, stop: runtime.StopSignal) -> str:
    """Train until the step budget, early stop or a stop signal; return the run's status."""
    from dlx.console import Progress

    # Plain values: a DictConfig read costs ~10 us and the loop reads six per step (5% of a small MLP's step).
    t = SimpleNamespace(**OmegaConf.to_container(r.cfg.trainer, resolve=True))
    progress = Progress(r) if t.progress and r.is_main else None
    clock = (time.perf_counter(), r.state.step)  # for samples/s of this process
    r.meta["train_start_time"] = time.time()  # start-up latency = this minus the launch time (benchmarks/)
    log.info("training starts at step %d", r.state.step)
    r.task.train()
    status = None if r.state.step < r.total_steps else "completed"  # a resume at its budget only tests
    if status:
        r.stop_reason = "budget"
    try:
        while status is None:  # one pass per epoch; train_batches() resumes inside the epoch
            for batch in train_batches(r):
                train_step(r, t, batch)
                status = after_step(r, t, stop, progress, clock)
                if status:
                    break
    finally:
        if progress:
            progress.close(r)  # shows where and why the run stopped: the bar does not freeze at 25/300
    return status


def train_step(r: Run, t: SimpleNamespace, batch: tuple[Tensor, ...]) -> None:
    """One batch: the task's forward and Stepper updates, EMA, device-side metrics; advance step and epoch."""
    s = r.state
    ends_epoch = s.batch_in_epoch + 1 == r.steps_per_epoch  # it ends every accumulation window (dlx.stepper)
    r.stepper.begin(s.step + 1, capture_layers=t.log_grad_norms and (s.step + 1) % t.log_every == 0,
                    batch=s.batch_in_epoch, ends_epoch=ends_epoch)
    batch = faults.poison(to_memory_format(batch, r.channels_last), s.step + 1)
    updates = sum(r.stepper.updates.values())
    with r.processes.micro_step(r.stepper.completes_window()), runtime.autocast(r.device, r.precision):
        metrics = r.task.training_step(batch, r.stepper)
    if ends_epoch and r.stepper.in_window:  # a task bug: the window would run on into the next epoch
        raise RuntimeError(f"{type(r.task).__name__}.training_step made fewer step() calls than its TaskSpec "
                           f"declares (updates={dict(r.spec.updates)})")
    r.processes.after_step()
    if r.spec.recalibration_batches:
        r.recent.append(batch[0].detach())
    if r.ema is not None and sum(r.stepper.updates.values()) > updates:
        r.ema.update_parameters(r.task)
    r.meter.add(metrics, batch[0].shape[0])
    s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
    faults.after_step(s.step)
    if s.batch_in_epoch == r.steps_per_epoch:
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0


def after_step(
    r: Run, t: SimpleNamespace, stop: runtime.StopSignal, progress: object, clock: tuple[float, int]
) -> str | None:
    """Log, validate, checkpoint on their intervals; return the run's status when it must end, else None.

    Checkpoints never cut an accumulation window (its gradients are in no checkpoint): a periodic save
    inside one waits for the window's end, and so do a stop request and an early stop. Windows are aligned
    to epochs (an epoch's last step ends them, dlx.stepper) and a budget ends at a window's end (an epochs
    budget always does; trainer.max_steps is checked, prepare.check_windows), so every resume, and every
    extension of a finished run, is bitwise.
    """
    s = r.state
    done = s.step >= r.total_steps or grad_norm_stop(r, t) or (r.early_stop_due and not r.stepper.in_window)
    if s.step % t.log_every == 0 or done:
        log_train(r, s.step - clock[1], time.perf_counter() - clock[0])
        if progress:
            progress.update(r)
    if (t.val_every and s.step % t.val_every == 0) or (not t.val_every and s.batch_in_epoch == 0) or done:
        if validate(r) == "early_stop":
            r.early_stop_due = True
            done = done or not r.stepper.in_window
    elif t.ckpt_every and s.step % t.ckpt_every == 0:
        r.save_due = True
    window_open = r.stepper.in_window and not done
    if r.save_due and not window_open:
        save_last(r)
    if r.processes.stop(stop.requested) and not window_open:  # every rank stops at the same step
        r.stopped_by = stop.requested or "a signal to another rank"
        save_last(r)
        return "interrupted"
    if done and r.early_stop_due and r.stop_reason is None:
        r.stop_reason = "early_stop"
        r.stop_detail = (f"{r.monitor} did not improve for {s.stale} validation{'s' * (s.stale != 1)} "
                         f"(best {s.best:.4g} at step {s.best_step}); stopped at step {s.step} of {r.total_steps}")
        log.info("early stop at step %d: %s", s.step, r.stop_detail)
    if done and r.stop_reason is None:
        r.stop_reason, r.stop_detail = "budget", f"step {s.step} of {r.total_steps}"
    return "completed" if done else None


def grad_norm_stop(r: Run, t: SimpleNamespace) -> bool:
    """The optimisation deck's stopping rule (trainer.stop_grad_norm): a (near-)stationary point is reached when the
    global gradient norm (before clipping) of the latest update falls below the threshold; with several optimizers
    (a GAN), every one of them. Read each step, only when the rule is on (one host read beside the finite check)."""
    if t.stop_grad_norm is None or not r.stepper.grad_norms or r.stepper.in_window:
        return False
    norm = float(torch.stack(list(r.stepper.grad_norms.values())).max())
    if norm >= t.stop_grad_norm:
        return False
    r.stop_reason = "grad_norm"
    r.stop_detail = (f"gradient norm {norm:.3g} < trainer.stop_grad_norm={t.stop_grad_norm:g} at step {r.state.step} "
                     f"of {r.total_steps}")
    log.info("stop: %s", r.stop_detail)
    return True


def train_batches(r: Run) -> Iterator[tuple[Tensor, ...]]:
    """This epoch's remaining training batches (the first N batches forever with `overfit_batches`)."""
    s, n = r.state, r.cfg.trainer.overfit_batches
    if n:
        return islice(r.data.batches("train", 0, s.batch_in_epoch), r.steps_per_epoch - s.batch_in_epoch)
    return r.data.batches("train", s.epoch, s.batch_in_epoch)


def to_memory_format(batch: tuple[Tensor, ...], channels_last: bool) -> tuple[Tensor, ...]:
    if not channels_last or batch[0].dim() != 4:
        return batch
    return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])


def log_train(r: Run, steps_done: int, seconds: float) -> None:
    """Read the training meters (the loop's only regular host sync) and write them out."""
    metrics = r.meter.read("train")
    for name, opt in r.optimizers.items():
        metrics["lr" if len(r.optimizers) == 1 else f"lr/{name}"] = opt.param_groups[0]["lr"]
    for name, norm in r.stepper.grad_norms.items():
        metrics["train/grad_norm" if len(r.optimizers) == 1 else f"train/grad_norm_{name}"] = float(norm)
    if r.cfg.trainer.on_nonfinite == "skip":
        metrics["train/skipped"] = r.stepper.skipped  # updates dropped so far for a non-finite loss or gradient
    if seconds > 0:
        metrics["perf/samples_per_sec"] = steps_done * r.data.batch_size * r.world_size / seconds
    layer_grads = r.stepper.take_layer_grads()
    if layer_grads:
        names = list(layer_grads)
        norms = torch.stack([g.float().norm() for g in layer_grads.values()]).tolist()
        metrics.update({f"grad_norm/{n}": v for n, v in zip(names, norms, strict=True)})
        if r.is_main:
            for n, g in layer_grads.items():
                r.tracker.writer.add_histogram(f"grad/{n}", g.float().cpu(), r.state.step)
    r.last_train = metrics
    if r.is_main:
        r.tracker.scalars(r.state.step, metrics, epoch=r.state.step / r.steps_per_epoch)
        log.info("step %d %s", r.state.step, format_metrics(metrics))


def format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.startswith("grad_norm/"))


# ---- evaluation -------------------------------------------------------------------------------------
@contextmanager
def evaluating(task: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and no gradients for a while; the task's previous mode afterwards."""
    was_training = task.training
    task.eval()
    try:
        with torch.no_grad():
            yield task
    finally:
        task.train(was_training)


def recalibrate(r: Run) -> None:
    """BatchNorm statistics of the evaluated weights recomputed on the latest training inputs (TaskSpec), the
    same on every rank (rank 0's); the EMA copy gets its own from the live model's inputs."""
    if r.spec.recalibration_batches and r.recent:
        r.eval_task.recalibrate(list(r.recent))
        r.processes.after_recalibration(r.eval_task)


def evaluate(r: Run, split: str) -> dict[str, float]:
    """Batch-size-weighted means of the task's validation metrics over a whole split, in eval mode."""
    meter = Meter()
    if r.cfg.trainer.overfit_batches and split == "val":
        batches = islice(r.data.batches("train", 0), r.steps_per_epoch)
    else:
        batches = r.data.batches(split)
    with evaluating(r.eval_task) as task:
        for batch in batches:
            with runtime.autocast(r.device, r.precision):
                meter.add(task.validation_step(to_memory_format(batch, r.channels_last)), batch[0].shape[0])
        metrics = meter.read(split)
        extra = task.on_validation_end(r.data)
    if not set(extra) <= set(r.spec.end_metrics):  # a task bug: trainer.monitor was checked against the declaration
        raise RuntimeError(f"{type(r.task).__name__}.on_validation_end returned {sorted(extra)}; its TaskSpec "
                           f"declares end_metrics={r.spec.end_metrics}")
    metrics.update({f"{split}/{k}": float(v) for k, v in extra.items()})
    return metrics


def validate(r: Run) -> str | None:
    """Evaluate on val, keep best.pt and last.pt, log; return "early_stop" when patience ran out.

    Run-wide decisions (best, early stop, plateau schedules) are taken from rank 0's numbers on every rank.
    """
    s, t = r.state, r.cfg.trainer
    recalibrate(r)
    writer = r.tracker.writer if r.is_main and t.activation_histograms else None
    with diagnostics.activation_histograms(r.eval_task.model, writer, s.step):
        metrics = r.processes.from_main(faults.skew_validation(evaluate(r, "val"), r.rank))
    r.last_val = metrics
    if r.monitor not in metrics:
        raise ConfigError("trainer.monitor", r.monitor, f"is not a validation metric; the task logs {sorted(metrics)}")
    value = metrics[r.monitor]
    for sched in r.schedulers.values():
        if isinstance(sched, Plateau):
            sched.on_validation(metrics.get("val/loss", value))
    improved = math.isfinite(value) and (s.best is None or (value > s.best if r.mode == "max" else value < s.best))
    s.best, s.best_step, s.stale = (value, s.step, 0) if improved else (s.best, s.best_step, s.stale + 1)
    if r.is_main:
        r.tracker.scalars(s.step, metrics, epoch=s.step / r.steps_per_epoch)
        log.info("step %d %s%s", s.step, format_metrics(metrics), " (best)" if improved else "")
        with evaluating(r.eval_task) as task:
            visuals = task.visuals(next(iter(r.data.batches("val"))))
        if visuals:
            r.tracker.images(s.step, visuals)
        if t.histograms:
            r.tracker.histograms(s.step, r.eval_task.model)
        if improved:
            checkpoint.save(r.run_dir / "checkpoints" / "best.pt", best_state(r, metrics))
        if t.save_top_k:
            topk.keep(r.run_dir / "checkpoints", t.save_top_k, s.step, value, r.mode, r.monitor,
                      lambda: best_state(r, metrics))
        write_summary(r, "running")
    r.save_due = True  # last.pt, at the end of the accumulation window when inside one
    return "early_stop" if t.early_stop and s.stale >= t.early_stop else None


def test_best(r: Run) -> None:
    """Evaluate the best weights (by the monitor) on the test split; the final ones when validation ran on the
    test split (data.val_fraction=0): weights picked on the test set would report an optimistic test number."""
    faults.in_test()
    best = r.run_dir / "checkpoints" / "best.pt"
    use_best = not r.data.val_is_test
    if r.is_main and use_best and best.exists():
        r.eval_task.load_state_dict(checkpoint.load(best, map_location=r.device)["task"])
    r.test = evaluate(r, "test")
    if r.is_main:
        r.tracker.scalars(r.state.step, r.test)
        which = f"best weights, step {r.state.best_step}" if use_best else f"final weights, step {r.state.step}"
        log.info("test (%s) %s", which, format_metrics(r.test))
        test_figures(r, which)


def test_figures(r: Run, which: str) -> None:
    """The task's figures of the whole test split with the tested weights (classification: the confusion matrix
    and the most confidently wrong images): PNGs in the run folder and TensorBoard images at the last step."""
    where = f"test, {which}"
    with evaluating(r.eval_task) as task:
        images, numbers = task.figures(r.data, "test", where)
    for name, img in images.items():
        img.save(r.run_dir / f"{name}.png")
        r.tracker.image(r.state.step, name, img)
    if numbers:
        rundir.write_json(r.run_dir / "figures.json", numbers)


# ---- records ----------------------------------------------------------------------------------------
def save_last(r: Run) -> None:
    """Write last.pt (rank 0). Every rank calls it at the same step, since it gathers their RNG states."""
    rng_ranks = r.processes.gather(checkpoint.rng_state())
    if r.is_main:
        checkpoint.save(r.run_dir / "checkpoints" / "last.pt", last_state(r, rng_ranks))
        r.tracker.checkpointed(r.state.step)
    r.save_due = False


def write_summary(r: Run, status: str, error: str | None = None) -> None:
    """summary.json: status, final and best metrics, size, timing, device, versions, command."""
    s = r.state
    summary = {
        **r.meta,
        "status": status,
        "name": r.cfg.name,
        "run_dir": str(r.run_dir),
        "metrics": {
            "final": {**r.last_train, **r.last_val, **r.test},
            "best": {"step": s.best_step, r.monitor: s.best},
        },
        "monitor": {"metric": r.monitor, "mode": r.mode},
        "step": s.step,
        "epoch": round(s.step / r.steps_per_epoch, 3),
        "total_steps": r.total_steps,
        "steps_per_epoch": r.steps_per_epoch,
        "duration_s": round(s.elapsed + time.perf_counter() - r.t0, 3),
        "device": str(r.device),
        "precision": r.precision,
        "ended": datetime.now().isoformat(timespec="seconds") if status != "running" else None,
        "stop_reason": r.stop_reason if status != "running" else None,
        "stop_detail": r.stop_detail if status != "running" else "",
        "tags": [str(t) for t in r.cfg.get("tags") or []],
    }
    if error:
        summary["error"] = error
    rundir.write_summary(r.run_dir, summary)
