"""The GAN value function of Goodfellow et al. (2014), split into the two players' losses.

    V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],   D maximizes, G minimizes.

The discriminator's loss is -V (binary cross-entropy: real -> 1, fake -> 0). The generator has two
losses with the same fixed point:
  - minimax: minimize log(1 - D(G(z))), the game as written; it saturates early in training, when D
    rejects the fakes easily and log(1 - D) is flat;
  - nonsat:  minimize -log D(G(z)), the paper's "non-saturating" heuristic with strong gradients there.
D outputs logits l; with D = sigmoid(l): log D = -softplus(-l) and log(1 - D) = -softplus(l).
One-sided label smoothing (Salimans et al. 2016) aims real logits at 1 - label_smoothing; fakes stay 0.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.errors import ConfigError

GENERATOR_LOSSES = ("minimax", "nonsat")


class GANLoss(nn.Module):
    """Losses of both players from discriminator logits.

    Args:
        generator_loss: minimax | nonsat (see module docstring).
        label_smoothing: one-sided smoothing of the real label (0 = off; 0.1 is usual).
    """

    def __init__(self, generator_loss: str = "nonsat", label_smoothing: float = 0.0):
        super().__init__()
        if generator_loss not in GENERATOR_LOSSES:
            raise ConfigError("loss.generator_loss", generator_loss, f"choose one of {', '.join(GENERATOR_LOSSES)}")
        self.generator_loss, self.label_smoothing = generator_loss, label_smoothing

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """-E[log D(x)] - E[log(1 - D(G(z)))], with the real target 1 - label_smoothing."""
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 1 - self.label_smoothing))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def generator(self, fake_logits: Tensor) -> Tensor:
        """The generator's loss on D's logits for its samples."""
        fake_logits = fake_logits.float()
        if self.generator_loss == "minimax":
            return -F.softplus(fake_logits).mean()  # log(1 - D(G(z))), minimized
        return F.softplus(-fake_logits).mean()  # -log D(G(z))

    def extra_repr(self) -> str:
        return f"generator_loss={self.generator_loss}, label_smoothing={self.label_smoothing}"
