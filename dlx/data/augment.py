"""Batched, on-device augmentation: no per-sample Python (the airbench recipe).

Every function takes a float batch (B, C, H, W) already on the training device and draws its
randomness from the global torch RNG, whose state the checkpoint keeps, so resume is exact.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(x: Tensor, padding: int) -> Tensor:
    """Random crop of size (H, W) from the batch zero-padded by `padding` on each side.

    Implemented as two gathers with per-sample offsets, so one kernel serves the whole batch.
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_flip(x: Tensor) -> Tensor:
    """Horizontal flip of a random half of the batch."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: Tensor, size: int) -> Tensor:
    """Zero one random `size` x `size` square per image (DeVries and Taylor, 2017)."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)  # (B, H, W)
    return x.masked_fill(inside[:, None], 0.0)
