"""Dilated convolutions (Yu & Koltun 2016): the context network, used as a classifier.

Dilated 3x3 convs with dilations 1, 1, 2, 4, 8, 16, 1 grow the receptive field exponentially
(1 + 2 * sum(dilations) = 67 pixels) while the map keeps its full resolution and every layer has the
same 9 C^2 weights. The context module here is the paper's "basic" one: C channels throughout, each
3x3 layer followed by ReLU, then a 1x1 layer, all initialized to the identity (the paper found random
initialization did not train well); there is no BatchNorm in the module, as in the paper.

As a classifier: a front-end maps the input to `width` channels (3x3 conv -> BN -> ReLU), the context
module aggregates, global average pooling and a linear layer classify. Inputs above 32x32 are first
halved by stride-2 3x3 convs until the map is at most 32x32 (224 -> 28: output stride 8, as the paper's
front-end); smaller inputs (digits 8x8, CIFAR 32) keep their resolution. A dilation wider than the map
only reads zero padding at its outer taps, so every input size works.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CONTEXT_SIZE = 32  # the front-end downsamples larger inputs to at most this side


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Front-end layer: 3x3 conv -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def identity_init(conv: nn.Conv2d) -> None:
    """The paper's identity initialization: k(t, a, b) = 1[t = 0] 1[a = b]; the layer passes its input."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    with torch.no_grad():
        center = conv.kernel_size[0] // 2
        conv.weight[:, :, center, center].copy_(torch.eye(conv.out_channels, conv.in_channels))


def context_module(channels: int, dilations: Sequence[int]) -> nn.Sequential:
    """3x3 convs with the given dilations ("same" padding), ReLU after each, then a 1x1 conv and ReLU."""
    layers: list[nn.Module] = []
    for d in dilations:
        layers += [nn.Conv2d(channels, channels, kernel_size=3, padding=d, dilation=d), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(channels, channels, kernel_size=1), nn.ReLU(inplace=True)]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            identity_init(layer)
    return nn.Sequential(*layers)


class ContextNet(nn.Module):
    """Front-end + dilated context module + global average pooling classifier.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); decides the front-end's downsampling.
        width: channels of the front-end and the context module.
        dilations: dilation of each 3x3 context layer (the paper: 1, 1, 2, 4, 8, 16, 1).
        dropout: drop probability before the last linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        width: int = 64,
        dilations: Sequence[int] = (1, 1, 2, 4, 8, 16, 1),
        dropout: float = 0.0,
    ):
        super().__init__()
        if width < 1:
            raise ValueError(f"width={width!r} is not allowed: >= 1")
        dilations = list(dilations)
        if not dilations or any(not isinstance(d, int) or d < 1 for d in dilations):
            raise ValueError(
                f"dilations={dilations!r} is not allowed: "
                "a non-empty list of positive integers, e.g. [1, 1, 2, 4]"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        front, size = [conv_bn_relu(in_channels, width)], image_size
        while size > CONTEXT_SIZE:  # stride-2 3x3 conv with padding 1: ceil(size / 2)
            front.append(conv_bn_relu(width, width, stride=2))
            size = (size + 1) // 2
        self.features = nn.Sequential(
            nn.Sequential(*front),  # (B, width, h, w), h <= 32
            context_module(width, dilations),  # same shape, each pixel sees 1 + 2 * sum(dilations) pixels more
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
