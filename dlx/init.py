"""Weight initialization schemes of the lectures, applied to every conv and linear layer.

Xavier/Glorot (2010) keeps activation variance constant for tanh-like units; He (2015) doubles it
for ReLU units. `gaussian` is the "small random numbers" scheme that makes deep nets stall.
"""

from torch import nn

from dlx.errors import ConfigError

SCHEMES = ("default", "xavier_normal", "xavier_uniform", "he_normal", "gaussian")


def initialize(model: nn.Module, scheme: str = "default", std: float = 0.01) -> nn.Module:
    """Re-initialize conv and linear weights by `scheme` (biases to zero); `default` keeps PyTorch's."""
    if scheme not in SCHEMES:
        raise ConfigError("init.scheme", scheme, f"choose one of {', '.join(SCHEMES)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if not isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d):
            continue
        if scheme == "xavier_normal":
            nn.init.xavier_normal_(m.weight)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(m.weight)
        elif scheme == "he_normal":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, 0.0, std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
