"""Semantic segmentation: a class for every pixel, pixel-wise cross-entropy, mean IoU.

Batches are (x, y, mask) (data=shapes): the mask (B, H, W) holds 0 for background and class + 1 for
objects; the model outputs logits (B, K, H, W) with K = object classes + 1 (the models' `background`).

Metrics: loss (pixel-wise cross-entropy) and pixel_acc per batch; miou once per evaluation. The IoU
of a class is TP / (TP + FP + FN) over the *whole split*, not a mean of per-batch IoUs (which weights
small batches and empty classes wrongly), so each validation batch adds to a confusion matrix and
`on_validation_end` turns it into the mean over classes (background included) that occur in the
targets or the predictions.
"""

import torch
from torch import Tensor

from dlx.errors import ConfigError
from dlx.tasks.base import Step, Task
from dlx.tasks.pixels import PixelRange, rows

# Background black, then distinct colours for classes 1, 2, ... (cycled beyond 8).
PALETTE = torch.tensor([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240],
    [245, 130, 48], [240, 50, 230],
]) / 255.0


def colourize(mask: Tensor) -> Tensor:
    """Class indices (B, H, W) -> RGB images (B, 3, H, W) in [0, 1]."""
    palette = PALETTE.to(mask.device)
    return palette[mask % len(palette)].permute(0, 3, 1, 2)


def confusion_matrix(pred: Tensor, target: Tensor, k: int) -> Tensor:
    """(k, k) counts, rows = true class, columns = predicted class."""
    return torch.bincount((target.flatten() * k + pred.flatten()), minlength=k * k).view(k, k)


def mean_iou(confusion: Tensor) -> Tensor:
    """Mean over classes present (in targets or predictions) of TP / (TP + FP + FN)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    return (tp[present] / union[present]).mean().float()


class Segment(Task):
    """Pixel-wise classification with the loss group's cross-entropy (loss=cross_entropy, the default)."""

    monitor = "val/miou"
    monitor_mode = "max"
    ddp_wraps_model = True  # training_step calls only self.train_model(x)
    end_metrics = ("miou",)  # on_validation_end: the whole split's confusion matrix

    def __init__(self, model, loss):  # noqa: ANN001
        super().__init__(model, loss)
        self.pixels = PixelRange()
        self._confusion: Tensor | None = None  # summed over an evaluation; a plain attribute, never saved

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        batch = next(iter(data.batches("val")))
        if len(batch) < 3 or batch[2].dim() != 3:
            raise ConfigError("data", type(data).__name__, "task=segment needs batches (x, y, mask): use data=shapes")
        k = self.model.num_outputs
        if int(batch[2].max()) >= k:
            raise ConfigError("model.num_classes", k, f"the masks hold classes up to {int(batch[2].max())}; "
                              "the model needs num_classes = object classes (with background: true)")
        self.pixels.fit(data)

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x, mask = batch[0], batch[2]
        logits = self.train_model(x)  # (B, K, H, W)
        loss = self.loss(logits, mask)
        step("main", loss)
        return {"loss": loss.detach(), "pixel_acc": (logits.detach().argmax(1) == mask).float().mean()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, mask = batch[0], batch[2]
        logits = self.model(x)
        pred = logits.argmax(1)  # (B, H, W)
        counts = confusion_matrix(pred, mask, logits.shape[1])
        self._confusion = counts if self._confusion is None else self._confusion + counts
        return {"loss": self.loss(logits, mask), "pixel_acc": (pred == mask).float().mean()}

    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        if self._confusion is None:
            return {}
        miou, self._confusion = mean_iou(self._confusion), None
        return {"miou": miou}

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, mask = batch[0][:32], batch[2][:32]
        pred = self.model(x).argmax(1)
        # Rows: image, true mask, predicted mask.
        return {"segmentation": rows(self.pixels.to_pixels(x), colourize(mask), colourize(pred))}
