"""Multi-layer perceptron: the lecture's fully connected net.

Input of any shape is flattened: (B, ...) -> (B, in_features) -> hidden layers -> (B, num_classes).

With `residual: true` every hidden layer after the first is wrapped in an identity skip,
h <- h + f(h), so the Jacobian of the stack is prod(W_l + 1) instead of prod(W_l): the gradient reaches
the first layer even through 20 sigmoid layers (the lecture's vanishing-gradient demo). The first
hidden layer changes the width (in_features -> width), so it cannot have an identity skip.
"""

from torch import Tensor, nn

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
# Maxout is not an elementwise nonlinearity: it needs `pieces` times as many linear units (see Maxout).
ACTIVATION_NAMES = (*ACTIVATIONS, "maxout")


def make_activation(name: str, key: str = "activation", num_features: int = 1) -> nn.Module:
    """Build an elementwise activation module by its lecture name.

    Args:
        name: one of `ACTIVATIONS`.
        key: argument named in the error for an unknown name.
        num_features: learned slopes of PReLU, one per unit/channel (He et al. 2015); ignored otherwise.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"{key}={name!r} is not allowed: choose one of {', '.join(ACTIVATIONS)}")
    if name == "prelu":
        return nn.PReLU(num_features)
    return ACTIVATIONS[name]()


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al. 2013): the max over `pieces` linear pieces of each unit.

    (B, units * pieces) -> (B, units); piece j of unit i is feature i * pieces + j.
    """

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(1, (-1, self.pieces)).amax(2)  # (B, units, pieces) -> (B, units)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class Residual(nn.Module):
    """Identity skip around a layer: h + f(h)."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


def _hidden_layer(
    fan_in: int, width: int, activation: str, pieces: int, dropout: float, batch_norm: bool
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> activation -> [Dropout]; maxout computes `pieces` linear maps per unit."""
    k = pieces if activation == "maxout" else 1
    layers: list[nn.Module] = [nn.Linear(fan_in, width * k, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(width * k))
    layers.append(Maxout(pieces) if activation == "maxout" else make_activation(activation, num_features=width))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """`depth` hidden layers of `width` units (or one per entry of `widths`): Linear -> [BatchNorm] -> act -> [Dropout].

    Args:
        in_features: flattened input size (from `data.in_features`).
        num_classes: output units.
        depth: number of hidden layers (0 = logistic regression).
        width: units per hidden layer.
        widths: units of each hidden layer, e.g. [64, 128, 64]; when set, it replaces `depth` and `width`.
        activation: sigmoid, tanh, relu, leaky_relu, prelu (one slope per unit), elu, gelu or maxout.
        pieces: linear pieces per maxout unit (k in Goodfellow et al. 2013); used by maxout only.
        dropout: drop probability after each hidden activation.
        batch_norm: BatchNorm1d before each activation.
        residual: identity skip (h + f(h)) around every hidden layer whose input already has `width`
            units: layers 2..depth, and the first too when in_features == width.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        activation: str = "relu",
        pieces: int = 2,
        dropout: float = 0.0,
        batch_norm: bool = False,
        residual: bool = False,
        widths: list[int] | None = None,
    ):
        super().__init__()
        if activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation={activation!r} is not allowed: choose one of {', '.join(ACTIVATION_NAMES)}")
        if depth < 0:
            raise ValueError(f"depth={depth!r} is not allowed: number of hidden layers, >= 0")
        if width < 1:
            raise ValueError(f"width={width!r} is not allowed: units per hidden layer, >= 1")
        if widths is not None and not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"widths={list(widths)!r} is not allowed: a list of units per hidden layer, each >= 1")
        if activation == "maxout" and pieces < 2:
            raise ValueError(f"pieces={pieces!r} is not allowed: maxout needs at least 2 linear pieces per unit")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]  # (B, ...) -> (B, in_features)
        fan_in = in_features
        for units in [width] * depth if widths is None else widths:
            layer = _hidden_layer(fan_in, units, activation, pieces, dropout, batch_norm)
            layers.append(Residual(layer) if residual and fan_in == units else layer)
            fan_in = units
        self.features = nn.Sequential(*layers)  # (B, last width), or (B, in_features) without hidden layers
        self.classifier = nn.Linear(fan_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
