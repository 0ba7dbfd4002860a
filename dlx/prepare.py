"""Setting a run up: build everything from the config (`setup`), or continue from last.pt (`restore`).

`dlx.loop` reads the Run this builds and never builds anything itself. Everything a resume needs
(weights, optimizers, scheduler positions, scaler, EMA, RNG states, step, epoch, position inside the
epoch, best metric, partial metric sums, the latest inputs for BatchNorm recalibration) is in last.pt;
the epoch's shuffle order is a pure function of (seed, epoch), so it is recomputed rather than stored.

A resume builds the run from its config *with the accepted overrides*, then loads the state into it:
weights and optimizer moments come from the checkpoint, settings from the config, so an override
(`optimizer.lr=0.01`, `trainer.max_steps=...`, `scheduler.warmup_steps=...`) takes effect from the
next step, and each schedule continues at its saved position under the new settings.
"""

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dlx import build, checkpoint, faults, rundir, runtime, schedulers
from dlx.errors import ConfigError, DlxError
from dlx.resume import check_resumable, differences  # noqa: F401 - dlx.prepare.check_resumable
from dlx.state import Processes, Run, TrainState
from dlx.stepper import Stepper
from dlx.tasks.base import TaskSpec
from dlx.tracking import Tracker, flat_hparams, remote_logger, run_metadata

log = logging.getLogger("dlx")
LOG_FORMAT = "[%(asctime)s] %(levelname)s %(message)s"  # train.log's lines


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


# ---- set-up -----------------------------------------------------------------------------------------
def check_batches(cfg: DictConfig, data: Any, task: torch.nn.Module) -> None:
    """BatchNorm cannot train on batches of one sample (data.limit=1): refuse before training, naming the key."""
    from torch.nn.modules.batchnorm import _BatchNorm

    size = min(data.batch_size, len(data))
    if size < 2 and any(isinstance(m, _BatchNorm) for m in task.modules()):
        key = "limit" if cfg.data.get("limit") is not None and cfg.data.limit < data.batch_size else "batch_size"
        raise ConfigError(f"data.{key}", cfg.data[key], f"leaves training batches of {size} sample; BatchNorm "
                          "needs at least 2 (raise it, or choose a model without BatchNorm)")


@contextmanager
def probing(task: torch.nn.Module, device: torch.device, precision: str) -> Iterator[torch.nn.Module]:
    """A look at the task before training: eval mode (no BatchNorm statistics update), no gradients, autocast,
    the RNG state kept (the run draws as seeded); the task's mode restored afterwards."""
    was_training = task.training
    task.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                runtime.autocast(device, precision):
            yield task
    finally:
        task.train(was_training)


def check_task(task: torch.nn.Module, data: Any, device: torch.device, precision: str) -> None:
    """The task's own check of one validation batch before training (`Task.check_batch`: regress refuses a model
    whose outputs do not fit its loss), under `probing`: the loop switches modes, tasks never do."""
    with probing(task, device, precision):
        task.check_batch(next(iter(data.batches("val"))))


def check_monitor(monitor: str, task: torch.nn.Module, spec: TaskSpec, data: Any, device: torch.device,
                  precision: str) -> None:
    """A `trainer.monitor` the task does not log fails before training, not at the first validation.

    The task logs what its spec declares `on_validation_end` returns (val/ppl, val/fid, ...) and its
    `validation_step` metrics, read from an evaluation of one validation batch (`probing`), which
    `on_validation_end` closes so that sums over a split (lm's NLL) start afresh for the first real validation.
    """
    end = [f"val/{k}" for k in spec.end_metrics]
    if monitor in end:
        return
    batch = next(iter(data.batches("val")))
    with probing(task, device, precision):
        logged = sorted(f"val/{k}" for k in task.validation_step(batch))
        task.on_validation_end(data)
    logged += end
    if monitor not in logged:
        logged = logged if task.monitor in logged else [*logged, task.monitor]
        raise ConfigError("trainer.monitor", monitor, f"is not a validation metric; the task logs {logged}")


def budget(trainer: Any, steps_per_epoch: int) -> int:
    """The run's length in training steps: trainer.max_steps, else trainer.epochs epochs."""
    return trainer.max_steps or trainer.epochs * steps_per_epoch


def setup(cfg: DictConfig, run_dir: Path, resume_state: dict | None = None,
          processes: Processes | None = None, data: Any = None) -> Run:
    """Build everything for a run on the configured device; restore `resume_state` when given.

    `processes` is how the run's processes agree (dlx.distributed.Ranks under data parallelism); it
    wraps the model in DDP here, once, or hands the Stepper its gradient averaging. `data`: a data module
    already set up on that device (dlx active's labelled subsets), instead of building one.
    """
    processes = processes or Processes()
    t = cfg.trainer
    threads = runtime.set_threads(t.threads)  # before anything is built or decoded
    runtime.seed_everything(cfg.seed + processes.rank, t.deterministic)
    device = runtime.pick_device(t.device)
    precision = runtime.pick_precision(t.precision, device)
    if precision == "16" and device.type != "cuda":
        raise ConfigError("trainer.precision", "16", "fp16 needs a CUDA device; use bf16 on this device")
    data = data if data is not None else build.build_data(cfg, device)
    faults.in_setup()
    if processes.world_size > 1:
        data.shard(processes.rank, processes.world_size)
    steps_per_epoch = data.num_batches("train")
    if t.overfit_batches:
        steps_per_epoch = min(steps_per_epoch, t.overfit_batches)
    total_steps = budget(t, steps_per_epoch)
    start = resume_state["state"]["step"] if resume_state is not None else 0
    if resume_state is not None:
        check_budget(cfg, start, total_steps)  # before anything is written
    if total_steps > start:  # a run at its budget only tests
        check_windows(cfg, steps_per_epoch, total_steps)
    task = build.build_task(cfg)
    if cfg.init_from and resume_state is None:  # a resume restores its own weights
        report = load_pretrained(task, Path(cfg.init_from))
        if processes.is_main:
            from dlx import console

            console.pretrained(report)
    if cfg.freeze:
        build.freeze(task, list(cfg.freeze))
    task.to(device)
    task.on_fit_start(data)
    check_task(task, data, device, precision)
    spec = task.spec()
    check_batches(cfg, data, task)
    if t.monitor and t.monitor != task.monitor:
        check_monitor(t.monitor, task, spec, data, device, precision)
    channels_last = runtime.use_channels_last(t.channels_last, device, task)
    if channels_last:
        task.to(memory_format=torch.channels_last)
    if t.compile:
        task.model.compile()
    optimizers = build.build_optimizers(cfg, task, device)
    # Each schedule is as long as its own optimizer's updates: a GAN's k discriminator updates per step.
    updates = {name: max(1, window_updates(total_steps, steps_per_epoch, spec.updates[name], t.accumulate))
               for name in optimizers}
    scheds = build.build_schedulers(cfg, optimizers, updates)
    ema = None
    if t.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(task, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
    grad_sync = processes.prepare(task, spec, device)  # after the EMA copy: it never sees a DDP wrapper
    scaler = runtime.grad_scaler(device, precision)
    stepper = Stepper(optimizers, scheds, scaler=scaler, grad_clip=t.grad_clip, accumulate=t.accumulate,
                      on_nonfinite=t.on_nonfinite, device_type=device.type, grad_sync=grad_sync,
                      param_names={id(p): n.rsplit(".", 1)[0] for n, p in task.model.named_parameters()},
                      per_step=spec.updates)
    monitor = t.monitor or task.monitor
    mode = t.monitor_mode or (task.monitor_mode if monitor == task.monitor else "min")
    tracker = None
    if processes.is_main:
        resume_step = resume_state["state"]["step"] if resume_state else None
        hparams = flat_hparams(plain_config(cfg))
        tracker = Tracker(run_dir, hparams, resume_step=resume_step, remote=remote_logger(cfg, run_dir, hparams))
    r = Run(cfg=cfg, run_dir=run_dir, device=device, precision=precision, data=data, task=task, spec=spec,
            optimizers=optimizers, schedulers=scheds, scaler=scaler, stepper=stepper, tracker=tracker,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, monitor=monitor, mode=mode, ema=ema,
            channels_last=channels_last, processes=processes, meter=processes.meter(),
            recent=deque(maxlen=spec.recalibration_batches))
    r.meta = {**run_metadata(), **model_size(task, data, device), "threads": threads}
    log.info("torch threads %d (trainer.threads=%s)", threads, t.threads)
    log.debug("device %s, precision %s, channels_last %s, compile %s", device, precision, channels_last, t.compile)
    log.debug("data %s: %d training batches of %d per epoch; %d steps", type(data).__name__, steps_per_epoch,
              data.batch_size, total_steps)
    log.debug("task %s, model %s: %s parameters; spec %s", type(task).__name__, type(task.model).__name__,
              r.meta.get("params"), spec)
    log.debug("optimizers %s; schedulers %s", {k: type(v).__name__ for k, v in optimizers.items()},
              {k: type(v).__name__ for k, v in scheds.items()})
    if processes.world_size > 1:
        r.meta["world_size"] = processes.world_size
    if resume_state:
        try:
            restore(r, resume_state)
        except (RuntimeError, KeyError, ValueError) as e:  # e.g. a state dict of another model
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            path = run_dir / "checkpoints" / "last.pt"
            raise DlxError(f"checkpoint {path} does not fit this run: {reason}") from None
    return r


def check_budget(cfg: DictConfig, step: int, total_steps: int) -> None:
    """A resume may lengthen a run or keep its length; a budget below the step it is at is refused."""
    if total_steps >= step:
        return
    key = "trainer.max_steps" if cfg.trainer.max_steps else "trainer.epochs"
    raise ConfigError(key, OmegaConf.select(cfg, key), f"is {total_steps} steps, below the {step} this run "
                      "has trained; a resume can only keep or extend its budget")


def window_updates(total_steps: int, steps_per_epoch: int, per_step: int, accumulate: int) -> int:
    """An optimizer's updates in `total_steps` steps: its `per_step` backward passes a step, in windows of
    `accumulate` of them aligned to epochs (each epoch's last step ends a window, maybe a shorter one)."""
    epochs, rest = divmod(total_steps, steps_per_epoch)
    return epochs * -(-steps_per_epoch * per_step // accumulate) + -(-rest * per_step // accumulate)


def check_windows(cfg: DictConfig, steps_per_epoch: int, total_steps: int) -> None:
    """A trainer.max_steps budget ends at the end of an accumulation window: at a multiple of trainer.accumulate
    steps into its epoch, or at the epoch's end (windows are aligned to epochs, dlx.stepper). Elsewhere the last
    batches would never update the weights, and their gradients, in no checkpoint, would be lost to a resume that
    extends the run. An epochs budget always ends at an epoch's end."""
    n = cfg.trainer.accumulate
    epoch_start, into = total_steps // steps_per_epoch * steps_per_epoch, total_steps % steps_per_epoch
    if into % n == 0:
        return
    lower = epoch_start + into // n * n
    upper = min(epoch_start + (into // n + 1) * n, epoch_start + steps_per_epoch)
    allowed = f"{lower} or {upper}" if lower else f"{upper}"
    raise ConfigError("trainer.max_steps", cfg.trainer.max_steps, f"ends inside a trainer.accumulate={n} window "
                      f"(step {into} of an epoch of {steps_per_epoch}): its last {into % n} batches would never update "
                      f"the weights; use {allowed} (a multiple of {n} steps into an epoch, or an epoch's end)")


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


@dataclass
class Pretrained:
    """What `init_from` did: the checkpoint read, the tensors copied and those left as initialized, with why."""

    path: Path
    loaded: list[str]
    fresh: dict[str, str]  # name -> why it was not loaded
    unused: list[str]  # in the checkpoint, not in this model


def pretrained_path(source: Path) -> Path:
    """`init_from` names a checkpoint file, or a run folder (its best.pt, else last.pt)."""
    if source.is_file():
        return source
    for name in ("best.pt", "last.pt"):
        if (source / "checkpoints" / name).is_file():
            return source / "checkpoints" / name
    raise ConfigError("init_from", str(source), "must be a checkpoint file or a run folder holding "
                      "checkpoints/best.pt or last.pt")


def load_pretrained(task: torch.nn.Module, source: Path) -> Pretrained:
    """Fine-tuning: copy every weight whose name and shape match from a checkpoint (a file, or a run folder's
    best or last weights, loaded by dlx.analysis.loading.load_run); report which were loaded and which stay
    freshly initialized (and why)."""
    from dlx.analysis.loading import load_run

    path = pretrained_path(source)
    rng = checkpoint.rng_state()  # rebuilding the source run draws numbers: this run's stream stays as seeded
    try:
        weights = load_run(path, device="cpu", with_data=False).task.state_dict()
    except DlxError as e:
        raise ConfigError("init_from", str(source), str(e)) from None
    finally:
        checkpoint.set_rng_state(rng)
    own = task.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape}
    if not matched:
        raise ConfigError("init_from", str(source), "shares no weights (same name and shape) with this model")
    task.load_state_dict(matched, strict=False)
    fresh = {k: f"checkpoint {tuple(weights[k].shape)}, this model {tuple(v.shape)}" if k in weights
             else "not in the checkpoint" for k, v in own.items() if k not in matched}
    report = Pretrained(path, list(matched), fresh, sorted(set(weights) - set(own)))
    log.info("init_from %s: loaded %d of %d tensors: %s", path, len(matched), len(own), list(matched))
    log.info("init_from: fresh (as initialized): %s; unused from the checkpoint: %s", fresh, report.unused)
    return report


# ---- checkpoints ----------------------------------------------------------------------------------
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
        "recent": list(r.recent),  # rank 0's: recalibrated statistics are rank 0's on every rank
        "rng": checkpoint.rng_state(),
        "rng_ranks": rng_ranks,
        "state": asdict(r.state) | {"elapsed": r.state.elapsed + time.perf_counter() - r.t0},
        "steps_per_epoch": r.steps_per_epoch,
        "config": plain_config(r.cfg),
    }


def best_state(r: Run, metrics: dict[str, float]) -> dict[str, Any]:
    """The evaluated weights (EMA ones when on) with the metrics that made them best."""
    return {"task": r.eval_task.state_dict(), "state": asdict(r.state), "metrics": metrics,
            "config": plain_config(r.cfg)}


def restore(r: Run, state: dict[str, Any]) -> None:
    """Load a last.pt into a freshly built run, so training continues bit for bit (or, with overrides, under
    the new settings from the next step on)."""
    r.task.load_state_dict(state["task"])
    for k, opt in r.optimizers.items():
        configured = [{key: v for key, v in g.items() if key != "params"} for g in opt.param_groups]
        opt.load_state_dict(state["optimizers"][k])  # moments and counts; also the saved hyperparameters...
        for group, settings in zip(opt.param_groups, configured, strict=True):
            group.update(settings)  # ...which the config's win over: optimizer.* overrides take effect
    for k, sched in r.schedulers.items():
        schedulers.resume(sched, state["schedulers"][k])  # the saved position under the configured schedule
    if r.scaler and state["scaler"]:
        r.scaler.load_state_dict(state["scaler"])
    if r.ema is not None and state["ema"] is not None:
        r.ema.load_state_dict(state["ema"])
    r.stepper.load_state_dict(state["stepper"])
    r.meter.load_state_dict({"sums": {k: v.to(r.device) for k, v in state["meter"]["sums"].items()},
                             "count": state["meter"]["count"]})
    r.recent.extend(x.to(r.device) for x in state.get("recent") or [])
    r.state = TrainState(**state["state"])
    ranks = state.get("rng_ranks")  # absent in checkpoints of one process
    checkpoint.set_rng_state(ranks[r.rank] if ranks and len(ranks) == r.world_size else state["rng"])


# ---- resume -----------------------------------------------------------------------------------------
def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """A resume with overrides (trainer.max_steps=...) makes them the run's config in .hydra/config.yaml, so
    that the next `dlx resume` without them, `dlx runs` and `dlx compare` see what the run now trains with.
    config.sha keeps the hash the run was started with: a rerun sweep still knows the job as its own.
    Each changed setting is logged (train.log) with its old and new value."""
    path = run_dir / ".hydra" / "config.yaml"
    saved = plain_config(OmegaConf.load(path))
    changed = differences(saved, plain_config(cfg))
    if not changed:
        return
    for key, was, new in changed:
        log.info("resume override %s: %r -> %r (from the next step on)", key, was, new)
    rundir.write_config(run_dir, cfg)  # atomic: a kill here leaves the old config or the new one, never half of one
    log.info("resumed with changed settings: %s updated", path)


@contextmanager
def logging_to(run_dir: Path) -> Iterator[None]:
    """dlx's log goes to `run_dir`/train.log only for a while (a run trained inside another one: the FID judge),
    then back to where it went."""
    before, level = list(log.handlers), log.level
    for h in before:
        log.removeHandler(h)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        for h in before:
            log.addHandler(h)
        log.setLevel(level)


def configure_logging(run_dir: Path) -> None:
    """train.log in the run folder (appended on resume); one handler per run, replaced for the next job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if hydra_verbose():  # hydra.verbose=true (or [dlx]): debug lines in train.log and on stderr as well
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("[dlx %(levelname)s] %(message)s"))
        log.addHandler(console)
        log.setLevel(logging.DEBUG)
        log.debug("debug logging on (hydra.verbose); run folder %s", run_dir)


def hydra_verbose() -> bool:
    """Whether Hydra's `hydra.verbose` asks for debug logging of dlx: true, or a list of loggers naming dlx."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    verbose = HydraConfig.get().verbose
    if isinstance(verbose, bool):
        return verbose
    names = [verbose] if isinstance(verbose, str) else list(verbose)
    return any(str(n) == "dlx" or str(n).startswith("dlx.") for n in names)
