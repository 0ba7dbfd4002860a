"""Reaching inside a model by layer name: find a submodule, read its output with a forward hook."""

from torch import Tensor, nn

from dlx.errors import DlxError


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (as in `model.named_modules()`); one clear error listing choices."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        convs = layer_names(model)
        raise DlxError(f"--layer {name!r} is not a layer of {type(model).__name__}; "
                       f"e.g. {', '.join(convs[:12])}{' ...' if len(convs) > 12 else ''}")
    return modules[name]


def activation(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The output of `layer` and the model's output for input `x` (one forward pass with a hook)."""
    outs, y = activations(model, [layer], x)
    return outs[0], y


def activations(model: nn.Module, layers: list[nn.Module], x: Tensor) -> tuple[list[Tensor], Tensor]:
    """The outputs of several layers (in the order given) and the model's output, in one forward pass.

    Each output is cloned as it is produced: a following in-place ReLU would otherwise overwrite it
    (the clone keeps the layer's own values and stays differentiable).
    """
    seen: dict[int, Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        def hook(_m: nn.Module, _inp: object, out: Tensor, i: int = i) -> None:
            seen[i] = (out[0] if isinstance(out, tuple) else out).clone()

        handles.append(layer.register_forward_hook(hook))
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return [seen[i] for i in range(len(layers))], y


def layer_names(model: nn.Module) -> list[str]:
    """Names of the conv layers, activations and blocks, the usual choices for --layer."""
    return [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d | nn.ReLU | nn.Sequential)]
