"""The CIFAR-10 speedrun net of airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU").

    stem 3x3 conv (stem_width) -> GELU
    3 x ConvGroup(width): conv 3x3 -> max pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU
    global max pool -> x logit_scale -> linear (no bias)

Each group halves the map (32 -> 16 -> 8 -> 4 on CIFAR, 8 -> 4 -> 2 -> 1 on digits). What it keeps
from airbench: the widths (64, 256, 256), GELU, BatchNorm with momentum 0.4 (airbench's 0.6 in its
own convention) and no bias in convs, the final max pool, logits scaled by 1/9 (a fixed temperature
that lets the net train at a high learning rate). What it leaves out: the fixed whitening first layer
(computed from data patches before training; here a learned 3x3 "same" stem, so inputs down to 8x8
work), frozen BN scales and the separate bias learning rate.
"""

from torch import Tensor, nn

POOLS = {"max": nn.AdaptiveMaxPool2d, "avg": nn.AdaptiveAvgPool2d}


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    """3x3 "same" convolution; no bias before a BatchNorm."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


class ConvGroup(nn.Module):
    """conv -> max pool 2 -> BN -> GELU -> conv -> BN -> GELU: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)  # pooling before the norm: the second conv runs on a quarter of the pixels
        self.norm1 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class Scale(nn.Module):
    """Multiply by a constant: airbench's fixed logit temperature."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


class Airbench(nn.Module):
    """airbench94's net without the whitening layer.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); three 2x2 poolings need at least 8.
        widths: channels of the three conv groups (airbench94: 64, 256, 256).
        stem_width: channels of the stem conv (airbench94's whitening layer has 24).
        bn_momentum: BatchNorm running-statistics momentum in PyTorch's convention (airbench: 0.4).
        logit_scale: constant the logits are multiplied by (airbench: 1/9).
        pool: global pooling before the linear layer, max (airbench) or avg.
        dropout: drop probability before the linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        widths: tuple[int, int, int] = (64, 256, 256),
        stem_width: int = 24,
        bn_momentum: float = 0.4,
        logit_scale: float = 1 / 9,
        pool: str = "max",
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(
                f"widths={list(widths)!r} is not allowed: "
                "three positive channel counts, e.g. [64, 256, 256]"
            )
        if stem_width < 1:
            raise ValueError(f"stem_width={stem_width!r} is not allowed: a positive channel count")
        if image_size < 8:
            raise ValueError(
                f"image_size={image_size!r} is not allowed: "
                "three 2x2 poolings need inputs of at least 8x8"
            )
        if not 0 < bn_momentum <= 1:
            raise ValueError(f"bn_momentum={bn_momentum!r} is not allowed: a momentum in (0, 1]")
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} is not allowed: choose one of {', '.join(POOLS)}")
        if logit_scale <= 0:
            raise ValueError(f"logit_scale={logit_scale!r} is not allowed: a positive factor")
        self.features = nn.Sequential(
            conv3x3(in_channels, stem_width, bias=True),  # (B, stem_width, H, W)
            nn.GELU(),
            ConvGroup(stem_width, widths[0], bn_momentum),  # (B, w0, H/2, W/2)
            ConvGroup(widths[0], widths[1], bn_momentum),  # (B, w1, H/4, W/4)
            ConvGroup(widths[1], widths[2], bn_momentum),  # (B, w2, H/8, W/8)
        )
        # Scaling the pooled features equals scaling the logits of a bias-free linear layer, and keeps the
        # Linear last (the analysis tools' contract: CAM reads its weights).
        self.classifier = nn.Sequential(
            POOLS[pool](1), nn.Flatten(), nn.Dropout(dropout), Scale(logit_scale),  # (B, w2)
            nn.Linear(widths[2], num_classes, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
