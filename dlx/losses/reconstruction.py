"""Reconstruction criteria, each also the negative log-likelihood of a decoder distribution.

    mse  <->  Gaussian p(x | z) = N(x_hat, scale^2)       (the autoencoder's squared error)
    mae  <->  Laplace  p(x | z) = Laplace(x_hat, scale)   (absolute error, robust to outliers)
    bce  <->  Bernoulli p(x | z) = Bernoulli(sigmoid(x_hat)) on pixels in [0, 1]

An autoencoder minimizes `forward` (the mean per element); a VAE needs the log-likelihood of a whole
image in nats (`nll`), which is the same criterion summed over pixels plus its normalizing constant.
The decoder's raw output is a mean for mse/mae and logits for bce; `decode` turns it into an image.

These are distinct from conf/loss/mse.yaml (squared error of softmax outputs against one-hot labels,
a classification loss): the reconstruction losses are conf/loss/recon_{mse,mae,bce}.yaml.
"""

import math

import torch.nn.functional as F
from torch import Tensor, nn

from dlx.errors import ConfigError

CRITERIA = ("mse", "mae", "bce")


class Reconstruction(nn.Module):
    """Compare a decoder's output with the (clean) input.

    Args:
        criterion: mse | mae | bce (bce reads the output as logits and needs targets in [0, 1]).
        scale: the decoder's noise scale, for `nll` only: Gaussian sigma (mse) or Laplace b (mae),
            in the data's units. Ignored by bce and by autoencoders.
    """

    def __init__(self, criterion: str = "mse", scale: float = 1.0):
        super().__init__()
        if criterion not in CRITERIA:
            raise ConfigError("loss.criterion", criterion, f"choose one of {', '.join(CRITERIA)}")
        if not scale > 0:
            raise ConfigError("loss.scale", scale, "must be > 0")
        self.criterion, self.scale = criterion, scale

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean over every element of the batch: the autoencoder's loss."""
        output, target = output.float(), target.float()
        if self.criterion == "mse":
            return F.mse_loss(output, target)
        if self.criterion == "mae":
            return F.l1_loss(output, target)
        return F.binary_cross_entropy_with_logits(output, target)

    def decode(self, output: Tensor) -> Tensor:
        """The reconstructed image, in the target's space (a Bernoulli decoder's mean is sigmoid(logits))."""
        return output.sigmoid() if self.criterion == "bce" else output

    def nll(self, output: Tensor, target: Tensor) -> Tensor:
        """-log p(target | output) in nats per image, (B,): summed over every element of an image."""
        output, target = output.float(), target.float()
        if self.criterion == "bce":
            per = F.binary_cross_entropy_with_logits(output, target, reduction="none")
        elif self.criterion == "mse":
            per = 0.5 * ((output - target) / self.scale) ** 2 + math.log(self.scale * math.sqrt(2 * math.pi))
        else:
            per = (output - target).abs() / self.scale + math.log(2 * self.scale)
        return per.flatten(1).sum(1)

    def needs_unit_range(self) -> bool:
        """Bernoulli targets must be probabilities: pixels in [0, 1]."""
        return self.criterion == "bce"

    def extra_repr(self) -> str:
        return f"criterion={self.criterion}, scale={self.scale}"


def as_reconstruction(loss: nn.Module, task: str) -> Reconstruction:
    """The loss of a task that compares images; any other loss is a config mistake named in one line."""
    if not isinstance(loss, Reconstruction):
        raise ConfigError(
            "loss", type(loss).__name__,
            f"task={task} compares images with a reconstruction loss: add loss=recon_mse (or recon_mae, recon_bce)",
        )
    return loss


def check_unit_range(x: Tensor) -> None:
    """Refuse standardized inputs for a Bernoulli likelihood (used by tasks at fit start)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ConfigError("data.normalize", True, f"loss=recon_bce needs pixels in [0, 1] (got [{lo:.2f}, {hi:.2f}]): "
                          "set data.normalize=false")

