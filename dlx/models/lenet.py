"""LeNet-5 (LeCun et al. 1998), the lecture's version: full C3 connectivity, one activation throughout.

    conv 6@5x5 -> pool 2 -> conv 16@5x5 -> pool 2 -> fc 120 -> fc 84 -> fc num_classes

The net was drawn for 32x32 inputs. Smaller inputs get zero padding 2 ("same") on a conv, as MNIST
LeNets pad 28x28 to 32x32:
  - conv1 is padded when the input is below 32 (28 -> 28 -> pool 14, as on padded MNIST),
  - conv2 is padded when its input map is below 10 (digits 8 -> 8 -> 4 -> 4 -> 2), so the last map
    is never empty.
32x32 and larger are unpadded (32 -> 28 -> 14 -> 10 -> 5: the paper's 16x5x5); the first fc layer
takes whatever map the input gives (16x53x53 at 224). `norm` adds a normalization layer after each conv
(dlx.models.norm; the paper has none).
"""

from torch import Tensor, nn

from dlx.models.norm import check_norm, norm2d

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _conv_padding(size: int, min_size: int) -> int:
    """Pad a 5x5 conv by 2 (keeping the size) when its input is below `min_size`, else none."""
    return 2 if size < min_size else 0


def _conv(c_in: int, c_out: int, padding: int, norm: str, act: type[nn.Module]) -> list[nn.Module]:
    """A 5x5 conv, its normalization layer (none: left out), its activation."""
    norm_layer = [] if norm == "none" else [norm2d(norm, c_out)]
    return [nn.Conv2d(c_in, c_out, kernel_size=5, padding=padding), *norm_layer, act()]


class LeNet(nn.Module):
    """LeNet-5.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); decides the padding (see module docstring).
        activation: tanh (the paper's squashing function) or relu.
        pool: avg (the paper's subsampling) or max.
        dropout: drop probability before each fully connected layer after the first (0 in the paper).
        norm: normalization after each conv: none (the paper), batch, layer, group or instance.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        activation: str = "tanh",
        pool: str = "avg",
        dropout: float = 0.0,
        norm: str = "none",
    ):
        super().__init__()
        check_norm(norm)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not allowed: choose one of {', '.join(_ACTIVATIONS)}")
        if pool not in _POOLS:
            raise ValueError(f"pool={pool!r} is not allowed: choose one of {', '.join(_POOLS)}")
        if image_size < 4:
            raise ValueError(f"image_size={image_size!r} is not allowed: LeNet needs inputs of at least 4x4")
        act, pool_layer = _ACTIVATIONS[activation], _POOLS[pool]

        pad1 = _conv_padding(image_size, 32)
        size = (image_size + 2 * pad1 - 4) // 2  # after conv1 and pool
        pad2 = _conv_padding(size, 10)
        size = (size + 2 * pad2 - 4) // 2  # after conv2 and pool
        # conv -> [norm] -> activation -> pool; without a norm the layer indices are those of the plain net
        self.features = nn.Sequential(
            *_conv(in_channels, 6, pad1, norm, act),  # C1: (B, 6, H', W')
            pool_layer(2),  # S2
            *_conv(6, 16, pad2, norm, act),  # C3
            pool_layer(2),  # S4: (B, 16, size, size)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 16 * size * size)
            nn.Linear(16 * size * size, 120),  # C5 (a conv in the paper: same thing on a 5x5 map)
            act(),
            nn.Dropout(dropout),
            nn.Linear(120, 84),  # F6
            act(),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
