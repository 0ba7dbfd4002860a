"""Regression: the model's output read by a regression loss as a mean and, optionally, a noise level.

The loss decides the output layout (`loss.predict(out) -> (mean, log_var or None)`, see
dlx.losses.regression), so one task serves plain MSE, the Gaussian NLL and Kendall and Gal's
heteroscedastic (aleatoric) loss. Metrics: `loss`, `mse` of the mean, and for losses with a noise
model `nll` (full Gaussian negative log-likelihood per target, nats) and `sigma` (mean predicted std).
"""

import torch
from torch import Tensor, nn

from dlx.errors import ConfigError
from dlx.losses.regression import check_outputs, gaussian_nll
from dlx.tasks.base import Step, Task


class Regress(Task):
    """Batches are (x, y): inputs and float targets (B, D)."""

    monitor = "val/loss"
    monitor_mode = "min"
    ddp_wraps_model = True  # training_step calls only self.train_model(x)

    def __init__(self, model: nn.Module, loss: nn.Module):
        if not hasattr(loss, "predict"):
            raise ConfigError("loss", type(loss).__name__,
                              "task=regress needs a regression loss: regress_mse, gaussian_nll or heteroscedastic")
        super().__init__(model, loss)

    def check_batch(self, batch: tuple[Tensor, ...]) -> None:
        """Fail before training when targets are not float (B, D) or the output units do not fit the loss (the
        loop calls this in eval mode under no_grad: the probe updates no BatchNorm statistics)."""
        x, y = batch[0], batch[1]
        if not y.is_floating_point() or y.dim() != 2:
            got = f"{y.dtype} {tuple(y.shape)}"
            raise ConfigError("task", "regress", f"needs float targets (B, D); the data gives {got}")
        check_outputs(self.model(x[:2]), y[:2], self.loss.outputs_per_target, type(self.loss).__name__)

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Predicted mean (B, D) and log-variance (B, D) or None."""
        return self.loss.predict(self.model(x))

    def _metrics(self, out: Tensor, y: Tensor, loss: Tensor) -> dict[str, Tensor]:
        mean, log_var = self.loss.predict(out)
        metrics = {"loss": loss, "mse": (mean - y).pow(2).mean()}
        if log_var is not None:
            metrics["nll"] = gaussian_nll(mean, log_var, y).mean()
            metrics["sigma"] = torch.exp(0.5 * log_var).mean()
        return metrics

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        out = self.train_model(x)  # (B, k * D)
        loss = self.loss(out, y)
        step("main", loss)
        return self._metrics(out.detach(), y, loss.detach())

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        out = self.model(x)
        return self._metrics(out, y, self.loss(out, y))
