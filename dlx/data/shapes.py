"""Generated images of one circle, square or triangle each, with per-pixel masks: offline demos of
classification, segmentation and class activation maps (CAM) on images whose "where" is known.

Batches are (x, y, mask): x uint8 -> normalized float (B, 3, H, W), y int64 (B,) the shape class,
mask int64 (B, H, W) with 0 = background and 1..3 = class + 1. Classification reads batch[0] and
batch[1] unchanged; segmentation and CAM read the mask as batch[2].
"""

import math
from typing import Any

import torch
from torch import Tensor

from dlx.data.base import Batch, Splits, TensorData

CLASSES = ["circle", "square", "triangle"]
TEST_SEED = 0  # the test set is fixed, independent of the run's seed, so runs stay comparable
NATIVE_SIZE = 32


def _inside(kind: Tensor, u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Which pixels lie inside each image's shape.

    Args:
        kind: (N, 1, 1) class index (0 circle, 1 square, 2 triangle).
        u, v: (N, H, W) pixel offsets from the shape's centre in the shape's rotated frame.
        r: (N, 1, 1) circumradius in pixels.

    Returns:
        bool (N, H, W).
    """
    circle = u**2 + v**2 <= r**2
    square = torch.maximum(u.abs(), v.abs()) <= r / math.sqrt(2)  # corners on the circumcircle
    # Equilateral triangle: inside all three half-planes whose normals are 120 degrees apart,
    # each at the inradius r/2 from the centre.
    normals = [2 * math.pi * k / 3 for k in range(3)]
    triangle = torch.stack([u * math.cos(a) + v * math.sin(a) <= r / 2 for a in normals]).all(0)
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))


def make_shapes(n: int, size: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Draw `n` images, each one shape of random class, size, position, rotation and colour.

    Shape and background colours differ by at least 0.3 in every channel (the background is the
    shape colour shifted by 0.5 +- 0.2, modulo 1), so every shape is visible but colour alone does
    not give the class. All images at once: no per-pixel or per-image Python.

    Args:
        n: number of images.
        size: image side H = W in pixels.
        noise: std of Gaussian noise on the background, in [0, 1] units (0 = flat background).
        generator: the random source.

    Returns:
        x uint8 (N, 3, H, W), y int64 (N,), mask int64 (N, H, W) with 0 = background, 1..3 = y + 1.
    """

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator)

    y = torch.randint(0, len(CLASSES), (n,), generator=generator)
    r = size * (0.15 + 0.2 * rand(n))  # circumradius, 15-35% of the side
    cy, cx = (r + (size - 1 - 2 * r) * rand(n) for _ in range(2))  # centres keep the shape inside
    angle = 2 * math.pi * rand(n)
    grid = torch.arange(size, dtype=torch.float32)
    dy = grid[None, :, None] - cy[:, None, None]  # (N, H, 1)
    dx = grid[None, None, :] - cx[:, None, None]  # (N, 1, W)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx  # (N, H, W), rotated frame
    inside = _inside(y[:, None, None], u, v, r[:, None, None])  # (N, H, W)

    colour = rand(n, 3, 1, 1)
    background = (colour + 0.3 + 0.4 * rand(n, 3, 1, 1)) % 1.0  # per-channel distance >= 0.3
    background = background + noise * torch.randn(n, 3, size, size, generator=generator)
    img = torch.where(inside[:, None], colour, background)  # (N, 3, H, W) in [0, 1]
    x = img.mul(255).round().clamp(0, 255).to(torch.uint8)
    mask = torch.where(inside, y[:, None, None] + 1, 0)
    return x, y, mask


class Shapes(TensorData):
    """Circles, squares and triangles with masks. Images are generated at `image_size` (default 32).

    Crop and flip (off by default) move the mask with its image; cutout touches the image only.

    Args:
        n_train: training images (validation is split off these), drawn from the run's seed.
        n_test: test images, drawn from a fixed seed.
        noise: std of Gaussian background noise in [0, 1] units (0 = flat background).
        The other arguments are `TensorData`'s.
    """

    def __init__(
        self,
        *,
        n_train: int = 4000,
        n_test: int = 1000,
        noise: float = 0.0,
        batch_size: int = 64,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        self.n_train, self.n_test, self.noise = n_train, n_test, noise

    def load(self) -> Splits:
        # Drawn at the final size (resizing generated shapes only blurs them); train from 2*seed+1,
        # test from TEST_SEED=0: distinct streams for every run seed.
        size = self.image_size or NATIVE_SIZE
        train = make_shapes(self.n_train, size, self.noise, torch.Generator().manual_seed(2 * self.seed + 1))
        test = make_shapes(self.n_test, size, self.noise, torch.Generator().manual_seed(TEST_SEED))
        return Splits(train=train, test=test, classes=list(CLASSES))

    def _augment(self, x: Tensor, rest: Batch) -> tuple[Tensor, Batch]:
        # The base class moves a mask only when it comes first after x; ours comes after y.
        y, mask = rest
        x, (mask,) = super()._augment(x, (mask,))
        return x, (y, mask)
