"""VGG (Simonyan & Zisserman 2015), every configuration of the paper's Table 1:

    A      VGG-11: 8 convs 3x3                                      133M parameters at 224x224
    A-LRN  A with local response normalization after the first conv (Krizhevsky et al.'s k=2, n=5,
           alpha=1e-4, beta=0.75; the paper found it does not help)  133M
    B      VGG-13: 10 convs 3x3                                     133M
    C      B with a 1x1 conv (same width) at the end of stages 3, 4 and 5: 13 convs      134M
    D      VGG-16: 13 convs 3x3                                     138M
    E      VGG-19: 16 convs 3x3                                     144M

Stacks of convs with ReLU and five 2x2 max pools, then fc 4096-4096-classes with dropout. A, B, D and E
are torchvision's `cfgs`, and the head is torchvision's `VGG`, so the ImageNet nets match torchvision's
parameter counts (VGG-16: 138,357,544; with `norm: batch`, vgg16_bn's). `norm` puts a normalization layer
after every conv (dlx.models.norm); the paper (2014) has none (`norm: none`), torchvision's *_bn nets
have `batch`.

Small inputs, as in the common CIFAR VGGs:
  - a max pool that would take the map below 1x1 is left out (digits 8x8 keep 3 of the 5 pools,
    MNIST 28 keeps 4, CIFAR 32 all 5), so the last map is 1x1 rather than empty;
  - below 64x64 the last map is 1x1, and torchvision's head (pool to 7x7, i.e. 49 copies of one
    vector, into a 102M-parameter fc layer) is replaced by the same head with 512 hidden units instead of
    4096 (fc 512-512-classes with dropout).
"""

from torch import Tensor, nn
from torchvision.models import vgg as tv

from dlx.models.norm import check_norm, init_norms, norm2d

NAMES = {"A": "VGG-11", "A-LRN": "VGG-11 with LRN", "B": "VGG-13", "C": "VGG-16 with 1x1 convs", "D": "VGG-16",
         "E": "VGG-19"}
# Layer lists: an int is a 3x3 conv of that width, ("1x1", n) a 1x1 conv, "M" a 2x2 max pool, "LRN" local
# response normalization. A, B, D, E are torchvision's; A-LRN and C follow the paper's Table 1.
CFGS: dict[str, list] = {
    "A": tv.cfgs["A"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": tv.cfgs["B"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("1x1", 256), "M", 512, 512, ("1x1", 512), "M",
          512, 512, ("1x1", 512), "M"],
    "D": tv.cfgs["D"],
    "E": tv.cfgs["E"],
}
SMALL_SIZE = 64  # below this the last map is 1x1 and the small head is used


def local_response_norm() -> nn.LocalResponseNorm:
    """Krizhevsky et al. 2012's response normalization (k=2, n=5, alpha=1e-4, beta=0.75), as VGG's A-LRN used."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def make_layers(cfg: list, in_channels: int, norm: str) -> nn.Sequential:
    """torchvision's make_layers with 1x1 convs, LRN, any normalization and `in_channels` inputs.

    Each conv is conv -> norm (unless none) -> ReLU, like torchvision's (the conv keeps its bias).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "LRN":
            layers.append(local_response_norm())
        else:
            kernel, width = (1, v[1]) if isinstance(v, tuple) else (3, v)
            layers.append(nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2))
            if norm != "none":
                layers.append(norm2d(norm, width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
    return nn.Sequential(*layers)


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's VGG initialization: Kaiming-normal convs, unit BatchNorm, N(0, 0.01) fc layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    init_norms(module)


class VGG(nn.Module):
    """VGG A, A-LRN, B, C, D, E by `cfg`, with `in_channels`, a normalization choice and small-input handling.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        cfg: A (VGG-11), A-LRN, B (VGG-13), C, D (VGG-16) or E (VGG-19).
        norm: normalization after each conv: none (the paper), batch (torchvision's *_bn; makes deep VGGs
            train from scratch), layer, group or instance.
        image_size: input side (from `data.size`); decides which pools and which head.
        dropout: drop probability after the two hidden fc layers (0.5 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        cfg: str = "D",
        norm: str = "none",
        image_size: int = 224,
        dropout: float = 0.5,
    ):
        super().__init__()
        if cfg not in NAMES:
            raise ValueError(
                f"cfg={cfg!r} is not allowed: choose one of " + ", ".join(f"{k} ({v})" for k, v in NAMES.items())
            )
        check_norm(norm)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        layers, size = [], image_size
        for v in CFGS[cfg]:
            if v == "M":
                if size < 2:  # this pool would take the map below 1x1
                    continue
                size //= 2
            layers.append(v)
        features = make_layers(layers, in_channels, norm)
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
