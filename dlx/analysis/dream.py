"""DeepDream (Mordvintsev et al. 2015): change an image so that a layer responds more strongly.

Gradient ascent on the input x of the objective L(x) = mean(a_l(x)^2), the squared activations of
layer l: every pattern the layer already sees a little is amplified. The tricks of the original code:
  - jitter: each step shifts the image by a random offset (and back), so the ascent cannot build
    pixel-grid artefacts that only work at one alignment;
  - normalized step: x <- x + lr * g / mean|g|, a step of fixed size whatever the gradient's scale;
  - octaves: dream at a coarse scale first, then carry the added detail up to finer scales.
Pixels stay in their valid range (the normalized image of [0, 1] pixels).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.analysis.layers import activation


def objective(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """mean(a_l(x)^2): the layer's mean squared activation."""
    a, _ = activation(model, layer, x)
    return a.float().pow(2).mean()


def ascend(model: nn.Module, layer: nn.Module, x: Tensor, steps: int, lr: float, jitter: int,
           lo: Tensor, hi: Tensor, generator: torch.Generator) -> Tensor:
    """`steps` jittered, normalized gradient-ascent steps on x (1, C, H, W), kept inside [lo, hi]."""
    x = x.detach().clone()
    for _ in range(steps):
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator)) if jitter else (0, 0)
        shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model, layer, shifted), shifted)
        grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
        x = x + lr * grad / grad.abs().mean().clamp_min(1e-8)
        x = torch.maximum(torch.minimum(x, hi), lo)
    return x


def deep_dream(model: nn.Module, layer: nn.Module, x: Tensor, steps: int = 40, lr: float = 0.02, jitter: int = 1,
               octaves: int = 1, octave_scale: float = 1.4, lo: Tensor | None = None, hi: Tensor | None = None,
               seed: int = 0) -> Tensor:
    """Dream on x (1, C, H, W) over `octaves` scales, smallest first; returns the dreamed image.

    Args:
        steps: ascent steps per octave.
        lr: step size in units of the normalized gradient (about the pixel change per step).
        jitter: largest random shift in pixels (0 = none).
        octaves: number of scales; the smallest is octave_scale**-(octaves - 1) of the input size.
        lo, hi: per-channel bounds (1, C, 1, 1) of valid inputs; unbounded when None.
    """
    lo = lo if lo is not None else torch.full_like(x[:, :, :1, :1], -float("inf"))
    hi = hi if hi is not None else torch.full_like(x[:, :, :1, :1], float("inf"))
    g = torch.Generator().manual_seed(seed)
    size = x.shape[-2:]
    sizes = [tuple(max(4, round(s / octave_scale**i)) for s in size) for i in reversed(range(octaves))]
    detail = torch.zeros_like(F.interpolate(x, size=sizes[0], mode="bilinear", align_corners=False))
    for octave_size in sizes:
        base = F.interpolate(x, size=octave_size, mode="bilinear", align_corners=False) if octave_size != size else x
        detail = F.interpolate(detail, size=octave_size, mode="bilinear", align_corners=False)
        dreamed = ascend(model, layer, base + detail, steps, lr, jitter, lo, hi, g)
        detail = dreamed - base
    return dreamed.detach()
