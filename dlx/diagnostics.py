"""Activation histograms: what each layer outputs, seen at every validation (`trainer.activation_histograms`).

The lectures read these next to the gradient norms (`trainer.log_grad_norms`): saturated sigmoid units
pile up at 0 and 1, dead ReLUs at 0, exploding activations spread wider layer after layer.

Forward hooks sit on the model's top-level children; a top-level `nn.Sequential` (an MLP's hidden
layers, a ResNet's stem and stages, a GAP classifier head) is opened one level, so the histograms
follow the depth of the net. The hooks keep the output of the first validation batch only (at most
`MAX_SAMPLES` samples of it) and write `activations/<layer>` histograms when validation ends.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

MAX_SAMPLES = 64  # samples of the first batch kept per layer: enough for a histogram, cheap on CIFAR maps


def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the top-level children, with top-level Sequentials opened one level."""
    layers = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            layers.extend((f"{name}.{sub}", m) for sub, m in child.named_children())
        else:
            layers.append((name, child))
    return layers


def first_tensor(y: Any) -> Tensor | None:
    """The output tensor of a layer; the first tensor of a tuple (e.g. an LSTM's (out, (h, c)))."""
    if isinstance(y, Tensor):
        return y
    if isinstance(y, list | tuple):
        for v in y:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


@contextmanager
def activation_histograms(model: nn.Module, writer: Any, step: int) -> Iterator[dict[str, Tensor]]:
    """Record each watched layer's output on the first batch run inside the block; write histograms after.

    Args:
        model: the net being evaluated.
        writer: a TensorBoard SummaryWriter, or None to do nothing (option off, or not the main process).
        step: the global step the histograms are written at.

    Yields:
        name -> kept activations (float, on the CPU), filled while the block runs.
    """
    kept: dict[str, Tensor] = {}
    if writer is None:
        yield kept
        return

    def keep(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, y: Any) -> None:  # returns None: the output is unchanged
            t = first_tensor(y)
            if name not in kept and t is not None:
                kept[name] = t[:MAX_SAMPLES].detach().float().cpu()

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in watched_layers(model)]
    try:
        yield kept
    finally:
        for h in handles:
            h.remove()
    for name, t in kept.items():
        writer.add_histogram(f"activations/{name}", t, step)
