"""The fully connected GAN of Goodfellow et al. (2014), with LeakyReLU units in place of maxout.

    generator:     z (B, latent_dim) -> [Linear, ReLU]... -> Linear -> tanh -> (B, C, H, W) in [-1, 1]
    discriminator: (B, C, H, W) -> flatten -> [Linear, LeakyReLU 0.2, Dropout]... -> Linear -> logit (B,)
"""

from torch import Tensor, nn


class MLPGAN(nn.Module):
    """Generator and discriminator MLPs; the GAN task gives each its own optimizer.

    Args:
        in_channels: image channels (from `data.channels`).
        image_size: image side (from `data.size`).
        latent_dim: dimension of the noise z ~ N(0, I).
        hidden: hidden widths of the discriminator from its input inwards; the generator mirrors them.
        dropout: dropout after each discriminator hidden layer (the paper used dropout in D).
    """

    def __init__(
        self, in_channels: int, image_size: int, latent_dim: int = 64, hidden: list[int] | None = None,
        dropout: float = 0.3,
    ):
        super().__init__()
        hidden = list(hidden) if hidden is not None else [512, 256]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden={hidden!r} is not allowed: needs at least one hidden width >= 1")
        if latent_dim < 1:
            raise ValueError(f"latent_dim={latent_dim!r} is not allowed: must be >= 1")
        self.latent_dim = latent_dim
        shape = (in_channels, image_size, image_size)
        d = in_channels * image_size * image_size
        g_dims = [latent_dim, *reversed(hidden)]
        g: list[nn.Module] = []
        for a, b in zip(g_dims[:-1], g_dims[1:], strict=True):
            g += [nn.Linear(a, b), nn.ReLU(True)]
        self.generator = nn.Sequential(*g, nn.Linear(g_dims[-1], d), nn.Tanh(), nn.Unflatten(1, shape))
        d_dims = [d, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(d_dims[:-1], d_dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
        self.discriminator = nn.Sequential(*layers, nn.Linear(d_dims[-1], 1), nn.Flatten(0))

    def forward(self, x: Tensor) -> Tensor:
        """The discriminator's logits for images x (the generator is `self.generator`)."""
        return self.discriminator(x)
