"""Multi-layer perceptron: the lecture's fully connected net.

Input of any shape is flattened: (B, ...) -> (B, in_features) -> hidden layers -> (B, num_classes).
"""

from torch import Tensor, nn

from dlx.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def make_activation(name: str, key: str = "model.activation") -> nn.Module:
    """Build an activation module by its lecture name."""
    if name not in ACTIVATIONS:
        raise ConfigError(key, name, f"choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """`depth` hidden layers of `width` units: Linear -> [BatchNorm] -> activation -> [Dropout].

    Args:
        in_features: flattened input size (from `data.in_features`).
        num_classes: output units.
        depth: number of hidden layers (0 = logistic regression).
        width: units per hidden layer.
        activation: nonlinearity name.
        dropout: drop probability after each hidden activation.
        batch_norm: BatchNorm1d before each activation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(fan_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)


