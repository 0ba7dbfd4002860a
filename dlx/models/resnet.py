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
  - stochastic_depth: block l of L is skipped in training (for the whole mini-batch) with probability
    1 - p_l = l / L * stochastic_depth (Huang et al. 2016, linear decay; 0.5 gives their p_L = 0.5).
    stochastic_depth_mode picks where the expectation is matched:
      paper     (Huang et al. 2016, Eq. 5): a kept branch is added unscaled in training; at test time
                every branch is multiplied by its survival probability p_l.
      inverted  (torchvision.ops.stochastic_depth, like inverted dropout): a kept branch is scaled by
                1 / p_l in training; at test time the plain sum of all blocks.
  - norm: the normalization layer of every conv (batch in the paper; layer, group, instance, none;
    see dlx.models.norm).

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

from dlx.models.norm import check_norm, init_norms, norm2d
from dlx.tasks.base import Declares, ModelSpec

ARCHS = ("cifar", "imagenet")
BLOCKS = {"basic": 1, "bottleneck": 4}  # block -> expansion (output channels / stage width)
SHORTCUTS = ("A", "B")
STOCHASTIC_DEPTH_MODES = ("paper", "inverted")
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


def _building_block(in_planes: int, planes: int, stride: int, preact: bool, norm: str) -> nn.Sequential:
    """The paper's "building block" branch: two 3x3 convs (Fig. 2 left). Output: `planes` channels.

    Pre-activated (He et al. 2016, Fig. 4e), the block applies the first BN-ReLU and the branch ends in
    a conv; post-activated, the branch ends in BN and the block applies ReLU after the sum.
    """
    layers = [conv3x3(in_planes, planes, stride), norm2d(norm, planes), nn.ReLU(True), conv3x3(planes, planes)]
    if not preact:
        layers.append(norm2d(norm, planes))
    return nn.Sequential(*layers)


def _bottleneck(in_planes: int, planes: int, stride: int, preact: bool, norm: str) -> nn.Sequential:
    """The "bottleneck" branch: 1x1 reduce, 3x3 (strided), 1x1 expand to 4 `planes` (Fig. 5 right)."""
    out = planes * BLOCKS["bottleneck"]
    layers = [
        conv1x1(in_planes, planes),
        norm2d(norm, planes),
        nn.ReLU(True),
        conv3x3(planes, planes, stride),
        norm2d(norm, planes),
        nn.ReLU(True),
        conv1x1(planes, out),
    ]
    if not preact:
        layers.append(norm2d(norm, out))
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
        drop_prob: probability of skipping the residual branch in training (stochastic depth), 1 - p_l.
        inverted: scale a kept branch by 1 / p_l in training instead of by p_l at test time.
        norm: normalization layer name (dlx.models.norm).
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
        inverted: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        out_planes = planes * BLOCKS[block]
        self.preact, self.residual, self.drop_prob, self.inverted = preact, residual, drop_prob, inverted
        # Pre-activation: BN-ReLU of the input, shared by the branch and a projection shortcut.
        self.pre = nn.Sequential(norm2d(norm, in_planes), nn.ReLU(True)) if preact else nn.Identity()
        branch = _building_block if block == "basic" else _bottleneck
        self.branch = branch(in_planes, planes, stride, preact, norm)
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or in_planes != out_planes):
            if shortcut == "A":
                self.shortcut = ShortcutA(in_planes, out_planes, stride)
            elif preact:  # the next block's BN normalizes the sum, so the projection needs none
                self.shortcut = conv1x1(in_planes, out_planes, stride)
            else:
                self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), norm2d(norm, out_planes))
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
        survival = 1 - self.drop_prob  # p_l
        if self.drop_prob > 0 and self.training and self.inverted:
            return self.post(identity + self.branch(h) / survival)  # inverted: E[b_l / p_l] = 1 in training
        if self.drop_prob > 0 and not self.training and not self.inverted:
            return self.post(identity + survival * self.branch(h))  # the paper's test rule: p_l f_l(x) + x
        return self.post(identity + self.branch(h))  # paper training (kept: unscaled) or no stochastic depth


def _cifar_features(
    in_channels: int,
    depth: int,
    width: int,
    block: str,
    preact: bool,
    residual: bool,
    shortcut: str,
    stochastic_depth: float,
    inverted: bool,
    norm: str,
) -> tuple[nn.Sequential, int]:
    """Stem + 3 stages (+ final BN-ReLU when pre-activated). Returns the module and its output channels."""
    layers_per_block = 2 if block == "basic" else 3
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest or n < 1:
        depths = ", ".join(str(3 * layers_per_block * k + 2) for k in (1, 3, 5, 7, 9, 18))
        raise ValueError(
            f"depth={depth!r} is not allowed: CIFAR ResNet depth with {block} blocks must be "
            f"{3 * layers_per_block}n+2 ({depths})"
        )
    stem: list[nn.Module] = [conv3x3(in_channels, width)]
    if not preact:  # pre-activated nets start their first block with BN-ReLU instead
        stem += [norm2d(norm, width), nn.ReLU(True)]
    modules: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(*stem))
    total, index, in_planes = 3 * n, 0, width
    for stage in range(3):
        planes, blocks = width * 2**stage, []
        for i in range(n):
            index += 1  # linear decay rule: block l of L is dropped with probability l / L * p
            stride = 2 if stage > 0 and i == 0 else 1
            drop = stochastic_depth * index / total
            blocks.append(
                ResidualBlock(in_planes, planes, stride, block, preact, residual, shortcut, drop, inverted, norm)
            )
            in_planes = planes * BLOCKS[block]
        modules[f"layer{stage + 1}"] = nn.Sequential(*blocks)
    if preact:  # the sum of the last block is not normalized yet
        modules["post"] = nn.Sequential(norm2d(norm, in_planes), nn.ReLU(True))
    features = nn.Sequential(modules)
    for m in features.modules():  # He et al. 2015 initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    init_norms(features)
    return features, in_planes


def _imagenet_features(in_channels: int, depth: int, image_size: int, norm: str) -> tuple[nn.Sequential, int]:
    """torchvision's ResNet body with the stem adapted to `in_channels` and small inputs."""
    block, layers = IMAGENET_LAYERS[depth]
    tv_block = tv.BasicBlock if block == "basic" else tv.Bottleneck
    # torchvision calls norm_layer(channels) for every normalization layer
    net = tv.ResNet(tv_block, layers, num_classes=1, norm_layer=lambda c: norm2d(norm, c))
    if image_size < IMAGENET_MIN_SIZE:  # 32x32 -> 32x32 into layer1 instead of 8x8
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names)), net.fc.in_features


class ResNet(Declares, nn.Module):
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
        stochastic_depth_mode: paper (kept branches unscaled in training, p_l-scaled at test) or inverted
            (1 / p_l-scaled in training, unscaled at test).
        norm: batch (the paper), layer, group, instance or none (dlx.models.norm).
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
        stochastic_depth_mode: str = "paper",
        norm: str = "batch",
        dropout: float = 0.0,
        image_size: int = 32,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not allowed: choose one of {', '.join(ARCHS)}")
        if block is not None and block not in BLOCKS:
            raise ValueError(f"block={block!r} is not allowed: choose one of {', '.join(BLOCKS)}")
        if shortcut is not None and shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is not allowed: A (zero-pad identity) or B (1x1 projection)")
        if not 0 <= stochastic_depth < 1:
            raise ValueError(f"stochastic_depth={stochastic_depth!r} is not allowed: a drop probability in [0, 1)")
        if stochastic_depth > 0 and not residual:
            raise ValueError(
                f"stochastic_depth={stochastic_depth!r} is not allowed: needs residual: true (0 for plain nets)"
            )
        if stochastic_depth_mode not in STOCHASTIC_DEPTH_MODES:
            raise ValueError(
                f"stochastic_depth_mode={stochastic_depth_mode!r} is not allowed: "
                "paper (Huang et al. 2016: p_l-scaled at test) or inverted (1 / p_l-scaled in training)"
            )
        check_norm(norm)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        self.skips_parameters = stochastic_depth > 0  # a dropped block's weights get no gradient (model_spec)

        if arch == "cifar":
            width = 16 if width is None else width
            if width < 1:
                raise ValueError(f"width={width!r} is not allowed: channels of the first stage, >= 1 (16 in the paper)")
            inverted = stochastic_depth_mode == "inverted"
            self.features, channels = _cifar_features(
                in_channels, depth, width, block or "basic", preact, residual, shortcut or "A", stochastic_depth,
                inverted, norm,
            )
        else:
            if depth not in IMAGENET_LAYERS:
                raise ValueError(
                    f"depth={depth!r} is not allowed: "
                    "ImageNet ResNet depth must be 18, 34, 50, 101 or 152"
                )
            for key, value, allowed in (
                ("block", block, (None, IMAGENET_LAYERS[depth][0])),
                ("width", width, (None, 64)),
                ("shortcut", shortcut, (None, "B")),
                ("residual", residual, (True,)),
                ("preact", preact, (False,)),
                ("stochastic_depth", stochastic_depth, (0, 0.0)),
            ):
                if value not in allowed:
                    raise ValueError(
                        f"{key}={value!r} is not allowed: arch=imagenet (torchvision's ResNet-{depth}) allows {allowed}"
                    )
            self.features, channels = _imagenet_features(in_channels, depth, image_size, norm)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

    def model_spec(self) -> ModelSpec:
        return ModelSpec(skips_parameters=self.skips_parameters)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C, h, w) -> (B, num_classes)
