"""Input corruptions of denoising autoencoders (Vincent et al. 2008, 2010). The loss always compares the
reconstruction of the corrupted input with the clean one.

    gaussian:    x + level * N(0, 1)                         (in the data's units)
    masking:     a fraction `level` of the values set to the channel's minimum (black)
    salt_pepper: a fraction `level` of the values set to the channel's min or max (half each)
"""

import torch
from torch import Tensor

from dlx.errors import ConfigError

NOISES = ("none", "gaussian", "masking", "salt_pepper")


def check_noise(noise: str, level: float) -> None:
    if noise not in NOISES:
        raise ConfigError("task.noise", noise, f"choose one of {', '.join(NOISES)}")
    if noise in ("masking", "salt_pepper") and not 0 <= level <= 1:
        raise ConfigError("task.noise_level", level, f"is the fraction of values {noise} changes: must be in [0, 1]")
    if level < 0:
        raise ConfigError("task.noise_level", level, "must be >= 0")


def corrupt(x: Tensor, noise: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """A corrupted copy of x (B, C, H, W) (or (B, D)); x itself is left alone."""
    if noise == "none" or level == 0:
        return x
    if noise == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 2 else [0, 1]
    lo = x.amin(dim=dims, keepdim=True)  # per channel: the darkest value of the batch
    hit = torch.rand(x.shape, generator=generator, device=x.device) < level
    if noise == "masking":
        return torch.where(hit, lo, x)
    hi = x.amax(dim=dims, keepdim=True)
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return torch.where(hit, torch.where(salt, hi, lo), x)
