"""The task/Stepper contract of DESIGN.md.

A task is an nn.Module that owns the model(s) and the loss math. The loop (dlx.train) owns devices,
autocast, clipping, the finite check, checkpoints and logging. A task asks for an optimizer update
by calling `step(name, loss)` (the Stepper) once per update: classification once per batch, a GAN k
times for "disc" and once for "gen".

Metrics are returned as dicts of 0-d tensors that are *means over the batch*; the loop weights them
by the batch size, accumulates them on the device and reads them only at log intervals, so a task
must never call `.item()`.
"""

from collections.abc import Callable, Iterable

from torch import Tensor, nn

Step = Callable[[str, Tensor], None]  # step(name, loss): backward + clip + finite check + optimizer step


class Task(nn.Module):
    """Base class. Subclasses implement `training_step` and `validation_step`."""

    # The metric that picks best.pt and drives early stopping, unless trainer.monitor overrides it.
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    # Data-parallel training wraps `model` in DistributedDataParallel (communication overlapping backward) only
    # for tasks whose training_step calls nothing of the model but its forward, once per backward; the others
    # (encode/decode, two networks in turn, model attributes) average gradients over the ranks before updates.
    ddp_wraps_model: bool = False

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer. One optimizer "main" by default; a GAN returns "gen" and "disc"."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        """Compute the loss of one batch, call `step(name, loss)`, return batch-mean metrics."""
        raise NotImplementedError

    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Batch-mean metrics of one evaluation batch (no gradients; the loop sets eval mode)."""
        raise NotImplementedError

    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Optional images (N, C, H, W) in [0, 1] (or strings: text samples) for TensorBoard, at each validation."""
        return {}

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a data module (dlx.data.base.TensorData)
        """Optional hook with the set-up data module (e.g. fit a PCA baseline, fix a noise batch)."""

    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        """Optional extra metrics computed once per validation over whole data (e.g. FID); means."""
        return {}
