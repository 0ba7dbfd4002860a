"""Between the data's space and pixel space [0, 1], and images for TensorBoard.

Data modules standardize images per channel (x = u8 * scale + shift) unless `data.normalize=false`,
which gives u8 / 255. Generative tasks model pixels, whatever the data setting: a Bernoulli decoder
needs [0, 1], a tanh generator [-1, 1], PixelCNN integer levels. `PixelRange` holds the data's affine
map (fitted at fit start, saved with the task so `dlx sample` and evaluation tools need no data).
"""

import torch
from torch import Tensor, nn


class PixelRange(nn.Module):
    """pixels = (x - shift) / gain, per channel; identity until `fit` sees a data module."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gain", torch.ones(1, 1, 1, 1))  # (1, C, 1, 1) after fit
        self.register_buffer("shift", torch.zeros(1, 1, 1, 1))

    def fit(self, data) -> None:  # noqa: ANN001 - a TensorData
        """Read the data's normalization (uint8 images); float data is taken to be in [0, 1] already."""
        scale, shift = getattr(data, "scale", None), getattr(data, "shift", None)
        if scale is None:
            return
        self.gain = (255 * scale).to(self.gain.device, torch.float32)
        self.shift = shift.to(self.shift.device, torch.float32)

    def to_pixels(self, x: Tensor) -> Tensor:
        """Data space -> [0, 1] (clamped: resizing can overshoot by a rounding)."""
        return ((x.float() - self.shift) / self.gain).clamp(0, 1)

    def from_pixels(self, p: Tensor) -> Tensor:
        """[0, 1] -> the data's space (what the data module would have produced)."""
        return p * self.gain + self.shift

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN202 - torch hook
        # The channel count is the data's, known only after fit: adopt the saved shape before loading.
        for name in ("gain", "shift"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def rows(*images: Tensor, n: int = 8, groups: int = 4) -> Tensor:
    """Interleave image sets row by row for an 8-wide grid: row 1 of each set, then row 2 of each...

    rows(inputs, reconstructions) shows each input directly above its reconstruction.
    Each argument is (N, C, H, W) in [0, 1]; uses the first n * groups images of each.
    """
    parts = []
    for g in range(groups):
        chunk = [im[g * n : (g + 1) * n] for im in images]
        if not len(chunk[0]):
            break
        parts.extend(chunk)
    return torch.cat(parts).float().clamp(0, 1)


def first_batch(data, split: str, limit: int) -> Tensor:  # noqa: ANN001 - a TensorData
    """Up to `limit` inputs of `split`, concatenated from its batches (no augmentation for eval splits)."""
    xs, n = [], 0
    for batch in data.batches(split):
        xs.append(batch[0])
        n += len(batch[0])
        if n >= limit:
            break
    return torch.cat(xs)[:limit]
