"""Class activation maps (Zhou et al. 2016): where a global-average-pooling net sees each class.

For a net whose head is GAP followed by one linear layer, the logit of class c is
    y_c = sum_k w_ck * mean_{h,w} f_k(h, w) + b_c = mean_{h,w} M_c(h, w) + b_c,
    M_c(h, w) = sum_k w_ck f_k(h, w)
so M_c, the class activation map on the last conv map (B, C, h, w), says how much each location adds
to the class score. It is upsampled to the input size and overlaid on the image.

Checkable on `shapes`, whose batches carry masks: the share of the (positive) CAM mass of the true
class that falls inside the shape, against the share of the image the shape covers (what a map that
ignored the image would get), and the pointing game (is the CAM's peak inside the shape?).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.analysis.uncertainty import DROPOUT_TYPES
from dlx.errors import DlxError

HEAD_PARTS = (nn.Flatten, nn.Identity, *DROPOUT_TYPES)


def gap_linear(model: nn.Module) -> nn.Linear:
    """The linear layer of a `features -> GAP -> [Flatten, Dropout] -> Linear` head; refuse anything else."""
    head = getattr(model, "classifier", None)
    name = type(model).__name__
    if head is None:
        raise DlxError(f"CAM needs a classifier with a global-average-pooling head (e.g. resnet); {name} has no "
                       "classifier")
    if not hasattr(model, "features") or not isinstance(head, nn.Sequential) or len(head) == 0:
        raise DlxError(f"CAM needs a global-average-pooling net (features -> GAP -> one Linear, e.g. resnet); "
                       f"{name}'s classifier is {type(head).__name__}")
    first, rest = head[0], list(head)[1:]
    gap = isinstance(first, nn.AdaptiveAvgPool2d) and first.output_size in (1, (1, 1))
    linears = [m for m in rest if isinstance(m, nn.Linear)]
    only_linear = len(linears) == 1 and all(isinstance(m, (nn.Linear, *HEAD_PARTS)) for m in rest)
    if not (gap and only_linear):
        raise DlxError(f"CAM needs a global-average-pooling net (features -> GAP -> one Linear, e.g. resnet); "
                       f"{name}'s classifier is {' -> '.join(type(m).__name__ for m in head)}")
    return linears[0]


def class_activation_maps(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """CAMs of every class at the last conv map's resolution (B, K, h, w), and the logits (B, K)."""
    linear = gap_linear(model)
    f = model.features(x)  # (B, C, h, w)
    logits = model.classifier(f)  # (B, K)
    cams = torch.einsum("kc,bchw->bkhw", linear.weight, f)  # (B, K, h, w)
    return cams, logits


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W), bilinear (Zhou et al. upsample the CAM to the image size)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def pick(cams: Tensor, classes: Tensor) -> Tensor:
    """The map of one class per image: (B, K, h, w), (B,) -> (B, h, w)."""
    return cams[torch.arange(len(classes), device=cams.device), classes]


def mass_in_mask(cam: Tensor, mask: Tensor) -> Tensor:
    """Share of the CAM's mass inside the mask, per image: (B, H, W), bool (B, H, W) -> (B,).

    The map is first scaled to [0, 1] per image (min to 0, max to 1), as for the "energy-based
    pointing game" (Wang et al. 2020): a constant offset of the map says nothing about where it looks.
    """
    flat = cam.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    energy = (flat - lo) / (hi - lo).clamp_min(1e-12)
    return (energy * mask.flatten(1)).sum(1) / energy.sum(1).clamp_min(1e-12)


def pointing_hit(cam: Tensor, mask: Tensor) -> Tensor:
    """Whether each CAM's maximum lies inside the mask: (B,) bool."""
    peak = cam.flatten(1).argmax(1)
    return mask.flatten(1).gather(1, peak[:, None])[:, 0]


def localization(model: nn.Module, batches, max_images: int | None = None) -> dict[str, float]:  # noqa: ANN001
    """CAM mass in the mask vs the mask's area, and the pointing game, over (x, y, mask) batches."""
    mass, area, hits, n = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for batch in batches:
            x, y, mask = batch[0], batch[1], batch[2] > 0
            cams, _ = class_activation_maps(model, x)
            cam = upsample(pick(cams, y), x.shape[-2:])
            mass += float(mass_in_mask(cam, mask).sum())
            area += float(mask.flatten(1).float().mean(1).sum())
            hits += float(pointing_hit(cam, mask).float().sum())
            n += len(y)
            if max_images and n >= max_images:
                break
    return {"cam_mass_in_mask": mass / n, "mask_area": area / n, "pointing_game": hits / n, "images": n}


def figure(run, x: Tensor, y: Tensor, n: int = 8):  # noqa: ANN001, ANN201 - LoadedRun, PIL image
    """Rows of (image, CAM of the true class, CAM of the predicted class) with class names and probabilities."""
    from dlx.analysis.images import minmax, overlay, table, to_pil
    from dlx.analysis.loading import display

    x, y = x[:n], y[:n]
    with torch.no_grad():
        cams, logits = class_activation_maps(run.model, x)
    probs = logits.float().softmax(-1)
    pred = probs.argmax(-1)
    size = x.shape[-2:]
    true_cam = minmax(upsample(pick(cams, y), size), dims=(1, 2))
    pred_cam = minmax(upsample(pick(cams, pred), size), dims=(1, 2))
    pixels = display(run.data, x)
    names = run.data.classes or [str(i) for i in range(probs.shape[-1])]
    side = max(96, 4 * size[0])
    rows, captions = [], []
    for i in range(len(x)):
        rows.append([to_pil(pixels[i], side), overlay(pixels[i], true_cam[i], min_side=side),
                     overlay(pixels[i], pred_cam[i], min_side=side)])
        p_true, p_pred = float(probs[i, y[i]]), float(probs[i, pred[i]])
        captions.append(["", f"{names[y[i]]} {p_true:.2f}", f"{names[pred[i]]} {p_pred:.2f}"])
    return table(rows, ["image", "CAM true class", "CAM predicted"], captions, title="class activation maps")
