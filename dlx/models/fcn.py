"""Fully convolutional network (Long et al. 2015): class scores at several depths, upsampled by
transposed convolutions and fused by addition (the FCN-8s skip architecture).

    backbone stage k: [conv 3x3, BN, ReLU] x convs -> max pool 2x2      (stride 2, 4, 8, ...)
    score_k: conv 1x1 -> K class scores at stage k's resolution
    fuse: s = score_deepest; for each shallower stage: s = upsample_x2(s) + score_k   (skip fusion)
    final: upsample to the input size -> logits (B, K, H, W)

Upsampling layers are ConvTranspose2d(4x4, stride 2) initialized to bilinear interpolation and
learned, as in the paper. Every upsampling is given the exact target size, so odd sides work.
"""

import torch
from torch import Tensor, nn

from dlx.models.segnet import conv_block, segmentation_classes


def bilinear_kernel(channels: int, size: int) -> Tensor:
    """ConvTranspose2d weight (C, C, k, k) that performs bilinear upsampling channel by channel."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    w = torch.zeros(channels, channels, size, size)
    w[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return w


def upsampler(channels: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 4))
    return up


class FCN(nn.Module):
    """FCN with skip fusion from every backbone stage.

    Args:
        in_channels: image channels (from `data.channels`).
        num_classes: object classes of the data (from `data.num_classes`).
        background: add a background class 0 (masks hold 0 for background, class + 1 for objects).
        widths: channels of each backbone stage (each ends with a 2x2 max pool).
        convs: conv layers per stage.
    """

    def __init__(
        self, in_channels: int, num_classes: int, background: bool = True, widths: list[int] | None = None,
        convs: int = 2,
    ):
        super().__init__()
        widths = list(widths) if widths is not None else [32, 64, 128]
        if not widths or convs < 1:
            raise ValueError(f"widths={widths!r} is not allowed: needs at least one stage and convs >= 1")
        k = self.num_outputs = segmentation_classes(num_classes, background)
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(conv_block(a, b, convs) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.pool = nn.MaxPool2d(2, 2)  # floor: an odd side n -> (n - 1) / 2, undone by output_size
        self.score = nn.ModuleList(nn.Conv2d(w, k, 1) for w in widths)
        # One x2 upsampling into each shallower stage, and a last one from stage 0's map to the input.
        self.up = nn.ModuleList(upsampler(k) for _ in widths)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, K, H, W)."""
        size = x.shape[-2:]
        maps = []
        for stage in self.stages:
            x = self.pool(stage(x))
            maps.append(x)  # stage k: stride 2**(k+1)
        s = self.score[-1](maps[-1])
        for k in reversed(range(len(maps) - 1)):
            skip = self.score[k](maps[k])
            s = self.up[k + 1](s, output_size=skip.shape[-2:]) + skip  # fuse: coarse scores + finer scores
        return self.up[0](s, output_size=size)
