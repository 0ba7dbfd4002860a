"""What a run is made of while it trains: `Run` (everything built for it), `TrainState` (where it is),
`Meter` (device-side metric sums) and `Processes` (how many processes train it, one by default).

`dlx.prepare` builds a Run (fresh or from last.pt), `dlx.loop` trains it; data parallelism
(`dlx.distributed`) only swaps the Run's `Processes` for one that talks to the other ranks.
"""

import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from dlx.stepper import Stepper
from dlx.tasks.base import TaskSpec


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


class Processes:
    """How the processes training one run agree. This one is a single process: nothing to agree on.

    `dlx.distributed.Ranks` overrides every method with collectives; the loop calls them on every rank at
    the same points, so the loop has no data-parallel branches of its own.
    """

    rank, world_size = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def prepare(self, task: torch.nn.Module, spec: TaskSpec, device: torch.device) -> Callable | None:
        """Once, at set-up: wrap the task's model for data parallelism (`task.wrap_model`) or return the
        gradient averaging the Stepper applies before each update; None with one process."""
        return None

    def meter(self) -> Meter:
        """A fresh training meter (data-parallel: one whose read() sums over the ranks)."""
        return Meter()

    def micro_step(self, completes_update: bool) -> AbstractContextManager:
        """Around one forward and backward (DDP: no gradient all-reduce unless it completes an update)."""
        return nullcontext()

    def after_step(self) -> None:
        """After a training step (data-parallel without DDP wrappers: rank 0's BatchNorm buffers everywhere)."""

    def after_recalibration(self, module: torch.nn.Module) -> None:
        """After BatchNorm statistics were recomputed (data-parallel: rank 0's, on every rank)."""

    def stop(self, requested: str | None) -> bool:
        """Whether to stop at this step (data-parallel: if any rank got a signal, every rank stops here)."""
        return requested is not None

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank: run-wide decisions are made once, from rank 0's numbers."""
        return obj

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order (None with one process: nothing to gather)."""
        return None


@dataclass
class Run:
    """Everything built for one run; `dlx.loop` reads it."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    precision: str
    data: Any
    task: torch.nn.Module
    spec: TaskSpec
    optimizers: dict
    schedulers: dict
    scaler: Any
    stepper: Stepper
    tracker: Any  # dlx.tracking.Tracker on rank 0, None on the others
    steps_per_epoch: int
    total_steps: int
    monitor: str
    mode: str
    ema: Any = None
    channels_last: bool = False
    processes: Processes = field(default_factory=Processes)
    state: TrainState = field(default_factory=TrainState)
    meter: Meter = field(default_factory=Meter)
    recent: deque = field(default_factory=deque)  # latest training inputs, for BatchNorm recalibration
    save_due: bool = False  # a periodic checkpoint waits for the end of an accumulation window
    stopped_by: str | None = None  # the signal the run stopped for (SIGTERM, SIGINT, another rank's)
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stop_reason: str | None = None  # budget | early_stop | grad_norm | interrupted | diverged | failed, once it ended
    stop_detail: str = ""  # e.g. "val/loss did not improve for 3 validations"
    early_stop_due: bool = False  # patience ran out; inside an accumulation window the run stops at its end
    t0: float = field(default_factory=time.perf_counter)

    @property
    def rank(self) -> int:
        return self.processes.rank

    @property
    def world_size(self) -> int:
        return self.processes.world_size

    @property
    def is_main(self) -> bool:
        return self.processes.is_main

    @property
    def eval_task(self) -> torch.nn.Module:
        """The weights that are evaluated: the EMA copy when `trainer.ema` is set."""
        return self.ema.module if self.ema is not None else self.task
