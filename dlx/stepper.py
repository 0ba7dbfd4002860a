"""The Stepper: the only place that turns a loss into a parameter update.

`step(name, loss)` does, for optimizer `name`: backward (scaled under fp16), gradient accumulation,
unscaling, the mean over a short accumulation window, the global gradient norm, clipping, the finite
check on loss and gradient norm (stopping *before* the optimizer step, so the weights and the last
checkpoint stay good), the optimizer step, the scheduler step and zero_grad.

The finite check reads one boolean per update on the host. On CPU that costs nothing; on a GPU it is
the loop's single sync per update, the price of halting before a bad update rather than after it.

Accumulation windows are aligned to epochs, as in timm, Lightning and the HF Trainer: each epoch's backward
passes of an optimizer are grouped into windows of `trainer.accumulate` from the epoch's first batch, and the
epoch's last step ends every optimizer's window, a shorter one when the epoch's batches are not a multiple
of it. Each backward scales its loss by 1/n; the update of a short window of r < n passes multiplies the
accumulated gradients by n/r first, so that it too steps with their mean (clipping and the finite check see
that mean). The loop tells `begin` each step's batch index in its epoch and whether it is the epoch's last;
nothing here reads a tensor to decide.
"""

from collections.abc import Callable, Mapping
from contextlib import nullcontext

import torch
from torch import Tensor
from torch.nn.utils import clip_grads_with_norm_, get_total_norm


def total_norm(grads: list[Tensor]) -> Tensor:
    """Global L2 norm of the gradients, as `get_total_norm` computes it.

    One foreach kernel when all gradients share a device and dtype (the usual case): `get_total_norm`'s
    grouping by device and dtype is half the cost of the finite check on a small net's step.
    """
    if len({(g.device, g.dtype) for g in grads}) > 1:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class Diverged(Exception):
    """A non-finite loss or gradient norm with `trainer.on_nonfinite=stop`."""

    def __init__(self, step: int, name: str, loss: float, grad_norm: float):
        self.step = step
        super().__init__(
            f"training diverged at step {step}: optimizer '{name}' got loss={loss} and gradient norm={grad_norm}; "
            "the update was not applied and the last good checkpoint is kept "
            "(lower optimizer.lr or set trainer.grad_clip)"
        )


class Stepper:
    """Callable handed to `Task.training_step` as `step`. Everything it needs comes in its constructor.

    Args:
        optimizers: one optimizer per parameter group name.
        schedulers: one scheduler per optimizer, stepped once per update (skipped ones too: the schedule
            follows the run's position, so it still ends at the last step).
        scaler: a GradScaler for fp16, else None.
        grad_clip: max global gradient norm, or None.
        accumulate: backward passes per update (gradient accumulation): batches, for an optimizer that makes
            one per step; an epoch's last step ends every window (see the module docstring).
        on_nonfinite: "stop" raises Diverged; "skip" drops the update and counts it (`skipped`).
        device_type: for disabling autocast during backward.
        grad_sync: averages gradients over the ranks before each update (data parallelism without DDP
            wrappers), else None.
        param_names: id(param) -> layer name, for per-layer gradient norms at log steps.
        per_step: optimizer name -> backward passes it makes per training step (TaskSpec.updates; 1 each
            when not given): on an epoch's last step, the last of them ends the optimizer's window.
    """

    def __init__(
        self,
        optimizers: dict[str, torch.optim.Optimizer],
        schedulers: dict,
        *,
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
        accumulate: int = 1,
        on_nonfinite: str = "stop",
        device_type: str = "cpu",
        grad_sync: Callable[[list[Tensor]], None] | None = None,
        param_names: dict[int, str] | None = None,
        per_step: Mapping[str, int] | None = None,
    ):
        self.optimizers, self.schedulers, self.scaler = optimizers, schedulers, scaler
        self.grad_clip, self.accumulate, self.on_nonfinite = grad_clip, accumulate, on_nonfinite
        self.device_type, self.grad_sync = device_type, grad_sync
        self.param_names = param_names or {}
        self.per_step = dict(per_step) if per_step is not None else dict.fromkeys(optimizers, 1)
        self.window = dict.fromkeys(optimizers, 0)  # backward passes in the open window (since the last update)
        self.batch: int | None = None  # the current step's batch index in its epoch
        self.ends_epoch = False  # the current step is its epoch's last: it ends every window
        self.calls = dict.fromkeys(optimizers, 0)  # backward passes in the current step (when accumulating)
        self.updates = dict.fromkeys(optimizers, 0)  # updates applied
        self.skipped = 0  # updates dropped for a non-finite loss or gradient (on_nonfinite=skip)
        self.step_count = 0  # the loop's step, for messages
        self.grad_norms: dict[str, Tensor] = {}  # last global norm per optimizer, on the device
        self.capture_layers = False
        self.layer_grads: dict[str, Tensor] = {}

    def begin(self, step: int, capture_layers: bool = False, batch: int | None = None, ends_epoch: bool = False
              ) -> None:
        """The loop starts training step `step`; keep per-layer gradients of its updates when `capture_layers`.

        Args:
            step: the step about to run (for messages).
            capture_layers: keep per-layer gradients of its updates (a log step).
            batch: its batch index in its epoch (0: the first). An optimizer's window ends after its backward
                passes of the epoch reach a multiple of `accumulate`: windows are a function of the position in
                the epoch, also after a resume that changed `accumulate`. None: windows of `accumulate` passes
                counted from the last update.
            ends_epoch: it is its epoch's last step: each optimizer's last backward in it ends its window.
        """
        self.step_count, self.capture_layers, self.batch, self.ends_epoch = step, capture_layers, batch, ends_epoch
        if self.accumulate > 1:
            self.calls = dict.fromkeys(self.per_step, 0)

    @property
    def in_window(self) -> bool:
        """Some optimizer holds gradients of an unfinished accumulation window (no checkpoint can hold them)."""
        return any(self.window.values())

    def completes_window(self) -> bool:
        """Whether the step's first backward of every optimizer ends its accumulation window (an update follows):
        data parallelism all-reduces gradients on that one only."""
        n = self.accumulate
        if n == 1 or self.ends_epoch:
            return True
        if self.batch is None:
            return all(m + 1 >= n for m in self.window.values())
        return all((self.batch * self.per_step[name] + 1) % n == 0 for name in self.window)

    def _ends_window(self, name: str) -> bool:
        """Whether the backward just made for `name` ends its window (accumulating only)."""
        self.calls[name] += 1
        k = self.per_step[name]
        if self.ends_epoch and self.calls[name] >= k:  # the epoch's last pass: the window ends, full or not
            return True
        if self.batch is None:
            return self.window[name] >= self.accumulate
        return (self.batch * k + self.calls[name]) % self.accumulate == 0  # passes into the epoch

    def _params(self, name: str) -> list[Tensor]:
        return [p for g in self.optimizers[name].param_groups for p in g["params"] if p.grad is not None]

    def __call__(self, name: str, loss: Tensor) -> None:
        self.window[name] += 1
        # Backward outside autocast: the backward ops already run in the forward ops' dtypes. (Entering an
        # autocast context costs ~5 us a step; skip it when none is active, as under fp32.)
        on = torch.is_autocast_enabled(self.device_type)
        with torch.autocast(self.device_type, enabled=False) if on else nullcontext():
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.accumulate == 1 or self._ends_window(name):
            self._update(name, loss)

    def _update(self, name: str, loss: Tensor) -> None:
        opt = self.optimizers[name]
        passes, self.window[name] = self.window[name], 0
        if self.grad_sync is not None:
            self.grad_sync([p for g in opt.param_groups for p in g["params"] if p.requires_grad])
        if self.scaler:
            self.scaler.unscale_(opt)  # first: the scaler checks the scaled gradients for infs
        params = self._params(name)
        if passes < self.accumulate and params:
            # A short window (an epoch's last, or the first after a resume that changed `accumulate`): its
            # passes each added loss/n; their mean is the sum times n/r.
            torch._foreach_mul_([p.grad for p in params], self.accumulate / passes)
        norm = total_norm([p.grad for p in params]) if params else torch.zeros((), device=loss.device)
        self.grad_norms[name] = norm.detach()
        # Under fp16 an inf gradient is the scaler's business (it skips and lowers the scale), not divergence.
        # Otherwise one check covers both: loss + norm is finite iff both are (short of a 1e38 overflow,
        # which is divergence too).
        if not bool(torch.isfinite(loss.detach() if self.scaler else loss.detach() + norm)):
            self._nonfinite(name, loss, norm)
        else:
            if self.capture_layers:
                self._capture_layers(params)
            if self.grad_clip is not None and params:
                clip_grads_with_norm_(params, self.grad_clip, norm)
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
            self.updates[name] += 1
        if self.scaler:
            self.scaler.update()  # after every unscale_, skipped or not: the next unscale_ needs it
        self.schedulers[name].step()
        opt.zero_grad(set_to_none=True)

    def take_layer_grads(self) -> dict[str, Tensor]:
        """The per-layer gradients kept since the last call (empty unless a step captured them)."""
        grads, self.layer_grads = self.layer_grads, {}
        return grads

    def _capture_layers(self, params: list[Tensor]) -> None:
        """Keep each weight's gradient (detached) for per-layer norms and histograms at this log step."""
        self.layer_grads = {
            self.param_names[id(p)]: p.grad.detach().clone()
            for p in params
            if p.dim() > 1 and id(p) in self.param_names
        }

    def _nonfinite(self, name: str, loss: Tensor, norm: Tensor) -> None:
        if self.on_nonfinite == "stop":
            self.optimizers[name].zero_grad(set_to_none=True)
            raise Diverged(self.step_count, name, float(loss), float(norm))
        self.skipped += 1

    def state_dict(self) -> dict:
        return {"window": dict(self.window), "updates": dict(self.updates), "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        # Checkpoints are written between windows only; an older one (a running count, "micro") was too.
        self.window = dict(state.get("window") or dict.fromkeys(self.optimizers, 0))
        self.updates, self.skipped = dict(state["updates"]), state["skipped"]
