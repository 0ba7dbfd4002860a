"""Autoregressive image modelling with PixelCNN: maximize log p(x) = sum_i log p(x_i | x_<i) over sub-pixels.

Pixels in [0, 1] (whatever data.normalize says) are quantized to the model's `levels` values (256 for
8-bit images, i.e. a 256-way softmax per sub-pixel; 2 for binarized images), fed to the model scaled to
[-1, 1], and scored by the cross-entropy of the model's logits (B, levels, C, H, W) with the values.

Metrics: loss (the loss group's cross-entropy, nats per sub-pixel), bits_per_dim (the same negative
log-likelihood in bits per sub-pixel, the literature's unit), nll (nats per image).
Sampling runs the net once per sub-pixel in raster order, drawing each value from its softmax:
H * W * C passes (784 for MNIST), which is why it is slow.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dlx.tasks.base import Step, Task
from dlx.tasks.pixels import PixelRange


class Autoregress(Task):
    """PixelCNN training and pixel-by-pixel sampling.

    Args:
        model: a PixelCNN (dlx.models.pixelcnn): x in [-1, 1] -> logits (B, levels, C, H, W), `levels`.
        loss: cross-entropy (loss=cross_entropy, the default).
        visual_samples: images sampled for TensorBoard at each validation (0 = none; sampling is slow).
    """

    monitor = "val/bits_per_dim"
    monitor_mode = "min"

    def __init__(self, model, loss, visual_samples: int = 16):  # noqa: ANN001
        super().__init__(model, loss)
        self.visual_samples = visual_samples
        self.pixels = PixelRange()
        # (C, H, W) of the training images: the net is fully convolutional, sampling needs a size.
        self.register_buffer("image_shape", torch.zeros(3, dtype=torch.long))

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)
        self.image_shape = torch.tensor(next(iter(data.batches("val")))[0].shape[1:], device=self.image_shape.device)

    @property
    def levels(self) -> int:
        return self.model.levels

    def quantize(self, x: Tensor) -> Tensor:
        """Data space -> integer values (B, C, H, W) in 0..levels-1."""
        return (self.pixels.to_pixels(x) * (self.levels - 1)).round().long()

    def inputs(self, q: Tensor) -> Tensor:
        """Integer values -> the model's input in [-1, 1]."""
        return q.float() * (2 / (self.levels - 1)) - 1

    def _metrics(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q = self.quantize(x)
        logits = self.model(self.inputs(q))  # (B, levels, C, H, W)
        loss = self.loss(logits, q)
        nll = F.cross_entropy(logits.float(), q)  # nats per sub-pixel, without any smoothing
        dims = q[0].numel()
        return loss, {"loss": loss.detach(), "bits_per_dim": nll.detach() / math.log(2), "nll": nll.detach() * dims}

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        loss, metrics = self._metrics(batch[0])
        step("main", loss)
        return metrics

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return self._metrics(batch[0])[1]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, shape: tuple[int, ...] | None = None) -> Tensor:
        """n images (n, C, H, W) in [0, 1], drawn one sub-pixel at a time in raster order, in the mode the caller
        set (the loop's visuals and `dlx sample`: eval mode).

        Args:
            n: number of images.
            generator: random source (on the model's device).
            shape: (C, H, W); by default the shape the model was trained on (kept since fit start).
        """
        c, h, w = shape or tuple(self.image_shape.tolist())
        q = torch.zeros(n, c, h, w, dtype=torch.long, device=self.image_shape.device)
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    probs = self.model(self.inputs(q))[:, :, ch, i, j].float().softmax(1)  # (n, levels)
                    q[:, ch, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return q.float() / (self.levels - 1)

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0]
        images = {"real": self.quantize(x[:32]).float() / (self.levels - 1)}
        if self.visual_samples:
            g = torch.Generator(device=x.device).manual_seed(0)
            images["samples"] = self.sample(self.visual_samples, g, shape=tuple(x.shape[1:]))
        return images
