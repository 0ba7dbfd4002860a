"""PixelCNN (van den Oord et al. 2016): an autoregressive image model built from masked convolutions.

    p(x) = prod_i p(x_i | x_<i), pixels in raster order (row by row, left to right), and within a pixel
    the colour channels in order (R, then G given R, then B given R and G).

A masked convolution zeroes the kernel weights that would look at the current or later pixels:
rows below the centre, and the centre row from the centre rightwards. At the centre pixel itself,
the channels are split into C colour groups: mask type A (first layer) lets group g see only groups
< g of the input, so no output sees its own value; type B (every later layer) lets group g see groups
<= g, since those features already exclude the current value.

    conv 7x7 type A -> [ReLU, 1x1 B, ReLU, 3x3 B, ReLU, 1x1 B] + skip, x layers -> ReLU, 1x1 B, ReLU, 1x1 B
    output: logits (B, levels, C, H, W): a `levels`-way softmax for every sub-pixel (256 for 8-bit images).

Inputs are the quantized pixels scaled to [-1, 1] (the task quantizes and scales).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def colour_group(index: int, channels: int, colours: int) -> int:
    """Which colour (0..colours-1) channel `index` of a `channels`-wide layer belongs to (contiguous groups)."""
    return index * colours // channels


class MaskedConv2d(nn.Conv2d):
    """A "same" conv whose kernel cannot see the current or later pixels (see module docstring).

    Args:
        mask_type: "A" (first layer: the centre pixel's own colour and later ones hidden) or "B".
        colours: colour channels C of the image (1 for grey).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str, colours: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be A or B, not {mask_type}")
        k, c = kernel_size, kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, k, k)
        mask[:, :, :c, :] = 1  # rows above the centre
        mask[:, :, c, :c] = 1  # the centre row, left of the centre
        g_out = torch.tensor([colour_group(o, out_channels, colours) for o in range(out_channels)])
        g_in = torch.tensor([colour_group(i, in_channels, colours) for i in range(in_channels)])
        seen = g_in[None, :] < g_out[:, None] if mask_type == "A" else g_in[None, :] <= g_out[:, None]
        mask[:, :, c, c] = seen.float()  # the centre pixel: earlier colours (A) or also its own (B)
        self.register_buffer("mask", mask, persistent=False)
        self.mask_type = mask_type

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_type={self.mask_type}"


class ResidualBlock(nn.Module):
    """The paper's residual block: 1x1 (h -> h/2), 3x3 (h/2 -> h/2), 1x1 (h/2 -> h), all type B, plus skip."""

    def __init__(self, width: int, colours: int):
        super().__init__()
        half = max(colours, width // 2)
        self.net = nn.Sequential(
            nn.ReLU(), MaskedConv2d(width, half, 1, "B", colours),
            nn.ReLU(), MaskedConv2d(half, half, 3, "B", colours),
            nn.ReLU(), MaskedConv2d(half, width, 1, "B", colours),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class PixelCNN(nn.Module):
    """Masked-conv autoregressive model over quantized pixels.

    Args:
        in_channels: colour channels C (from `data.channels`).
        levels: values per sub-pixel: 256 for 8-bit images, 2 for binarized images.
        width: hidden channels (a multiple of C keeps the colour groups equal).
        layers: residual blocks after the first layer (the paper's PixelCNN has 15).
        first_kernel: side of the type-A first layer (the paper's 7).
    """

    def __init__(self, in_channels: int, levels: int = 256, width: int = 64, layers: int = 5, first_kernel: int = 7):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels={levels!r} is not allowed: must be >= 2 (256 for 8-bit pixels, 2 for binary)")
        if first_kernel < 3 or first_kernel % 2 == 0:
            raise ValueError(f"first_kernel={first_kernel!r} is not allowed: must be odd and >= 3")
        if width < in_channels:
            raise ValueError(f"width={width!r} is not allowed: must be >= the {in_channels} colour channels")
        c = self.colours = in_channels
        self.levels = levels
        self.net = nn.Sequential(
            MaskedConv2d(c, width, first_kernel, "A", c),
            *(ResidualBlock(width, c) for _ in range(layers)),
            nn.ReLU(), MaskedConv2d(width, width, 1, "B", c),
            nn.ReLU(), MaskedConv2d(width, c * levels, 1, "B", c),  # channel j predicts colour j // levels
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) scaled to [-1, 1] -> logits (B, levels, C, H, W)."""
        b, c, h, w = x.shape
        out = self.net(x).view(b, c, self.levels, h, w)
        return out.transpose(1, 2)
