"""The one training loop: `run()` sets a run up (fresh or resumed), `fit()` trains it.

Counted in steps (one step = one training batch); epochs are derived from the data's batches per
epoch. Metrics accumulate on the device (`Meter`) and are read only every `trainer.log_every` steps.
Everything a resume needs (weights, optimizers, schedulers, scaler, EMA, RNG states, step, epoch,
position inside the epoch, best metric, partial metric sums) is in `last.pt`; the epoch's shuffle
order is a pure function of (seed, epoch), so it is recomputed rather than stored.
"""

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dlx import build, checkpoint, diagnostics, faults, rundir, runtime
from dlx.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, ConfigError, DlxError
from dlx.lock import RunLock
from dlx.stepper import Diverged, Stepper
from dlx.tracking import Tracker, flat_hparams, run_metadata

log = logging.getLogger("dlx")


@dataclass
class TrainState:
    """Where the run is. Plain values only, so it goes into checkpoints as is."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    best_step: int | None = None
    stale: int = 0  # validations since `best` last improved (early stopping)
    elapsed: float = 0.0  # training seconds before this process (resume)


class Meter:
    """Sums of batch-mean metrics weighted by batch size, kept on the device until `read()`."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, metrics: dict[str, Tensor], n: int) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            if k in self.sums:
                self.sums[k].add_(v, alpha=n)  # in place: one small kernel per metric and step
            else:
                self.sums[k] = v * n
        self.count += n

    def read(self, prefix: str) -> dict[str, float]:
        """Means so far (one host sync for all of them), then reset."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / max(self.count, 1)).tolist()
        self.sums, self.count = {}, 0
        return {f"{prefix}/{k}": v for k, v in zip(keys, values, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sums"]), state["count"]


@dataclass
class Run:
    """Everything built for one run; `fit()` and the helpers below read it."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    precision: str
    data: Any
    task: torch.nn.Module
    optimizers: dict
    schedulers: dict
    scaler: Any
    stepper: Stepper
    tracker: Tracker
    steps_per_epoch: int
    total_steps: int
    monitor: str
    mode: str
    ema: Any = None
    channels_last: bool = False
    state: TrainState = field(default_factory=TrainState)
    meter: Meter = field(default_factory=Meter)
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    t0: float = field(default_factory=time.perf_counter)
    rank: int = 0
    world_size: int = 1
    sync_stop: Any = None  # data-parallel (dlx.distributed): stop -> bool agreed by every rank, once per step
    gather: Any = None  # data-parallel: obj -> [obj of rank 0, rank 1, ...], called by every rank alike

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def eval_task(self) -> torch.nn.Module:
        """The weights that are evaluated: the EMA copy when `trainer.ema` is set."""
        return self.ema.module if self.ema is not None else self.task


# ---- the loop -------------------------------------------------------------------------------------
def fit(r: Run, stop: runtime.StopSignal) -> str:
    """Train until the step budget, early stop or a stop signal; return the run's status."""
    # Plain values: a DictConfig read costs ~10 us and the loop reads six per step (5% of a small MLP's step).
    t = SimpleNamespace(**OmegaConf.to_container(r.cfg.trainer, resolve=True))
    progress = Progress(r) if t.progress and r.is_main else None
    clock = (time.perf_counter(), r.state.step)  # for samples/s of this process
    r.meta["train_start_time"] = time.time()  # start-up latency = this minus the launch time (benchmarks/)
    log.info("training starts at step %d", r.state.step)
    r.task.train()
    status = None
    try:
        while status is None:  # one pass per epoch; train_batches() resumes inside the epoch
            for batch in train_batches(r):
                train_step(r, t, batch)
                status = after_step(r, t, stop, progress, clock)
                if status:
                    break
    finally:
        if progress:
            progress.close()
    return status


def train_step(r: Run, t: SimpleNamespace, batch: tuple[Tensor, ...]) -> None:
    """One batch: the task's forward and Stepper updates, EMA, device-side metrics; advance step and epoch."""
    s = r.state
    r.stepper.step_count = s.step + 1
    r.stepper.capture_layers = t.log_grad_norms and (s.step + 1) % t.log_every == 0
    updates = sum(r.stepper.updates.values())
    with runtime.autocast(r.device, r.precision):
        metrics = r.task.training_step(to_memory_format(batch, r.channels_last), r.stepper)
    if r.ema is not None and sum(r.stepper.updates.values()) > updates:
        r.ema.update_parameters(r.task)
    r.meter.add(metrics, batch[0].shape[0])
    s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
    faults.after_step(s.step)
    if s.batch_in_epoch == r.steps_per_epoch:
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0


def after_step(
    r: Run, t: SimpleNamespace, stop: runtime.StopSignal, progress: "Progress | None", clock: tuple[float, int]
) -> str | None:
    """Log, validate, checkpoint on their intervals; return the run's status when it must end, else None."""
    s = r.state
    done = s.step >= r.total_steps
    epoch_end = s.batch_in_epoch == 0
    if s.step % t.log_every == 0 or done:
        log_train(r, s.step - clock[1], time.perf_counter() - clock[0])
        if progress:
            progress.update(r)
    if (t.val_every and s.step % t.val_every == 0) or (not t.val_every and epoch_end) or done:
        if validate(r) == "early_stop":
            log.info("early stop at step %d: %s did not improve for %d validations", s.step, r.monitor, s.stale)
            done = True
    elif t.ckpt_every and s.step % t.ckpt_every == 0:
        save_last(r)
    if stop.requested if r.sync_stop is None else r.sync_stop(stop):  # every rank stops at the same step
        save_last(r)
        return "interrupted"
    return "completed" if done else None


def train_batches(r: Run):  # noqa: ANN201 - iterator of batches
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
    if seconds > 0:
        metrics["perf/samples_per_sec"] = steps_done * r.data.batch_size * r.world_size / seconds
    if r.stepper.layer_grads:
        names = list(r.stepper.layer_grads)
        norms = torch.stack([g.float().norm() for g in r.stepper.layer_grads.values()]).tolist()
        metrics.update({f"grad_norm/{n}": v for n, v in zip(names, norms, strict=True)})
        if r.is_main:
            for n, g in r.stepper.layer_grads.items():
                r.tracker.writer.add_histogram(f"grad/{n}", g.float().cpu(), r.state.step)
        r.stepper.layer_grads = {}
    r.last_train = metrics
    if r.is_main:
        r.tracker.scalars(r.state.step, metrics, epoch=r.state.step / r.steps_per_epoch)
        log.info("step %d %s", r.state.step, format_metrics(metrics))


def format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.startswith("grad_norm/"))


@torch.no_grad()
def evaluate(r: Run, split: str) -> dict[str, float]:
    """Batch-size-weighted means of the task's validation metrics over a whole split."""
    task, meter = r.eval_task, Meter()
    was_training = task.training
    if r.ema is not None:
        recalibrate_ema(r)
    task.eval()
    if r.cfg.trainer.overfit_batches and split == "val":
        batches = islice(r.data.batches("train", 0), r.steps_per_epoch)
    else:
        batches = r.data.batches(split)
    for batch in batches:
        with runtime.autocast(r.device, r.precision):
            meter.add(task.validation_step(to_memory_format(batch, r.channels_last)), batch[0].shape[0])
    metrics = meter.read(split)
    extra = task.on_validation_end(r.data)
    metrics.update({f"{split}/{k}": float(v) for k, v in extra.items()})
    task.train(was_training)
    return metrics


def recalibrate_ema(r: Run) -> None:
    """Models that recompute their BatchNorm statistics when leaving training (FractalNet under drop-path) do it
    for the EMA weights too, on the live model's latest training batches: the EMA copy never trains itself."""
    lives, emas = ([m for m in task.modules() if hasattr(m, "recalibrate")] for task in (r.task, r.ema.module))
    for live, ema in zip(lives, emas, strict=True):  # in the same order (a DDP wrapper around the live one aside)
        if live.recent:
            ema.recalibrate(live.recent)


def validate(r: Run) -> str | None:
    """Evaluate on val, keep best.pt and last.pt, log; return "early_stop" when patience ran out."""
    s, t = r.state, r.cfg.trainer
    writer = r.tracker.writer if r.is_main and t.activation_histograms else None
    with diagnostics.activation_histograms(r.eval_task.model, writer, s.step):
        metrics = evaluate(r, "val")
    r.last_val = metrics
    if r.monitor not in metrics:
        raise ConfigError("trainer.monitor", r.monitor, f"is not a validation metric; the task logs {sorted(metrics)}")
    value = metrics[r.monitor]
    for sched in r.schedulers.values():
        if hasattr(sched, "on_validation"):
            sched.on_validation(metrics.get("val/loss", value))
    improved = math.isfinite(value) and (
        s.best is None or (value > s.best if r.mode == "max" else value < s.best)
    )
    if improved:
        s.best, s.best_step, s.stale = value, s.step, 0
    else:
        s.stale += 1
    if r.is_main:
        r.tracker.scalars(s.step, metrics, epoch=s.step / r.steps_per_epoch)
        log.info("step %d %s%s", s.step, format_metrics(metrics), " (best)" if improved else "")
        visuals = r.eval_task.visuals(next(iter(r.data.batches("val"))))
        if visuals:
            r.tracker.images(s.step, visuals)
        if t.histograms:
            r.tracker.histograms(s.step, r.eval_task.model)
        if improved:
            checkpoint.save(r.run_dir / "checkpoints" / "best.pt", best_state(r, metrics))
    save_last(r)  # on every rank: it gathers each rank's RNG state
    if r.is_main:
        write_summary(r, "running")
    return "early_stop" if t.early_stop and s.stale >= t.early_stop else None


# ---- checkpoints ----------------------------------------------------------------------------------
def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def last_state(r: Run, rng_ranks: list[dict] | None = None) -> dict[str, Any]:
    """Everything needed to continue exactly where the run is now (tensors and plain values only).

    Under data-parallel training each rank draws from its own seed (seed + rank: its own dropout masks
    and augmentations), so `rng_ranks` keeps every rank's RNG state and each rank resumes with its own.
    """
    return {
        "task": r.task.state_dict(),
        "optimizers": {k: v.state_dict() for k, v in r.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in r.schedulers.items()},
        "scaler": r.scaler.state_dict() if r.scaler else None,
        "ema": r.ema.state_dict() if r.ema is not None else None,
        "stepper": r.stepper.state_dict(),
        "meter": r.meter.state_dict(),
        "rng": checkpoint.rng_state(),
        "rng_ranks": rng_ranks,
        "state": asdict(r.state) | {"elapsed": r.state.elapsed + time.perf_counter() - r.t0},
        "config": plain_config(r.cfg),
    }


def best_state(r: Run, metrics: dict[str, float]) -> dict[str, Any]:
    """The evaluated weights (EMA ones when on) with the metrics that made them best."""
    return {"task": r.eval_task.state_dict(), "state": asdict(r.state), "metrics": metrics,
            "config": plain_config(r.cfg)}


def save_last(r: Run) -> None:
    """Write last.pt (rank 0). Every rank calls it at the same step, since it gathers their RNG states."""
    rng_ranks = r.gather(checkpoint.rng_state()) if r.gather is not None else None
    if r.is_main:
        checkpoint.save(r.run_dir / "checkpoints" / "last.pt", last_state(r, rng_ranks))


def restore(r: Run, state: dict[str, Any]) -> None:
    """Load a last.pt into a freshly built run (same config), so training continues bit for bit."""
    r.task.load_state_dict(state["task"])
    for k, opt in r.optimizers.items():
        opt.load_state_dict(state["optimizers"][k])
    for k, sched in r.schedulers.items():
        sched.load_state_dict(state["schedulers"][k])
    if r.scaler and state["scaler"]:
        r.scaler.load_state_dict(state["scaler"])
    if r.ema is not None and state["ema"] is not None:
        r.ema.load_state_dict(state["ema"])
    r.stepper.load_state_dict(state["stepper"])
    r.meter.load_state_dict({"sums": {k: v.to(r.device) for k, v in state["meter"]["sums"].items()},
                             "count": state["meter"]["count"]})
    r.state = TrainState(**state["state"])
    ranks = state.get("rng_ranks")  # absent in checkpoints of one process
    checkpoint.set_rng_state(ranks[r.rank] if ranks and len(ranks) == r.world_size else state["rng"])


# ---- summary ----------------------------------------------------------------------------------------
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
        "duration_s": round(s.elapsed + time.perf_counter() - r.t0, 3),
        "device": str(r.device),
        "precision": r.precision,
        "ended": datetime.now().isoformat(timespec="seconds") if status != "running" else None,
    }
    if error:
        summary["error"] = error
    rundir.write_summary(r.run_dir, summary)


# ---- set-up -----------------------------------------------------------------------------------------
def setup(cfg: DictConfig, run_dir: Path, resume_state: dict | None = None, rank: int = 0, world_size: int = 1,
          data: Any = None) -> Run:
    """Build everything for a run on the configured device; restore `resume_state` when given.

    `data`: a data module already set up on that device (dlx active's labelled subsets), instead of building one.
    """
    t = cfg.trainer
    runtime.seed_everything(cfg.seed + rank, t.deterministic)
    device = runtime.pick_device(t.device)
    precision = runtime.pick_precision(t.precision, device)
    if precision == "16" and device.type != "cuda":
        raise ConfigError("trainer.precision", "16", "fp16 needs a CUDA device; use bf16 on this device")
    data = data if data is not None else build.build_data(cfg, device)
    if world_size > 1:
        data.shard(rank, world_size)
    task = build.build_task(cfg)
    if cfg.init_from:
        load_pretrained(task, Path(cfg.init_from))
    if cfg.freeze:
        build.freeze(task, list(cfg.freeze))
    task.to(device)
    task.on_fit_start(data)
    channels_last = runtime.use_channels_last(t.channels_last, device, task)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    if t.compile:
        task.model.compile()
    steps_per_epoch = data.num_batches("train")
    if t.overfit_batches:
        steps_per_epoch = min(steps_per_epoch, t.overfit_batches)
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    optimizers = build.build_optimizers(cfg, task, device)
    schedulers = build.build_schedulers(cfg, optimizers, max(1, total_steps // t.accumulate))
    scaler = runtime.grad_scaler(device, precision)
    stepper = Stepper(optimizers, schedulers, scaler, t.grad_clip, t.accumulate, t.on_nonfinite, device.type)
    stepper.param_names = {id(p): n.rsplit(".", 1)[0] for n, p in task.model.named_parameters()}
    ema = None
    if t.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(task, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
    monitor = t.monitor or task.monitor
    mode = t.monitor_mode or (task.monitor_mode if monitor == task.monitor else "min")
    hparams = flat_hparams(plain_config(cfg))
    tracker = Tracker(run_dir, hparams, resume_step=resume_state["state"]["step"] if resume_state else None) \
        if rank == 0 else None
    r = Run(cfg=cfg, run_dir=run_dir, device=device, precision=precision, data=data, task=task,
            optimizers=optimizers, schedulers=schedulers, scaler=scaler, stepper=stepper, tracker=tracker,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, monitor=monitor, mode=mode, ema=ema,
            channels_last=channels_last, rank=rank, world_size=world_size)
    r.meta = {**run_metadata(), **model_size(task, data, device)}
    if resume_state:
        try:
            restore(r, resume_state)
        except (RuntimeError, KeyError, ValueError) as e:  # e.g. a state dict of another model
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            path = run_dir / "checkpoints" / "last.pt"
            raise DlxError(f"checkpoint {path} does not fit this run: {reason}") from None
    return r


def model_size(task: torch.nn.Module, data: Any, device: torch.device) -> dict[str, Any]:
    """Parameter counts and forward FLOPs per sample (torch.utils.flop_counter), for summary.json."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in task.parameters())
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    flops = None
    try:
        x = next(iter(data.batches("val")))[0][:1]
        was_training = task.training
        task.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            task.model(x)
        task.train(was_training)
        flops = counter.get_total_flops()
    except Exception as e:  # noqa: BLE001 - FLOPs are informative only; never fail a run for them
        log.info("FLOPs not counted: %s", e)
    return {"params": params, "trainable_params": trainable, "flops": flops}


def load_pretrained(task: torch.nn.Module, run_dir: Path) -> None:
    """Fine-tuning: copy every weight whose name and shape match from another run's best (or last) weights."""
    path = run_dir / "checkpoints" / "best.pt"
    if not path.exists():
        path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        raise ConfigError("init_from", str(run_dir), "holds no checkpoints/best.pt or last.pt")
    source = checkpoint.load(path)["task"]
    own = task.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError("init_from", str(run_dir), "shares no weights (same name and shape) with this model")
    task.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("init_from %s: loaded %d tensors, kept %d fresh: %s", path, len(matched), len(skipped), skipped[:10])


# ---- the whole run ----------------------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: Path, resume: bool = False) -> int:
    """Train one run in `run_dir` (fresh, or resumed from its last.pt); return the process exit code."""
    run_dir = Path(run_dir)
    configure_logging(run_dir)
    with RunLock(run_dir):
        state = checkpoint.load(run_dir / "checkpoints" / "last.pt") if resume else None
        if state is not None:
            check_resumable(state["config"], cfg)
            record_config(run_dir, cfg)
        r = setup(cfg, run_dir, resume_state=state)
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
            log.info("interrupted by %s at step %d; resume with: dlx resume %s", stop.requested, r.state.step,
                     r.run_dir)
            code = EXIT_INTERRUPTED
    except Diverged as e:
        status, code = "diverged", EXIT_DIVERGED
        r.error = str(e)
        log.error(str(e))
    except (DlxError, KeyboardInterrupt, Exception) as e:
        r.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise
    finally:
        if r.is_main:
            write_summary(r, status, r.error)
            r.tracker.session_end(status)
            r.tracker.close()
            console.finish(r, status)
    return code


def test_best(r: Run) -> None:
    """Evaluate the best weights (by the monitor) on the test split; the final ones when validation ran on the
    test split (data.val_fraction=0): weights picked on the test set would report an optimistic test number."""
    best = r.run_dir / "checkpoints" / "best.pt"
    use_best = not r.data.val_is_test
    if r.is_main and use_best and best.exists():
        r.eval_task.load_state_dict(checkpoint.load(best, map_location=r.device)["task"])
    r.test = evaluate(r, "test")
    if r.is_main:
        r.tracker.scalars(r.state.step, r.test)
        which = f"best weights, step {r.state.best_step}" if use_best else f"final weights, step {r.state.step}"
        log.info("test (%s) %s", which, format_metrics(r.test))


RESUME_FIXED = ("seed", "model", "data", "task", "loss", "init")


def first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first leaf (dotted key) where two plain configs differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if found:
                return found
        return None
    return None if a == b else (path, a, b)


def check_resumable(saved: dict, cfg: DictConfig) -> None:
    """Refuse a resume whose overrides change what was trained; more steps or epochs are fine."""
    now = plain_config(cfg)
    for key in RESUME_FIXED:
        found = first_difference(saved.get(key), now.get(key), key)
        if found:
            path, was, new = found
            raise ConfigError(path, new, f"the checkpoint was trained with {was!r}; a resume may change trainer "
                              "settings only (start a new run, or use init_from= to fine-tune from this one)")
    if saved["optimizer"]["_target_"] != now["optimizer"]["_target_"]:
        raise ConfigError("optimizer", now["optimizer"]["_target_"], "differs from the checkpoint's optimizer")


def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """A resume with overrides (trainer.max_steps=...) makes them the run's config in .hydra/config.yaml, so
    that the next `dlx resume` without them, `dlx runs` and `dlx compare` see what the run now trains with.
    config.sha keeps the hash the run was started with: a rerun sweep still knows the job as its own."""
    path = run_dir / ".hydra" / "config.yaml"
    saved = OmegaConf.load(path)
    if plain_config(saved) == plain_config(cfg):
        return
    rundir.write_config(run_dir, cfg)  # atomic: a kill here leaves the old config or the new one, never half of one
    log.info("resumed with changed settings: %s updated", path)


def configure_logging(run_dir: Path) -> None:
    """train.log in the run folder (appended on resume); one handler per run, replaced for the next job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class Progress:
    """A rich progress bar (step, epoch, loss, it/s, ETA) updated only at log steps."""

    def __init__(self, r: Run):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self.bar.start()
        self.id = self.bar.add_task("train", total=r.total_steps, completed=r.state.step, info="")

    def update(self, r: Run) -> None:
        info = f"epoch {r.state.step / r.steps_per_epoch:.2f}"
        loss = r.last_train.get("train/loss")
        if loss is not None:
            info += f"  loss {loss:.4f}"
        sps = r.last_train.get("perf/samples_per_sec")
        if sps:
            info += f"  {sps / r.data.batch_size:.1f} it/s"
        self.bar.update(self.id, completed=r.state.step, info=info)

    def close(self) -> None:
        self.bar.stop()
