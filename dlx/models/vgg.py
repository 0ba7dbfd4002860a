"""VGG (Simonyan & Zisserman 2015), configurations A, B, D, E of the paper's Table 1 (VGG-11/13/16/19).

Stacks of 3x3 convs (optionally with BatchNorm) and five 2x2 max pools, then fc 4096-4096-classes with
dropout; built with torchvision's `cfgs`, `make_layers` and `VGG`, so the ImageNet nets match torchvision's
parameter counts (VGG-16: 138.4M).

Small inputs, as in the common CIFAR VGGs:
  - a max pool that would take the map below 1x1 is left out (digits 8x8 keep 3 of the 5 pools,
    MNIST 28 keeps 4, CIFAR 32 all 5), so the last map is 1x1 rather than empty;
  - below 64x64 the last map is 1x1, and torchvision's head (pool to 7x7, i.e. 49 copies of one
    vector, into a 102M-parameter fc layer) is replaced by the same head with 512 hidden units instead of
    4096 (fc 512-512-classes with dropout).
"""

from torch import Tensor, nn
from torchvision.models import vgg as tv

from dlx.errors import ConfigError

NAMES = {"A": "VGG-11", "B": "VGG-13", "D": "VGG-16", "E": "VGG-19"}
SMALL_SIZE = 64  # below this the last map is 1x1 and the small head is used


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's VGG initialization: Kaiming-normal convs, unit BatchNorm, N(0, 0.01) fc layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class VGG(nn.Module):
    """VGG-11/13/16/19 by `cfg`, with `in_channels` and small-input handling.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        cfg: A (VGG-11), B (VGG-13), D (VGG-16) or E (VGG-19).
        batch_norm: BatchNorm after each conv (not in the paper; makes deep VGGs train from scratch).
        image_size: input side (from `data.size`); decides which pools and which head.
        dropout: drop probability after the two hidden fc layers (0.5 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        cfg: str = "D",
        batch_norm: bool = False,
        image_size: int = 224,
        dropout: float = 0.5,
    ):
        super().__init__()
        if cfg not in NAMES:
            raise ConfigError("model.cfg", cfg, ", ".join(f"{k} ({v})" for k, v in NAMES.items()))
        if not 0 <= dropout < 1:
            raise ConfigError("model.dropout", dropout, "a probability in [0, 1)")
        layers, size = [], image_size
        for v in tv.cfgs[cfg]:
            if v == "M":
                if size < 2:  # this pool would take the map below 1x1
                    continue
                size //= 2
            layers.append(v)
        features = tv.make_layers(layers, batch_norm=batch_norm)
        features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)  # make_layers assumes RGB
        if image_size >= SMALL_SIZE:  # torchvision's VGG: pool to 7x7 (224 gives 7x7), fc 25088-4096-4096
            net = tv.VGG(features, num_classes=num_classes, init_weights=True, dropout=dropout)
            self.features = net.features  # (B, 512, h, w)
            self.classifier = nn.Sequential(net.avgpool, nn.Flatten(), *net.classifier)
            return
        # (B, 512, 1, 1): the same head with 512 hidden units instead of 4096. Not built through
        # torchvision's VGG, which would first allocate and initialize its 120M-parameter head.
        self.features = features
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, 512)
            nn.Linear(512, 512),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
