"""The normalization choice of the conv families: one name -> one layer over a (B, C, H, W) map.

    batch     BatchNorm2d (Ioffe & Szegedy 2015): statistics over (B, H, W) per channel, running averages
              for eval.
    layer     Layer norm of a conv map (Ba et al. 2016): statistics over (C, H, W) per sample, with a
              per-channel scale and shift; GroupNorm with one group, as Wu & He (2018) define it.
    group     GroupNorm (Wu & He 2018): statistics over (C / G, H, W) per sample and group; G = 32, their
              default, where C >= 64 allows it, else the largest divisor of C up to 32 that leaves at least
              two channels per group (one channel per group would be instance norm).
    instance  InstanceNorm2d (Ulyanov et al. 2016) with a per-channel scale and shift: statistics over
              (H, W) per sample and channel.
    none      no normalization (the original VGG, AlexNet, LeNet).

Only batch norm keeps running statistics; the others compute the same thing in training and eval.
"""

from torch import nn

NORMS = ("batch", "layer", "group", "instance", "none")
GROUPS = 32  # Wu & He 2018's default number of groups


def check_norm(norm: str) -> None:
    """Raise ValueError naming the `norm` argument when it is not one of NORMS."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not allowed: choose one of {', '.join(NORMS)}")


def group_count(channels: int) -> int:
    """GroupNorm's G for `channels`: the largest divisor of `channels` up to 32 with >= 2 channels per group."""
    return max([g for g in range(1, min(GROUPS, channels // 2) + 1) if channels % g == 0], default=1)


def norm2d(norm: str, channels: int) -> nn.Module:
    """The layer `norm` names for a (B, `channels`, H, W) map; nn.Identity for none."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def init_norms(module: nn.Module) -> None:
    """Unit scale and zero shift for every normalization layer in `module` (as torchvision initializes BN)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
