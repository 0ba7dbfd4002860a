"""DenseNet (Huang, Liu, van der Maaten & Weinberger 2017), on torchvision's dense layers and transitions.

Inside a dense block every layer receives the concatenation of all earlier feature maps of the block and
adds `growth_rate` (k) maps of its own; transition layers between blocks (BN-ReLU-1x1 conv-2x2 average
pool) halve the map and, with compression theta < 1, the channels. torchvision's `_DenseLayer` (the
bottleneck layer BN-ReLU-1x1 conv to 4k-BN-ReLU-3x3 conv to k) and `_Transition` are used as they are,
with `memory_efficient` off (no gradient checkpointing: small nets, plain backward).

`arch: cifar` is the paper's net for 32x32 inputs (Sec. 3-4), and works unchanged on digits 8x8 and
MNIST 28x28: a 3x3 conv stem (16 channels, or 2k for DenseNet-BC), three dense blocks of equal length on
maps of size s, s/2, s/4, BN-ReLU, global average pooling, one linear layer.
  - DenseNet (bottleneck: false, compression: 1.0): layers are BN-ReLU-3x3 conv; (L - 4) / 3 per block.
  - DenseNet-BC (bottleneck: true, compression: 0.5): bottleneck layers; (L - 4) / 6 per block.
  Parameter counts on CIFAR-10 (the paper's Table 2): DenseNet L=40 k=12 1.0M, L=100 k=12 7.0M,
  DenseNet-BC L=100 k=12 0.8M, L=250 k=24 15.3M.
`arch: imagenet` is torchvision's DenseNet-121/169/201/161 (depth picks the block sizes, growth and stem
width; parameter counts equal torchvision's); below 64x64 inputs the 7x7/2 stem and its max pool become
a 3x3/1 conv (as for dlx's ResNet), so a CIFAR image is not 8x8 before the first block.
"""

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models import densenet as tv

ARCHS = ("cifar", "imagenet")
# torchvision's ImageNet nets: depth -> (growth rate, block sizes, stem channels)
IMAGENET = {121: (32, (6, 12, 24, 16), 64), 169: (32, (6, 12, 32, 32), 64), 201: (32, (6, 12, 48, 32), 64),
            161: (48, (6, 12, 36, 24), 96)}
IMAGENET_MIN_SIZE = 64  # below this the ImageNet stem (7x7/2 conv + max pool) is replaced by a 3x3/1 conv
BN_SIZE = 4  # bottleneck width: 4k channels before the 3x3 conv (the paper's and torchvision's)


class DenseLayer(nn.Module):
    """The paper's basic (non-bottleneck) layer: BN-ReLU-3x3 conv to `growth_rate` maps of the concatenation.

    Takes the list of the block's earlier maps, like torchvision's `_DenseLayer`.
    """

    def __init__(self, num_input_features: int, growth_rate: int, drop_rate: float):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = torch.cat(features, 1)  # (B, C_in + i k, H, W)
        return self.drop(self.conv(self.relu(self.norm(x))))  # (B, k, H, W)


class DenseBlock(nn.ModuleDict):
    """`num_layers` layers, each fed every earlier map of the block; outputs their concatenation.

    Bottleneck layers are torchvision's `_DenseLayer`; the forward pass is torchvision's `_DenseBlock`'s.
    """

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bottleneck: bool, drop_rate: float):
        super().__init__()
        for i in range(num_layers):
            channels = in_features + i * growth_rate
            layer = (tv._DenseLayer(channels, growth_rate, BN_SIZE, drop_rate, memory_efficient=False)
                     if bottleneck else DenseLayer(channels, growth_rate, drop_rate))
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)  # (B, C_in + num_layers k, H, W)


def _dense_stages(
    stem: list[tuple[str, nn.Module]],
    channels: int,
    blocks: tuple[int, ...],
    growth_rate: int,
    bottleneck: bool,
    compression: float,
    drop_rate: float,
) -> tuple[nn.Sequential, int]:
    """Stem, dense blocks with transitions between them, final BN-ReLU. Returns the module and its channels."""
    modules: OrderedDict[str, nn.Module] = OrderedDict(stem)
    for i, num_layers in enumerate(blocks):
        modules[f"denseblock{i + 1}"] = DenseBlock(num_layers, channels, growth_rate, bottleneck, drop_rate)
        channels += num_layers * growth_rate
        if i != len(blocks) - 1:
            out = int(compression * channels)  # floor(theta m), as in the paper and torchvision (m // 2)
            modules[f"transition{i + 1}"] = tv._Transition(channels, out)
            channels = out
    modules["norm5"] = nn.BatchNorm2d(channels)
    modules["relu5"] = nn.ReLU(inplace=True)  # torchvision applies it in forward; here the map is the feature
    features = nn.Sequential(modules)
    for m in features.modules():  # torchvision's initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features, channels


class DenseNet(nn.Module):
    """DenseNet / DenseNet-BC for small inputs, or torchvision's ImageNet DenseNets.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); picks the imagenet stem.
        arch: cifar (three blocks, the paper's Sec. 3-4) or imagenet (torchvision's).
        depth: cifar: L, 3n + 4 (basic) or 6n + 4 (bottleneck); imagenet: 121, 169, 201 or 161.
        growth_rate: k, maps added by each layer (cifar; the imagenet depth fixes its own).
        bottleneck: 1x1 bottleneck to 4k channels before each 3x3 conv (the B of DenseNet-BC; cifar).
        compression: theta, the share of channels a transition keeps (0.5 is the C of DenseNet-BC; cifar).
        drop_rate: dropout after each dense layer (0.2 in the paper without data augmentation).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        arch: str = "cifar",
        depth: int = 100,
        growth_rate: int = 12,
        bottleneck: bool = True,
        compression: float = 0.5,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not allowed: choose one of {', '.join(ARCHS)}")
        if growth_rate < 1:
            raise ValueError(f"growth_rate={growth_rate!r} is not allowed: maps added per layer, >= 1")
        if not 0 < compression <= 1:
            raise ValueError(f"compression={compression!r} is not allowed: a share of channels in (0, 1]")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate={drop_rate!r} is not allowed: a probability in [0, 1)")
        if arch == "imagenet":
            if depth not in IMAGENET:
                raise ValueError(f"depth={depth!r} is not allowed: ImageNet DenseNet depth must be 121, 169, 201 "
                                 "or 161")
            growth_rate, blocks, width = IMAGENET[depth]
            bottleneck, compression = True, 0.5
            if image_size < IMAGENET_MIN_SIZE:
                stem = [("conv0", nn.Conv2d(in_channels, width, 3, padding=1, bias=False))]
            else:
                stem = [("conv0", nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False))]
            stem += [("norm0", nn.BatchNorm2d(width)), ("relu0", nn.ReLU(inplace=True))]
            if image_size >= IMAGENET_MIN_SIZE:
                stem.append(("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)))
        else:
            per_layer = 6 if bottleneck else 3  # convs per dense layer (2 with bottleneck) x 3 blocks
            n, rest = divmod(depth - 4, per_layer)
            if rest or n < 1:
                kind = "6n+4 with bottleneck (DenseNet-BC: 100, 190, 250)" if bottleneck else "3n+4 (40, 100)"
                raise ValueError(f"depth={depth!r} is not allowed: CIFAR DenseNet depth must be {kind}")
            blocks = (n, n, n)
            width = 2 * growth_rate if bottleneck and compression < 1 else 16  # the paper's stem widths
            stem = [("conv0", nn.Conv2d(in_channels, width, 3, padding=1, bias=False))]
        self.features, channels = _dense_stages(stem, width, blocks, growth_rate, bottleneck, compression,
                                                drop_rate)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
        nn.init.zeros_(self.classifier[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C, h, w) -> (B, num_classes)
