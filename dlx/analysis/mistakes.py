"""What a classifier gets wrong, to look at rather than read: a confusion matrix and the test images it
got wrong with the highest confidence, each captioned with the predicted and the true class.

Written at the end of a classification run (TensorBoard IMAGES and PNGs in the run folder) and by `dlx eval`.
"""

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from dlx.analysis.images import table, to_pil
from dlx.analysis.plot import font

CELL = 34  # pixels per confusion-matrix cell (up to 20 classes; smaller beyond)


def confusion(pred: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    idx = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()


def confusion_figure(cm: np.ndarray, names: list[str], title: str) -> Image.Image:
    """The matrix as shaded cells (share of the true class's samples: white 0, dark blue 1) with the count in
    each cell; true classes down the side, predicted classes along the top."""
    k = cm.shape[0]
    cell = CELL if k <= 20 else max(8, 680 // k)
    f, small = font(13), font(11 if cell >= 24 else 8)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = [n[:14] for n in names]
    label_w = int(max(probe.textlength(n, font=small) for n in shown)) + 10
    left, top = label_w + 24, 60
    width = max(left + k * cell + 16, int(probe.textlength(title, font=f)) + 20, 280)
    img = Image.new("RGB", (width, top + k * cell + 16), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), title, fill="black", font=f)
    d.text((4, 30), "rows: true class", fill="black", font=small)
    d.text((max(left, 110), 30), "columns: predicted class", fill="black", font=small)
    rows = cm.sum(1, keepdims=True).clip(min=1)
    share = cm / rows
    for i in range(k):
        d.text((left - 6 - probe.textlength(shown[i], font=small), top + i * cell + cell / 2 - 6), shown[i],
               fill="black", font=small)
        if cell >= 16:
            label = shown[i][: max(1, cell // 7)]
            d.text((left + i * cell + (cell - probe.textlength(label, font=small)) / 2, top - 14), label,
                   fill="black", font=small)
        for j in range(k):
            v = float(share[i, j])
            colour = tuple(int(255 - v * (255 - c)) for c in (8, 48, 107))  # white -> dark blue
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1]
            d.rectangle(box, fill=colour, outline=(200, 200, 200))
            if cm[i, j] and cell >= 20:
                text = str(int(cm[i, j]))
                d.text((box[0] + (cell - probe.textlength(text, font=small)) / 2, box[1] + cell / 2 - 6), text,
                       fill="white" if v > 0.5 else "black", font=small)
    return img


def confident_mistakes(probs: Tensor, labels: Tensor, n: int = 16) -> Tensor:
    """Indices of the wrong predictions with the highest confidence, most confident first (at most `n`)."""
    conf, pred = probs.max(-1)
    wrong = (pred != labels).nonzero().flatten()
    return wrong[conf[wrong].argsort(descending=True)][:n]


def mistakes_figure(pixels: Tensor, probs: Tensor, labels: Tensor, names: list[str], title: str,
                    ncol: int = 8) -> Image.Image:
    """A grid of images (B, C, H, W) in [0, 1], each captioned 'predicted (confidence) / true'."""
    conf, pred = probs.max(-1)
    tiles, captions = [], []
    for i in range(len(pixels)):
        tile = to_pil(pixels[i, :3] if pixels.shape[1] >= 3 else pixels[i, :1], min_side=88)
        tiles.append(tile)
        captions.append(f"{names[int(pred[i])][:10]} {float(conf[i]):.2f} / {names[int(labels[i])][:10]}")
    rows = [tiles[r : r + ncol] for r in range(0, len(tiles), ncol)] or [[Image.new("RGB", (88, 88), "white")]]
    caps = [captions[r : r + ncol] for r in range(0, len(captions), ncol)] or [["no mistakes"]]
    return table(rows, captions=caps, title=title + "   (caption: predicted confidence / true)")


def inputs_at(batches: Any, indices: list[int]) -> Tensor | None:
    """The inputs (k, C, H, W) at `indices` of a split (in that order, on the CPU) from one pass over its
    batches; None when the inputs are not images."""
    wanted, found, offset = {i: n for n, i in enumerate(indices)}, {}, 0
    for batch in batches:
        x = batch[0]
        if x.dim() != 4:
            return None
        for i in range(offset, offset + len(x)):
            if i in wanted:
                found[wanted[i]] = x[i - offset].cpu()
        offset += len(x)
    return torch.stack([found[n] for n in range(len(indices))]) if found else None


def figures(pixels: Tensor | None, probs: Tensor, labels: Tensor, names: list[str], where: str,
            picked: Tensor) -> tuple[dict[str, Image.Image], dict[str, Any]]:
    """The confusion matrix and the most confidently wrong images of a split, with their numbers.

    Args:
        pixels: (k, C, H, W) the images at `picked` in [0, 1] (display space), or None for non-image inputs.
        probs: (N, K) softmax outputs; labels: (N,) true classes.
        names: the K class names.
        where: what was evaluated, for the titles ("test, best weights (step 300)").
        picked: (k,) indices of the most confidently wrong predictions (`confident_mistakes`).
    """
    k = probs.shape[-1]
    names = list(names) if names and len(names) == k else [str(i) for i in range(k)]
    pred = probs.argmax(-1)
    cm = confusion(pred, labels, k)
    images = {"confusion_matrix": confusion_figure(cm, names, f"confusion matrix, {where}")}
    if pixels is not None and pixels.dim() == 4:
        images["confident_mistakes"] = mistakes_figure(pixels, probs[picked], labels[picked], names,
                                                       f"most confidently wrong, {where}")
    numbers = {"confusion_matrix": cm.tolist(), "classes": names,
               "confident_mistakes": [{"index": int(i), "predicted": names[int(pred[i])], "true": names[int(labels[i])],
                                       "confidence": float(probs[i].max())} for i in picked]}
    return images, numbers
