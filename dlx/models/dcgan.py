"""DCGAN (Radford et al. 2016): a transposed-conv generator and a strided-conv discriminator.

    generator:     z (B, latent_dim) -> (B, c0, s0, s0) -> [ConvT 4x4 stride 2, BN, ReLU]... -> tanh (B, C, H, W)
    discriminator: (B, C, H, W) -> [Conv 4x4 stride 2, (BN), LeakyReLU 0.2]... -> conv s0 x s0 -> logit (B,)

The paper's rules: no pooling (strided convs both ways), batch norm in both nets except the
generator's output and the discriminator's input layers, ReLU in G with tanh output, LeakyReLU in D,
weights from N(0, 0.02). The number of doublings adapts to the image: the side is halved while it is
even and stays >= 4 (at most 4 times), so 8x8 digits start from 4x4, 28x28 MNIST from 7x7, 32x32 from
4x4 and 64x64 from 4x4. Channels double at each step down: width, 2*width, 4*width, ...
Images are in [-1, 1] (tanh); the GAN task maps pixels to that range.

Class-conditional (`num_classes` > 0; Mirza & Osindero 2014, as a conditional DCGAN): the one-hot label y
(B, K) joins the noise at the generator's input, z' = [z, y] (B, latent_dim + K), and joins the image at
the discriminator's input as K constant maps, [x, y broadcast to H x W] (B, C + K, H, W), so both players
see the class from their first layer on and D judges "a real image of class y", not just "a real image".
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def plan(image_size: int, max_doublings: int = 4) -> tuple[int, int]:
    """(s0, n): the generator's first side and its number of stride-2 doublings, s0 * 2**n == image_size."""
    s, n = image_size, 0
    while s % 2 == 0 and s // 2 >= 4 and n < max_doublings:
        s, n = s // 2, n + 1
    return s, n


def with_label(z: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """[z, one_hot(y)] (B, D + K) for a conditional net (num_classes = K > 0); z itself when unconditional."""
    if not num_classes:
        return z
    if y is None:
        raise ValueError(f"a class-conditional net (num_classes={num_classes}) needs class labels y")
    return torch.cat([z, F.one_hot(y, num_classes).to(z.dtype)], 1)


def with_label_maps(x: Tensor, y: Tensor | None, num_classes: int) -> Tensor:
    """Images (B, C, H, W) with K one-hot label maps appended as channels (B, C + K, H, W) when conditional."""
    if not num_classes:
        return x
    onehot = with_label(x.new_zeros(len(x), 0), y, num_classes)  # (B, K)
    return torch.cat([x, onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)


class Generator(nn.Module):
    """z (B, latent_dim) [and labels y (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, out_channels: int, image_size: int, latent_dim: int, width: int, num_classes: int = 0):
        super().__init__()
        s0, n = plan(image_size)
        chans = [width * 2 ** (n - 1 - i) for i in range(n)] or [width]  # deep -> shallow, e.g. [128, 64]
        z_dim = latent_dim + num_classes  # the one-hot label joins the noise
        layers: list[nn.Module] = [
            nn.Unflatten(1, (z_dim, 1, 1)),
            nn.ConvTranspose2d(z_dim, chans[0], s0, bias=False),  # project [z, y]: (B, c0, s0, s0)
            nn.BatchNorm2d(chans[0]), nn.ReLU(True),
        ]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        if n:
            layers.append(nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1))  # the last doubling
        else:  # an odd side: no doubling, a 3x3 conv to the image
            layers.append(nn.Conv2d(chans[-1], out_channels, 3, padding=1))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.latent_dim, self.num_classes = latent_dim, num_classes

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(with_label(z, y, self.num_classes))


class Discriminator(nn.Module):
    """images (B, C, H, W) [and labels y (B,)] -> logits (B,) of "real" [of class y]."""

    def __init__(self, in_channels: int, image_size: int, width: int, num_classes: int = 0):
        super().__init__()
        s0, n = plan(image_size)
        self.num_classes = num_classes
        in_channels += num_classes  # the label maps join the image
        chans = [width * 2**i for i in range(n)] or [width]  # shallow -> deep, e.g. [64, 128]
        if n:
            layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        else:
            layers = [nn.Conv2d(in_channels, chans[0], 3, padding=1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(chans[-1], 1, s0), nn.Flatten(0)]  # (B, 1, 1, 1) -> (B,)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(with_label_maps(x, y, self.num_classes))


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialization: conv weights N(0, 0.02); batch norm scales N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGAN(nn.Module):
    """Generator and discriminator of a DCGAN; the GAN task gives each its own optimizer.

    Args:
        in_channels: image channels (from `data.channels`).
        image_size: image side (from `data.size`).
        latent_dim: dimension of the noise z ~ N(0, I) (the paper's 100).
        width: channels of the discriminator's first layer (= the generator's last hidden layer);
            doubled at each step towards the small end.
        num_classes: K > 0 makes both nets class-conditional (task.conditional=true); 0 = unconditional.
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 100, width: int = 64,
                 num_classes: int = 0):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"image_size={image_size!r} is not allowed: DCGAN needs images of at least 4x4")
        if latent_dim < 1 or width < 1:
            key, value = ("latent_dim", latent_dim) if latent_dim < 1 else ("width", width)
            raise ValueError(f"{key}={value!r} is not allowed: must be >= 1")
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} is not allowed: 0 (unconditional) or the number of classes")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.generator = Generator(in_channels, image_size, latent_dim, width, num_classes)
        self.discriminator = Discriminator(in_channels, image_size, width, num_classes)
        dcgan_init(self)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The discriminator's logits for images x [of classes y] (the generator is `self.generator`)."""
        return self.discriminator(x, y)
