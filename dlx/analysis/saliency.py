"""Projections of one unit back to the input: plain gradients, deconvnet and guided backpropagation.

All three are a backward pass from one scalar to the input image; they differ only in what the backward
pass does at each ReLU, y = max(x, 0), given the gradient g arriving from above:

    gradient  (Simonyan et al. 2014):     g * [x > 0]           the true derivative: the forward mask
    deconvnet (Zeiler & Fergus 2014):     max(g, 0)             a ReLU on the signal coming down; no forward mask
    guided    (Springenberg et al. 2015): max(g, 0) * [x > 0]   both: only what is positive in both directions

(Max pooling routes the gradient to the maximum's position in all three: Zeiler and Fergus's "switches".)
The rules are installed as backward hooks on every nn.ReLU module, for one backward pass, and removed
afterwards, in-place flags restored, so the model computes exactly what it did before.

The scalar is a class logit (the predicted class, or one chosen) or a unit inside the net: the strongest
activation of channel `unit` of layer `layer` in each image, as Zeiler and Fergus project the strongest
activation of a feature map with all others set to zero.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dlx.errors import DlxError

RULES = ("gradient", "deconvnet", "guided")


def _deconvnet(module: nn.Module, grad_input: tuple[Tensor, ...], grad_output: tuple[Tensor, ...]) -> tuple[Tensor]:
    return (grad_output[0].clamp(min=0),)  # the signal from above, rectified; the forward mask is ignored


def _guided(module: nn.Module, grad_input: tuple[Tensor, ...], grad_output: tuple[Tensor, ...]) -> tuple[Tensor]:
    return (grad_input[0].clamp(min=0),)  # grad_input = g * [x > 0] already; keep its positive part


HOOKS = {"deconvnet": _deconvnet, "guided": _guided}


@contextmanager
def relu_rule(model: nn.Module, rule: str) -> Iterator[None]:
    """Backward passes through `model`'s nn.ReLU modules follow `rule` inside the block, and only there."""
    if rule not in RULES:
        raise DlxError(f"rule {rule!r} is not one of {', '.join(RULES)}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if rule != "gradient" and not relus:
        raise DlxError(f"{rule} needs a net with nn.ReLU modules (the rule replaces their backward pass); "
                       f"{type(model).__name__} has none")
    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for m in relus:
            m.inplace = False  # a backward hook needs the module's output as a tensor of its own
            if rule != "gradient":
                handles.append(m.register_full_backward_hook(HOOKS[rule]))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(relus, inplace, strict=True):
            m.inplace = flag


def project(model: nn.Module, x: Tensor, rule: str, classes: Tensor | None = None, layer: nn.Module | None = None,
            unit: int = 0) -> tuple[Tensor, Tensor]:
    """The input-space map (B, C, H, W) of each image's chosen scalar under `rule`, and the logits (B, K).

    The scalar is the logit of `classes` (B,) (the predicted class when None), or, with `layer`, the largest
    activation of its channel `unit`.
    """
    x = x.detach().clone().requires_grad_(True)
    seen: dict[str, Tensor] = {}
    hook = None
    if layer is not None:
        hook = layer.register_forward_hook(lambda m, i, out: seen.__setitem__("a", out))
    try:
        with torch.enable_grad(), relu_rule(model, rule):
            logits = model(x)  # (B, K)
            if layer is not None:
                a = seen["a"]  # (B, C, h, w) or (B, C)
                if not 0 <= unit < a.shape[1]:
                    raise DlxError(f"--unit {unit} is not a channel of that layer: it has {a.shape[1]}")
                score = a[:, unit].reshape(len(a), -1).amax(1)  # (B,): the strongest activation of the unit per image
            else:
                chosen = logits.argmax(-1) if classes is None else classes
                score = logits.gather(1, chosen[:, None])[:, 0]  # (B,)
            (grad,) = torch.autograd.grad(score.sum(), x)  # images are independent: one pass for the batch
    finally:
        if hook is not None:
            hook.remove()
    return grad.detach(), logits.detach()


def to_image(maps: Tensor) -> Tensor:
    """Signed maps (B, C, H, W) to pixels in [0, 1] per image, 0 at mid-grey (as Springenberg et al. show them)."""
    peak = maps.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (maps / peak + 1) / 2


def figure(run, x: Tensor, maps: dict[str, Tensor], captions: list[str]):  # noqa: ANN001, ANN201 - LoadedRun, PIL
    """Rows of (image, one map per rule) with a caption per row."""
    from dlx.analysis.images import table, to_pil
    from dlx.analysis.loading import display

    pixels = display(run.data, x)
    side = max(96, 4 * x.shape[-1])
    shown = {k: to_image(v) for k, v in maps.items()}
    rows = [[to_pil(pixels[i], side), *(to_pil(shown[k][i], side) for k in maps)] for i in range(len(x))]
    return table(rows, ["image", *maps], [[c, *[""] * len(maps)] for c in captions],
                 title="projections to the input: gradient, deconvnet, guided backpropagation")
