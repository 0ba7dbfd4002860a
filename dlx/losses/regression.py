"""Regression criteria: plain squared error and the Gaussian likelihoods that also learn the noise.

Each loss says how many model outputs it reads per target (`outputs_per_target`) and how to read a
prediction from them (`predict`: mean and log-variance), so the task, the evaluation and the plots
never guess the layout of the model's output:

- `RegressMSE`: outputs [y_hat]; 1/2 ||y - y_hat||^2 per target. No noise model.
- `GaussianNLL`: outputs [mu, v] with sigma^2 = softplus(v) + eps (the parametrization of
  torch.nn.GaussianNLLLoss), the full negative log-likelihood including 1/2 log 2 pi. With
  `homoscedastic: true` the model outputs [mu] only and the loss learns one log sigma^2 per target
  dimension: the same noise everywhere, the baseline the heteroscedastic model is compared with.
- `Heteroscedastic`: outputs [y_hat, s] with s = log sigma^2 (Kendall and Gal 2017, Eq. 8):
  1/2 exp(-s) ||y - y_hat||^2 + 1/2 s. Predicting the log variance keeps the loss stable (no division
  by zero), and a large residual can be "explained away" by a large s, at the price of 1/2 s.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


def check_outputs(out: Tensor, target: Tensor, per_target: int, loss: str) -> None:
    """One clear error when the model's output units do not match what the loss reads."""
    want = target.shape[-1] * per_target
    if out.shape[-1] != want:
        raise ConfigError("model.num_classes", out.shape[-1],
                          f"loss {loss} reads {per_target} output(s) per target: set model.num_classes={want}")


def gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor) -> Tensor:
    """Per-element negative log-likelihood of `target` under N(mean, exp(log_var)), in nats (full)."""
    return 0.5 * (log_var + (target - mean).pow(2) * torch.exp(-log_var) + LOG_2PI)


class RegressMSE(nn.Module):
    """1/2 squared error per target, mean over batch and targets (the Gaussian NLL with sigma = 1, up to constants)."""

    outputs_per_target = 1

    def predict(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean (B, D), log-variance or None) from the model's output (B, D)."""
        return out, None

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        check_outputs(out, target, 1, "regress_mse")
        return 0.5 * (out.float() - target).pow(2).mean()


class GaussianNLL(nn.Module):
    """Full Gaussian negative log-likelihood with a softplus variance head, or one learned variance.

    Args:
        homoscedastic: the model outputs only the mean; one log sigma^2 per target is a parameter of
            the loss (trained with the model: the task's optimizer sees every parameter of the task).
        targets: target dimensions D (from `data.num_classes`), the size of the homoscedastic variance.
        eps: variance floor added after softplus.
    """

    def __init__(self, homoscedastic: bool = False, targets: int = 1, eps: float = 1e-6):
        super().__init__()
        self.homoscedastic, self.eps = homoscedastic, eps
        self.outputs_per_target = 1 if homoscedastic else 2
        self.log_var = nn.Parameter(torch.zeros(targets)) if homoscedastic else None

    def predict(self, out: Tensor) -> tuple[Tensor, Tensor]:
        out = out.float()
        if self.homoscedastic:
            return out, self.log_var.expand_as(out)
        mean, raw = out.chunk(2, dim=-1)  # (B, D) each
        return mean, torch.log(F.softplus(raw) + self.eps)

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        check_outputs(out, target, self.outputs_per_target, "gaussian_nll")
        mean, log_var = self.predict(out)
        return gaussian_nll(mean, log_var, target).mean()


class Heteroscedastic(nn.Module):
    """Kendall and Gal's aleatoric loss on outputs [y_hat, s = log sigma^2] (B, 2D).

    Args:
        min_log_var: floor of s, so one perfectly fitted point cannot drive the loss to minus infinity.
    """

    outputs_per_target = 2

    def __init__(self, min_log_var: float = -10.0):
        super().__init__()
        self.min_log_var = min_log_var

    def predict(self, out: Tensor) -> tuple[Tensor, Tensor]:
        mean, s = out.float().chunk(2, dim=-1)  # (B, D) each
        return mean, s.clamp_min(self.min_log_var)

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        check_outputs(out, target, 2, "heteroscedastic")
        mean, s = self.predict(out)
        return (0.5 * torch.exp(-s) * (target - mean).pow(2) + 0.5 * s).mean()
