"""Inverting a representation (Mahendran and Vedaldi 2015): which images does a layer see as the same?

Given the code phi_0 = phi_l(x_0) of an image at layer l, find the image x (pixels in [0, 1]) that
minimizes
    ||phi_l(x) - phi_0||^2 / ||phi_0||^2  +  lambda_tv * TV_beta(x)  +  lambda_alpha * ||x - 1/2||_alpha^alpha
The first term matches the code (normalized, so one lambda fits every layer); the total-variation
prior TV_beta(x) = mean (dx^2 + dy^2)^(beta/2) prefers piecewise smooth images (beta = 2 as in the
paper's experiments); the alpha-norm (alpha = 6) keeps pixels in a natural range. Started from noise,
the reconstruction shows what the layer keeps: nearly the image for early layers, the gist (parts,
colours, layout) for deeper ones.
"""

import torch
from torch import Tensor, nn

from dlx.analysis.layers import activation


def total_variation(x: Tensor, beta: float = 2.0) -> Tensor:
    """TV_beta of images (B, C, H, W): mean over pixels of (dx^2 + dy^2)^(beta/2)."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).clamp_min(1e-12).pow(beta / 2).mean()


def invert(model: nn.Module, layer: nn.Module, pixels: Tensor, to_input, steps: int = 300, lr: float = 0.05,  # noqa: ANN001
           tv_weight: float = 0.05, beta: float = 2.0, alpha_weight: float = 1e-3, alpha: float = 6.0,
           seed: int = 0) -> tuple[Tensor, dict[str, float]]:
    """Reconstruct pixels (1, C, H, W) in [0, 1] from their representation at `layer`.

    Args:
        to_input: maps pixels to the model's input (the run's normalization).
        steps, lr: Adam on the pixels, clamped to [0, 1] after each step.
        tv_weight, beta: strength and exponent of the total-variation prior.
        alpha_weight, alpha: strength and exponent of the alpha-norm prior (on pixels centred at 1/2).

    Returns:
        The reconstruction and its final relative code error, with that of the starting noise.
    """
    with torch.no_grad():
        target, _ = activation(model, layer, to_input(pixels))
    target_norm = target.float().pow(2).sum().clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(pixels.shape, generator=g)).to(pixels.device).clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)

    def code_error(img: Tensor) -> Tensor:
        phi, _ = activation(model, layer, to_input(img))
        return (phi.float() - target.float()).pow(2).sum() / target_norm

    with torch.no_grad():
        start = float(code_error(x))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = code_error(x) + tv_weight * total_variation(x, beta) + alpha_weight * (x - 0.5).abs().pow(alpha).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    with torch.no_grad():
        final = float(code_error(x))
    return x.detach(), {"code_error_start": start, "code_error": final}
