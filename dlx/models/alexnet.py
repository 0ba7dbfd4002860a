"""AlexNet (Krizhevsky et al. 2012), torchvision's single-tower version.

Five convs (11x11/4, 5x5, 3x3, 3x3, 3x3) with ReLU, overlapping 3x3/2 max pooling after convs 1, 2 and 5,
then three fully connected layers (4096, 4096, classes) with dropout 0.5 before the first two.

Small inputs (below 63x63, torchvision's minimum: the third pool would get an empty map) use a
small-input variant instead of upsampling: the stem is a 3x3/1 conv instead of 11x11/4 and the three
overlapping pools are padded by 1, so each halves the map, rounding up, and never empties it
(32 -> 16 -> 8 -> 4, digits 8 -> 4 -> 2 -> 1). The first fc layer then takes the 256 x s x s map
(s = 4 on CIFAR: 4096 inputs) instead of torchvision's pooled 256 x 6 x 6.

torchvision's AlexNet leaves out the paper's local response normalization; `lrn: true` puts it back where
the paper has it (Sec. 3.3: after the ReLU of the first and second convs, before their max pools) with
the paper's k=2, n=5, alpha=1e-4, beta=0.75. `norm` adds a normalization layer after every conv
(dlx.models.norm; none in the paper).
"""

from torch import Tensor, nn
from torchvision.models.alexnet import AlexNet as TorchvisionAlexNet

from dlx.models.norm import check_norm, norm2d
from dlx.models.vgg import local_response_norm

MIN_SIZE = 63  # smallest input of the ImageNet layout
LRN_AFTER = 2  # the paper normalizes the responses of the first two conv layers


def _with_norms(features: nn.Sequential, lrn: bool, norm: str) -> nn.Sequential:
    """Insert `norm` after every conv, and LRN after the ReLU of the first two convs when `lrn`."""
    layers: list[nn.Module] = []
    convs = 0
    for layer in features:
        layers.append(layer)
        if isinstance(layer, nn.Conv2d):
            convs += 1
            if norm != "none":
                layers.append(norm2d(norm, layer.out_channels))
        elif isinstance(layer, nn.ReLU) and lrn and convs <= LRN_AFTER:
            layers.append(local_response_norm())
    return nn.Sequential(*layers)


class AlexNet(nn.Module):
    """AlexNet on torchvision's layers, with `in_channels` and a small-input variant.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); below 63 the small-input variant is built.
        dropout: drop probability before the first two fc layers (0.5 in the paper).
        lrn: local response normalization after the first two convs, as in the paper (not in torchvision).
        norm: normalization after every conv: none (the paper), batch, layer, group or instance.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 224,
        dropout: float = 0.5,
        lrn: bool = False,
        norm: str = "none",
    ):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        check_norm(norm)
        net = TorchvisionAlexNet(num_classes=num_classes, dropout=dropout)
        features, pooled = net.features, 6  # ImageNet: (B, 256, 6, 6) into the first fc layer
        if image_size < MIN_SIZE:
            features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
            pooled = image_size
            for i, layer in enumerate(features):
                if isinstance(layer, nn.MaxPool2d):  # still overlapping (3x3, stride 2), now ceil(s / 2)
                    features[i] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                    pooled = (pooled + 1) // 2
            net.classifier[1] = nn.Linear(256 * pooled * pooled, 4096)
        elif in_channels != 3:
            features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        self.features = _with_norms(features, lrn, norm)  # (B, 256, h, w)
        # torchvision pools to 6x6 so any input >= 63 fits the fc layer; on the small variant this is the
        # identity (the map already is s x s).
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(pooled), nn.Flatten(), *net.classifier)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
