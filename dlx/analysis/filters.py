"""What conv layers learned: the first layer's kernels as pictures, and any layer's feature maps for an input.

For a fully connected net on images the first layer's rows are drawn instead: each a template over
the whole image (the first 64 units).

First-layer kernels act on pixels, so they can be drawn as small images (the Gabor-like edge and
colour-blob detectors of AlexNet's first layer). RGB kernels are drawn in colour; kernels on other
inputs are drawn per input channel with a blue-white-red map (negative, zero, positive weight).
"""

import torch
from torch import Tensor, nn

from dlx.analysis.layers import activation, find_layer
from dlx.errors import DlxError

MAX_MAPS = 64


def first_layer(model: nn.Module, image_shape: tuple[int, int, int]) -> tuple[str, Tensor]:
    """The first layer's weights as image kernels (O, I, kh, kw) and the layer's name.

    A conv net's first Conv2d; for a fully connected net on images, the first Linear's rows, each a
    template over the whole input (C, H, W), the MLP's counterpart of a filter.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m.weight
        if isinstance(m, nn.Linear):
            if m.in_features != image_shape[0] * image_shape[1] * image_shape[2]:
                break
            return name, m.weight[:MAX_MAPS].view(-1, *image_shape)
    raise DlxError(f"{type(model).__name__} has neither a conv layer nor a first linear layer on the image: "
                   "nothing to draw as filters")


def kernel_tiles(weight: Tensor, min_side: int = 40):  # noqa: ANN201 - list of PIL images
    """One picture per kernel (O, I, kh, kw): RGB when I == 3, else one per (output, input) channel pair."""
    from dlx.analysis.images import colormap, minmax, to_pil

    w = weight.detach().float().cpu()
    if w.shape[1] == 3:
        return [to_pil(minmax(k), min_side) for k in w]  # per-kernel contrast, as in Krizhevsky et al. Fig. 3
    scale = w.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)  # per-kernel: 0 stays white
    signed = (w / scale + 1) / 2
    return [to_pil(colormap(signed[o, i].numpy(), diverging=True), min_side)
            for o in range(w.shape[0]) for i in range(min(w.shape[1], 8))]


def kernels_figure(model: nn.Module, image_shape: tuple[int, int, int]):  # noqa: ANN201 - (PIL image, name, shape)
    from dlx.analysis.images import grid, table

    name, weight = first_layer(model, image_shape)
    tiles = kernel_tiles(weight)
    per_row = 16 if weight.shape[1] in (1, 3) else min(weight.shape[1], 8)
    title = f"{name}: {tuple(weight.shape)} kernels"
    return table([[grid(tiles, per_row)]], title=title), name, tuple(weight.shape)


def feature_maps_figure(model: nn.Module, layer_name: str, x: Tensor, pixels: Tensor):  # noqa: ANN201
    """The input image and the first MAX_MAPS channels of `layer_name`'s output (each scaled to [0, 1])."""
    from dlx.analysis.images import grid, heat, minmax, table, to_pil

    with torch.no_grad():
        maps, _ = activation(model, find_layer(model, layer_name), x[:1])
    if maps.dim() != 4:
        raise DlxError(f"layer {layer_name} gives {tuple(maps.shape)}: feature maps need a conv layer (B, C, H, W)")
    shape = tuple(maps.shape[1:])
    maps = minmax(maps[0, :MAX_MAPS].float(), dims=(1, 2))  # (C, h, w)
    side = max(48, 2 * maps.shape[-1])
    tiles = [heat(m, side) for m in maps]
    image = to_pil(pixels[0], 4 * side)
    title = f"{layer_name}: {maps.shape[0]} maps of {shape}"
    return table([[image, grid(tiles, 8)]], ["input", title])
