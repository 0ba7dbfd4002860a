"""MobileNet v1 (Howard et al. 2017): a stack of depthwise-separable convolutions.

A depthwise-separable conv factors a 3x3 conv into a 3x3 depthwise conv (one filter per channel) and a
1x1 pointwise conv that mixes channels: about 8-9 times fewer multiply-adds and parameters than a full
3x3 conv. The net (the paper's Table 1): a full 3x3/2 conv to 32 channels, 13 depthwise-separable
layers up to 1024 channels with five stride-2 steps, global average pooling, one linear layer. The
width multiplier alpha thins every layer to alpha times its channels (at least 8); the resolution
multiplier is the data's image size. 4.2M parameters at alpha = 1 and 1000 classes.

Small inputs: below 64x64 the stem conv has stride 1 instead of 2 (total stride 16, not 32), so CIFAR's
32x32 ends in a 2x2 map instead of 1x1. Stride-2 3x3 convs with padding 1 give ceil(size / 2), so no
input size empties a map (digits 8x8 ends in 1x1).
"""

from torch import Tensor, nn

# (output channels, stride) of the 13 depthwise-separable layers.
LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
SMALL_SIZE = 64  # below this the stem keeps the resolution


def conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Full 3x3 conv -> BN -> ReLU (the stem)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv -> BN -> ReLU, then 1x1 pointwise conv -> BN -> ReLU (the paper's Fig. 3 right)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=stride, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNet(nn.Module):
    """MobileNet v1 with a width multiplier.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); below 64 the stem has stride 1.
        width_mult: alpha, the width multiplier (1.0, 0.75, 0.5, 0.25 in the paper).
        dropout: drop probability before the last linear layer (the paper uses little regularization: 0).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 224,
        width_mult: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(
                f"width_mult={width_mult!r} is not allowed: "
                "a positive width multiplier (1.0, 0.75, 0.5, 0.25)"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")

        def channels(c: int) -> int:
            return max(8, int(c * width_mult))

        c = channels(32)
        layers = [conv_bn(in_channels, c, stride=1 if image_size < SMALL_SIZE else 2)]
        for out, stride in LAYERS:
            layers.append(depthwise_separable(c, channels(out), stride))
            c = channels(out)
        self.features = nn.Sequential(*layers)  # (B, 1024 alpha, H / 32, W / 32)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
