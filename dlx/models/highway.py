"""Highway networks (Srivastava, Greff & Schmidhuber 2015, "Training Very Deep Networks").

A highway layer mixes a transform of its input with the input itself, gated per unit:

    y = H(x) * T(x) + x * (1 - T(x)),     H(x) = act(W_H x + b_H),   T(x) = sigmoid(W_T x + b_T)

T is the transform gate, 1 - T the carry gate. With b_T initialized negative (the paper's Sec. 2.2:
"e.g. -1, -3"), T starts near 0, so every layer starts close to the identity and the gradient reaches the
first layer of a net of 50 or 100 layers trained with plain SGD: the gated forerunner of the residual
net's h + f(h).

`arch: mlp` (the paper's MNIST nets): a plain fully connected layer that maps the flattened input to
`width` units, `depth` highway layers of `width` units, a linear classifier. `arch: conv` (its CIFAR
nets, Sec. 3.2, in small): a 3x3 conv stem to `width` channels, `depth` highway layers whose H and T are
3x3 convs (gated per channel and pixel), a 2x2 max pool after every `pool_every` layers while the map is
larger than 1x1, global average pooling and a linear classifier.
"""

import torch
from torch import Tensor, nn

from dlx.models.mlp import ACTIVATIONS, make_activation

ARCHS = ("mlp", "conv")


class HighwayLayer(nn.Module):
    """y = H(x) T(x) + x (1 - T(x)) with H and T given as modules of the same output shape as x.

    Args:
        transform: H, ending in its activation.
        gate: the pre-activation of T (a Linear or a conv); its bias is set to `gate_bias`.
        gate_bias: initial b_T; negative biases the layer towards carrying its input.
    """

    def __init__(self, transform: nn.Module, gate: nn.Linear | nn.Conv2d, gate_bias: float):
        super().__init__()
        self.transform, self.gate = transform, gate
        nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.sigmoid(self.gate(x))  # transform gate, same shape as x
        return self.transform(x) * t + x * (1 - t)  # carry gate 1 - T


def _mlp_layer(width: int, activation: str, gate_bias: float) -> HighwayLayer:
    return HighwayLayer(
        nn.Sequential(nn.Linear(width, width), make_activation(activation, num_features=width)),
        nn.Linear(width, width),
        gate_bias,
    )


def _conv_layer(width: int, activation: str, gate_bias: float) -> HighwayLayer:
    return HighwayLayer(
        nn.Sequential(nn.Conv2d(width, width, 3, padding=1), make_activation(activation, num_features=width)),
        nn.Conv2d(width, width, 3, padding=1),
        gate_bias,
    )


class Highway(nn.Module):
    """A highway network: a plain first layer, `depth` highway layers, a linear classifier.

    Args:
        num_classes: output units.
        in_features: flattened input size (from `data.in_features`; arch=mlp).
        in_channels: input channels (from `data.channels`; arch=conv).
        image_size: input side (from `data.size`; arch=conv, decides the pools).
        arch: mlp (fully connected, the paper's MNIST nets) or conv (3x3 conv highway layers).
        depth: number of highway layers.
        width: units (mlp) or channels (conv) of every layer.
        activation: H's nonlinearity (relu in the paper; any of dlx.models.mlp's elementwise ones).
        gate_bias: initial bias of the transform gates; negative (-1 to -3 in the paper) starts each layer
            near the identity.
        pool_every: arch=conv: a 2x2 max pool after every this many highway layers (while the map is > 1x1).
        dropout: drop probability before the classifier.
    """

    def __init__(
        self,
        num_classes: int,
        in_features: int = 0,
        in_channels: int = 0,
        image_size: int = 0,
        arch: str = "mlp",
        depth: int = 10,
        width: int = 50,
        activation: str = "relu",
        gate_bias: float = -2.0,
        pool_every: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not allowed: choose one of {', '.join(ARCHS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not allowed: choose one of {', '.join(ACTIVATIONS)}")
        if depth < 0:
            raise ValueError(f"depth={depth!r} is not allowed: number of highway layers, >= 0")
        if width < 1:
            raise ValueError(f"width={width!r} is not allowed: units per layer, >= 1")
        if pool_every < 1:
            raise ValueError(f"pool_every={pool_every!r} is not allowed: highway layers per pool, >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        if arch == "mlp":
            if in_features < 1:
                raise ValueError(f"in_features={in_features!r} is not allowed: arch=mlp needs the flattened size")
            layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, width),  # (B, width)
                                       make_activation(activation, num_features=width)]
            layers += [_mlp_layer(width, activation, gate_bias) for _ in range(depth)]
            self.features = nn.Sequential(*layers)  # (B, width)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
            return
        if in_channels < 1 or image_size < 1:
            raise ValueError(f"in_channels={in_channels!r} is not allowed: arch=conv needs image data")
        layers = [nn.Conv2d(in_channels, width, 3, padding=1), make_activation(activation, num_features=width)]
        size = image_size
        for i in range(depth):
            layers.append(_conv_layer(width, activation, gate_bias))
            if (i + 1) % pool_every == 0 and i + 1 < depth and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)  # (B, width, size, size)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
