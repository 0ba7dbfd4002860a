"""The fully connected GAN of Goodfellow et al. (2014), with LeakyReLU units in place of maxout.

    generator:     z (B, latent_dim) -> [Linear, ReLU]... -> Linear -> tanh -> (B, C, H, W) in [-1, 1]
    discriminator: (B, C, H, W) -> flatten -> [Linear, LeakyReLU 0.2, Dropout]... -> Linear -> logit (B,)

Class-conditional (`num_classes` > 0), the conditional adversarial net of Mirza & Osindero (2014): the
one-hot label y (B, K) is fed to both players next to their input, [z, y] into the generator and
[flatten(x), y] into the discriminator.
"""

from torch import Tensor, nn

from dlx.models.dcgan import with_label


class MLPGAN(nn.Module):
    """Generator and discriminator MLPs; the GAN task gives each its own optimizer.

    Args:
        in_channels: image channels (from `data.channels`).
        image_size: image side (from `data.size`).
        latent_dim: dimension of the noise z ~ N(0, I).
        hidden: hidden widths of the discriminator from its input inwards; the generator mirrors them.
        dropout: dropout after each discriminator hidden layer (the paper used dropout in D).
        num_classes: K > 0 makes both nets class-conditional (task.conditional=true); 0 = unconditional.
    """

    def __init__(
        self, in_channels: int, image_size: int, latent_dim: int = 64, hidden: list[int] | None = None,
        dropout: float = 0.3, num_classes: int = 0,
    ):
        super().__init__()
        hidden = list(hidden) if hidden is not None else [512, 256]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden={hidden!r} is not allowed: needs at least one hidden width >= 1")
        if latent_dim < 1:
            raise ValueError(f"latent_dim={latent_dim!r} is not allowed: must be >= 1")
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} is not allowed: 0 (unconditional) or the number of classes")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        shape = (in_channels, image_size, image_size)
        d = in_channels * image_size * image_size
        g_dims = [latent_dim + num_classes, *reversed(hidden)]
        g: list[nn.Module] = []
        for a, b in zip(g_dims[:-1], g_dims[1:], strict=True):
            g += [nn.Linear(a, b), nn.ReLU(True)]
        self.generator = Conditioned(*g, nn.Linear(g_dims[-1], d), nn.Tanh(), nn.Unflatten(1, shape),
                                     num_classes=num_classes, join=0)
        d_dims = [d + num_classes, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(d_dims[:-1], d_dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
        self.discriminator = Conditioned(*layers, nn.Linear(d_dims[-1], 1), nn.Flatten(0), num_classes=num_classes,
                                         join=1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The discriminator's logits for images x [of classes y] (the generator is `self.generator`)."""
        return self.discriminator(x, y)


class Conditioned(nn.Sequential):
    """A Sequential that appends the one-hot label to its activations (B, D) before layer `join` when conditional
    (a Sequential, so the weights keep the names of the unconditional nets: generator.0.weight, ...)."""

    def __init__(self, *layers: nn.Module, num_classes: int, join: int):
        super().__init__(*layers)
        self.num_classes, self.join = num_classes, join

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        for i, layer in enumerate(self):
            if i == self.join:
                x = with_label(x, y, self.num_classes)
            x = layer(x)
        return x
