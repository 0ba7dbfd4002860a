"""Step-size schedules, counted in optimizer updates, each with an optional linear warmup.

Every factory takes the optimizer and `total_steps`, the number of updates that optimizer makes in the
run (known only after the data is set up, hence `_partial_: true` in conf/scheduler/; a GAN's
discriminator with k=2 makes twice the generator's), and returns a torch scheduler stepped once per
update. Each schedule is a function of its position (`last_epoch`), so a resume only restores the
position (`resume`) and the schedule built from the config, overrides included, goes on from there.
"""

import math
import warnings

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def constant(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LRScheduler:
    """Constant step size after the warmup."""
    return LambdaLR(optimizer, lambda s: _warmup(s, warmup_steps))


def step(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, milestones: tuple[float, ...] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LRScheduler:
    """Multiply by `gamma` at each milestone, given as a fraction of the run (0.5 = halfway)."""
    marks = [int(m * total_steps) for m in milestones]
    return LambdaLR(optimizer, lambda s: _warmup(s, warmup_steps) * gamma ** sum(s >= m for m in marks))


def cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0) -> LRScheduler:
    """Half a cosine from 1 to `min_factor` between the end of the warmup and the end of the run."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return _warmup(s, warmup_steps)
        t = (s - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return LambdaLR(optimizer, factor)


def onecycle(
    optimizer: Optimizer, total_steps: int, pct_start: float = 0.25, div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> LRScheduler:
    """torch's OneCycleLR (Smith and Topin), peaking at the optimizer's configured lr."""
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=max(2, total_steps), pct_start=pct_start,
        div_factor=div_factor, final_div_factor=final_div_factor,
        cycle_momentum="momentum" in optimizer.defaults and optimizer.defaults["momentum"] > 0,
    )


def resume(scheduler: LRScheduler, state: dict) -> None:
    """Continue `scheduler` (built from the current config) at the position saved in `state`, setting the
    optimizer's step sizes (and OneCycle's momentum) to the schedule's value there.

    Equal to `load_state_dict` when nothing changed (the same closed form the scheduler's own step
    evaluates); with a changed lr, length or warmup the new schedule applies from the next update.
    """
    if isinstance(scheduler, Plateau) and "plateau" in state:
        scheduler.load_reductions(state)
    scheduler.last_epoch = state["last_epoch"]
    with warnings.catch_warnings():  # get_lr() outside step() warns; here it is the point
        warnings.simplefilter("ignore")
        lrs = scheduler.get_lr()
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


class Plateau(LambdaLR):
    """Warmup per step, then ReduceLROnPlateau on the validation loss (the loop calls `on_validation`)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, factor: float, patience: int):
        super().__init__(optimizer, lambda s: _warmup(s, warmup_steps))
        self.plateau = ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)

    def on_validation(self, val_loss: float) -> None:
        # ReduceLROnPlateau edits group["lr"] directly; fold that into base_lrs so LambdaLR keeps it.
        before = [g["lr"] for g in self.optimizer.param_groups]
        self.plateau.step(val_loss)
        for i, g in enumerate(self.optimizer.param_groups):
            if g["lr"] != before[i]:
                self.base_lrs[i] *= g["lr"] / before[i]

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["plateau"] = self.plateau.state_dict()
        state["reductions"] = [b / g["initial_lr"] for b, g in zip(self.base_lrs, self.optimizer.param_groups,
                                                                       strict=True)]
        return state

    def load_reductions(self, state: dict) -> None:
        """The plateau's own state and how far it has lowered each step size (of the configured lr)."""
        self.plateau.load_state_dict(state["plateau"])
        for i, g in enumerate(self.optimizer.param_groups):
            self.base_lrs[i] = g["initial_lr"] * state.get("reductions", [1.0] * len(self.base_lrs))[i]

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        self.plateau.load_state_dict(state_dict.pop("plateau"))
        super().load_state_dict(state_dict)


def plateau(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, factor: float = 0.1, patience: int = 3
) -> LRScheduler:
    """Lower the step size by `factor` after `patience` validations without a lower validation loss."""
    return Plateau(optimizer, warmup_steps, factor, patience)
