"""Pictures from tensors: display ranges, colour maps, heat-map overlays and labelled grids (PIL).

Tensors are images (C, H, W) with C = 1 or 3, values in [0, 1] unless said otherwise. Small images
(digits are 8x8) are enlarged with nearest-neighbour sampling so each pixel stays a visible square.
"""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from dlx.analysis.plot import font

# Anchor colours of a perceptually ordered map (close to matplotlib's "inferno"), interpolated linearly.
_INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                     [250, 193, 39], [252, 255, 164]], dtype=float) / 255
# Blue - white - red for signed values (weights, eigen-images).
_DIVERGING = np.array([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]], dtype=float) / 255


def colormap(values: Tensor | np.ndarray, diverging: bool = False) -> np.ndarray:
    """Map values in [0, 1] (H, W) to RGB (H, W, 3) floats in [0, 1]."""
    anchors = _DIVERGING if diverging else _INFERNO
    v = np.clip(np.asarray(values, dtype=float), 0, 1) * (len(anchors) - 1)
    i = np.minimum(v.astype(int), len(anchors) - 2)
    t = (v - i)[..., None]
    return anchors[i] * (1 - t) + anchors[i + 1] * t


def minmax(x: Tensor, dims: tuple[int, ...] | None = None) -> Tensor:
    """Scale to [0, 1] over `dims` (all when None); a constant tensor maps to 0.5."""
    lo = x.amin(dim=dims, keepdim=True) if dims else x.min()
    hi = x.amax(dim=dims, keepdim=True) if dims else x.max()
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), torch.full_like(x, 0.5))


def symmetric(x: Tensor) -> Tensor:
    """Signed values to [0, 1] with 0 at 0.5 (for diverging colour maps)."""
    return (x / x.abs().max().clamp_min(1e-12) + 1) / 2


def to_pil(img: Tensor | np.ndarray, min_side: int = 0) -> Image.Image:
    """(C, H, W) tensor or (H, W, 3)/(H, W) array in [0, 1] -> PIL image, enlarged to at least `min_side`."""
    if isinstance(img, Tensor):
        img = img.detach().float().cpu()
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        img = img.numpy()
    arr = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")
    if min_side and min(pil.size) < min_side:
        k = -(-min_side // min(pil.size))  # ceil: an integer factor keeps pixels square
        pil = pil.resize((pil.width * k, pil.height * k), Image.Resampling.NEAREST)
    return pil.convert("RGB")


def heat(values: Tensor, min_side: int = 0) -> Image.Image:
    """A map (H, W) in [0, 1] through the colour map."""
    return to_pil(colormap(values.detach().float().cpu().numpy()), min_side)


def overlay(image: Tensor, cam: Tensor, alpha: float = 0.5, min_side: int = 0) -> Image.Image:
    """Heat map `cam` (H, W) in [0, 1] blended over `image` (C, H, W) in [0, 1]."""
    rgb = image.detach().float().cpu()
    rgb = rgb.expand(3, -1, -1) if rgb.shape[0] == 1 else rgb[:3]
    colours = torch.from_numpy(colormap(cam.detach().float().cpu().numpy())).permute(2, 0, 1).float()
    return to_pil((1 - alpha) * rgb + alpha * colours, min_side)


def grid(tiles: Sequence[Image.Image], ncol: int, pad: int = 2, background: str = "white") -> Image.Image:
    """Tiles of equal size in rows of `ncol`."""
    if not tiles:
        return Image.new("RGB", (1, 1), background)
    w, h = tiles[0].size
    nrow = -(-len(tiles) // ncol)
    out = Image.new("RGB", (ncol * (w + pad) + pad, nrow * (h + pad) + pad), background)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncol)
        out.paste(tile.resize((w, h)) if tile.size != (w, h) else tile, (pad + c * (w + pad), pad + r * (h + pad)))
    return out


def table(rows: Sequence[Sequence[Image.Image]], col_titles: Sequence[str] = (),
          captions: Sequence[Sequence[str]] | None = None, pad: int = 4, title: str = "") -> Image.Image:
    """Tiles in rows (each column as wide as its widest tile) with column titles and optional captions."""
    f = font(12)
    ncol = max(len(row) for row in rows)
    widths = [max((row[c].width for row in rows if c < len(row)), default=0) for c in range(ncol)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for c, text in enumerate(col_titles[:ncol]):
        widths[c] = max(widths[c], int(probe.textlength(text, font=f)) + 2)
    heights = [max(t.height for t in row) for row in rows]
    cap_h = 16 if captions else 0
    head = (18 if col_titles else 0) + (20 if title else 0)
    xs = [pad + sum(widths[:c]) + c * pad for c in range(ncol)]
    width = max(xs[-1] + widths[-1] + pad, int(probe.textlength(title, font=f)) + 2 * pad)
    out = Image.new("RGB", (width, head + sum(heights) + len(rows) * (cap_h + pad) + pad), "white")
    d = ImageDraw.Draw(out)
    if title:
        d.text((pad, 3), title, fill="black", font=f)
    for c, text in enumerate(col_titles[:ncol]):
        d.text((xs[c], head - 16), text, fill="black", font=f)
    y = head
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            out.paste(tile, (xs[c], y))
            if captions:
                d.text((xs[c], y + heights[r] + 1), captions[r][c], fill="black", font=f)
        y += heights[r] + cap_h + pad
    return out


def side_by_side(images: Sequence[Image.Image], titles: Sequence[str], min_side: int = 128) -> Image.Image:
    """Images in one row, each enlarged to `min_side`, with a title above each."""
    tiles = []
    for img in images:
        if min(img.size) < min_side:
            k = -(-min_side // min(img.size))
            img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
        tiles.append(img)
    return table([tiles], titles)
