"""Residual networks (He et al. 2015) and the plain nets they were compared with.

`arch: cifar` is the CIFAR net of the paper's Sec. 4.2: a 3x3 conv stem, three stages of n blocks on
maps of width, 2 width and 4 width channels (strides 1, 2, 2), global average pooling, one linear layer.
With basic blocks (two 3x3 convs) depth = 6n + 2 (20, 32, 44, 56, 110); with bottleneck blocks
(1x1, 3x3, 1x1 with 4x expansion, as ResNet-164 of He et al. 2016) depth = 9n + 2. Variants, all data:
  - shortcut A: identity, subsampled by the stride, with zero-padded extra channels; no parameters
    (the paper's CIFAR choice, so a plain net has exactly as many parameters). B: 1x1 projection
    where the shape changes, identity elsewhere.
  - residual: false drops the shortcuts: the plain net of the degradation experiment (conf/model/plain.yaml).
  - preact: BN -> ReLU -> conv ordering with a clean identity path (He et al. 2016, "Identity Mappings").
  - stochastic_depth: block l of L is skipped in training with probability l / L * stochastic_depth
    (Huang et al. 2016, linear decay; 0.5 is their p_L = 0.5). A kept branch is scaled by 1 / (1 - p)
    (inverted, like dropout), so eval is the plain sum of all blocks: deterministic, nothing to rescale.

`arch: imagenet` is torchvision's ResNet-18/34/50/101/152 (its blocks and builder; parameter counts equal
torchvision's), repackaged as `features` + `classifier`. Below 64x64 inputs the 7x7/2 stem conv and the
max pool would shrink a CIFAR image to 8x8 before the first stage, so the stem becomes a 3x3/1 conv
without max pool (the usual CIFAR adaptation); the first conv takes `in_channels`.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv

from dlx.errors import ConfigError

ARCHS = ("cifar", "imagenet")
BLOCKS = {"basic": 1, "bottleneck": 4}  # block -> expansion (output channels / stage width)
SHORTCUTS = ("A", "B")
# torchvision's ImageNet nets: depth -> (block, blocks per stage).
IMAGENET_LAYERS = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
IMAGENET_MIN_SIZE = 64  # below this the ImageNet stem (7x7/2 conv + max pool) is replaced by a 3x3/1 conv


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding; no bias, a BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution; no bias, a BatchNorm follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity subsampled by `stride`, extra channels zero-padded; no parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.extra, self.stride = out_planes - in_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H / s, W / s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C_out, H / s, W / s)


def _building_block(in_planes: int, planes: int, stride: int, preact: bool) -> nn.Sequential:
    """The paper's "building block" branch: two 3x3 convs (Fig. 2 left). Output: `planes` channels.

    Pre-activated (He et al. 2016, Fig. 4e), the block applies the first BN-ReLU and the branch ends in
    a conv; post-activated, the branch ends in BN and the block applies ReLU after the sum.
    """
    layers = [conv3x3(in_planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(True), conv3x3(planes, planes)]
    if not preact:
        layers.append(nn.BatchNorm2d(planes))
    return nn.Sequential(*layers)


def _bottleneck(in_planes: int, planes: int, stride: int, preact: bool) -> nn.Sequential:
    """The "bottleneck" branch: 1x1 reduce, 3x3 (strided), 1x1 expand to 4 `planes` (Fig. 5 right)."""
    out = planes * BLOCKS["bottleneck"]
    layers = [
        conv1x1(in_planes, planes),
        nn.BatchNorm2d(planes),
        nn.ReLU(True),
        conv3x3(planes, planes, stride),
        nn.BatchNorm2d(planes),
        nn.ReLU(True),
        conv1x1(planes, out),
    ]
    if not preact:
        layers.append(nn.BatchNorm2d(out))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """One block: post-activation relu(shortcut(x) + F(x)) or pre-activation shortcut(x) + F(relu(bn(x))).

    Args:
        in_planes: input channels.
        planes: stage width; the block outputs planes * expansion channels.
        stride: 2 on the first block of a downsampling stage.
        block: basic or bottleneck.
        preact: pre-activation ordering (He et al. 2016).
        residual: false drops the shortcut (plain net).
        shortcut: A (zero-pad identity) or B (projection) where the shape changes.
        drop_prob: probability of skipping the residual branch in training (stochastic depth).
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        block: str,
        preact: bool,
        residual: bool,
        shortcut: str,
        drop_prob: float,
    ):
        super().__init__()
        out_planes = planes * BLOCKS[block]
        self.preact, self.residual, self.drop_prob = preact, residual, drop_prob
        # Pre-activation: BN-ReLU of the input, shared by the branch and a projection shortcut.
        self.pre = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(True)) if preact else nn.Identity()
        self.branch = (_building_block if block == "basic" else _bottleneck)(in_planes, planes, stride, preact)
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or in_planes != out_planes):
            if shortcut == "A":
                self.shortcut = ShortcutA(in_planes, out_planes, stride)
            elif preact:  # the next block's BN normalizes the sum, so the projection needs none
                self.shortcut = conv1x1(in_planes, out_planes, stride)
            else:
                self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
        # Post-activation: ReLU after the sum; not in place, since a dropped block passes x itself through.
        self.post = nn.Identity() if preact else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if not self.residual:
            return self.post(self.branch(self.pre(x)))
        dropped = self.training and self.drop_prob > 0 and bool(torch.rand(()) < self.drop_prob)
        projected = isinstance(self.shortcut, nn.Conv2d)  # a projection sees the pre-activated input
        # A dropped block computes only its shortcut: no branch, and no pre-activation unless the projection
        # needs it (its BN statistics then see only the batches the block trains on).
        h = self.pre(x) if projected or not dropped else x  # (B, C_in, H, W)
        identity = self.shortcut(h if projected else x)  # (B, C_out, H / s, W / s); zero-pad identity: x
        if dropped:
            return self.post(identity)
        if self.training and self.drop_prob > 0:
            return self.post(identity + self.branch(h) / (1 - self.drop_prob))  # inverted scaling, like dropout
        return self.post(identity + self.branch(h))


def _cifar_features(
    in_channels: int,
    depth: int,
    width: int,
    block: str,
    preact: bool,
    residual: bool,
    shortcut: str,
    stochastic_depth: float,
) -> tuple[nn.Sequential, int]:
    """Stem + 3 stages (+ final BN-ReLU when pre-activated). Returns the module and its output channels."""
    layers_per_block = 2 if block == "basic" else 3
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest or n < 1:
        depths = ", ".join(str(3 * layers_per_block * k + 2) for k in (1, 3, 5, 7, 9, 18))
        raise ConfigError(
            "model.depth", depth, f"CIFAR ResNet depth with {block} blocks must be {3 * layers_per_block}n+2 ({depths})"
        )
    stem: list[nn.Module] = [conv3x3(in_channels, width)]
    if not preact:  # pre-activated nets start their first block with BN-ReLU instead
        stem += [nn.BatchNorm2d(width), nn.ReLU(True)]
    modules: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(*stem))
    total, index, in_planes = 3 * n, 0, width
    for stage in range(3):
        planes, blocks = width * 2**stage, []
        for i in range(n):
            index += 1  # linear decay rule: block l of L is dropped with probability l / L * p
            stride = 2 if stage > 0 and i == 0 else 1
            drop = stochastic_depth * index / total
            blocks.append(ResidualBlock(in_planes, planes, stride, block, preact, residual, shortcut, drop))
            in_planes = planes * BLOCKS[block]
        modules[f"layer{stage + 1}"] = nn.Sequential(*blocks)
    if preact:  # the sum of the last block is not normalized yet
        modules["post"] = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(True))
    features = nn.Sequential(modules)
    for m in features.modules():  # He et al. 2015 initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features, in_planes


def _imagenet_features(in_channels: int, depth: int, image_size: int) -> tuple[nn.Sequential, int]:
    """torchvision's ResNet body with the stem adapted to `in_channels` and small inputs."""
    block, layers = IMAGENET_LAYERS[depth]
    tv_block = tv.BasicBlock if block == "basic" else tv.Bottleneck
    net = tv.ResNet(tv_block, layers, num_classes=1)  # its fc is replaced by our classifier
    if image_size < IMAGENET_MIN_SIZE:  # 32x32 -> 32x32 into layer1 instead of 8x8
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names)), net.fc.in_features


class ResNet(nn.Module):
    """CIFAR ResNet-6n+2 / plain net / pre-activation / stochastic depth, or torchvision's ImageNet ResNet.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        depth: cifar: 6n+2 (basic) or 9n+2 (bottleneck); imagenet: 18, 34, 50, 101 or 152.
        arch: cifar or imagenet.
        block: basic or bottleneck; None = basic for cifar, the depth's block for imagenet.
        width: cifar stem/first-stage channels (16 in the paper); imagenet is 64 (None = the paper's).
        shortcut: A (zero-pad identity) or B (projection); None = A for cifar, B for imagenet.
        residual: false builds the plain counterpart (cifar only).
        preact: pre-activation blocks (cifar only).
        stochastic_depth: drop probability of the last block, linearly less before it (cifar only).
        dropout: drop probability before the final linear layer (0 in the paper).
        image_size: input side (from `data.size`); picks the imagenet stem.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 20,
        arch: str = "cifar",
        block: str | None = None,
        width: int | None = None,
        shortcut: str | None = None,
        residual: bool = True,
        preact: bool = False,
        stochastic_depth: float = 0.0,
        dropout: float = 0.0,
        image_size: int = 32,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError("model.arch", arch, f"choose one of {', '.join(ARCHS)}")
        if block is not None and block not in BLOCKS:
            raise ConfigError("model.block", block, f"choose one of {', '.join(BLOCKS)}")
        if shortcut is not None and shortcut not in SHORTCUTS:
            raise ConfigError("model.shortcut", shortcut, "A (zero-pad identity) or B (1x1 projection)")
        if not 0 <= stochastic_depth < 1:
            raise ConfigError("model.stochastic_depth", stochastic_depth, "a drop probability in [0, 1)")
        if stochastic_depth > 0 and not residual:
            raise ConfigError("model.stochastic_depth", stochastic_depth, "needs residual: true (0 for plain nets)")
        if not 0 <= dropout < 1:
            raise ConfigError("model.dropout", dropout, "a probability in [0, 1)")
        self.may_skip_parameters = stochastic_depth > 0  # a dropped block's weights get no gradient (DDP asks)

        if arch == "cifar":
            width = 16 if width is None else width
            if width < 1:
                raise ConfigError("model.width", width, "channels of the first stage, >= 1 (16 in the paper)")
            self.features, channels = _cifar_features(
                in_channels, depth, width, block or "basic", preact, residual, shortcut or "A", stochastic_depth
            )
        else:
            if depth not in IMAGENET_LAYERS:
                raise ConfigError("model.depth", depth, "ImageNet ResNet depth must be 18, 34, 50, 101 or 152")
            for key, value, allowed in (
                ("block", block, (None, IMAGENET_LAYERS[depth][0])),
                ("width", width, (None, 64)),
                ("shortcut", shortcut, (None, "B")),
                ("residual", residual, (True,)),
                ("preact", preact, (False,)),
                ("stochastic_depth", stochastic_depth, (0, 0.0)),
            ):
                if value not in allowed:
                    raise ConfigError(
                        f"model.{key}", value, f"arch=imagenet (torchvision's ResNet-{depth}) allows {allowed}"
                    )
            self.features, channels = _imagenet_features(in_channels, depth, image_size)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C, h, w) -> (B, num_classes)
