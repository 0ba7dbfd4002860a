"""1-D heteroscedastic regression: y = sin(3x) + noise whose std grows with x, generated offline.

The lecture's aleatoric-uncertainty example: a model that predicts a mean and a variance (Gaussian NLL)
should find the noise growing from left to right, where a plain MSE model only finds the mean.
`mean_fn` and `noise_std` are the ground truth, for plots that compare a model's predicted band with it.
"""

from typing import Any

import torch
from torch import Tensor

from dlx.data.base import Splits, TensorData

TEST_SEED = 0  # the test set is fixed, independent of the run's seed, so runs stay comparable


def mean_fn(x: Tensor) -> Tensor:
    """The true regression function E[y | x] = sin(3x)."""
    return torch.sin(3 * x)


def noise_std(x: Tensor) -> Tensor:
    """The true noise level: 0.05 at x = -1 rising linearly to 0.35 at x = 1."""
    return 0.05 + 0.3 * (x + 1) / 2


def make_hetero1d(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw `n` points: x uniform in [-1, 1], y = sin(3x) + N(0, noise_std(x)^2). Both float (N, 1)."""
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    y = mean_fn(x) + noise_std(x) * torch.randn(n, 1, generator=generator)
    return x, y


class Hetero1D(TensorData):
    """Regression pairs (x (B, 1), y (B, 1)), both float; `num_classes` is the output dimension, 1.

    Args:
        n_train: training points (validation is split off these), drawn from the run's seed.
        n_test: test points, drawn from a fixed seed.
        The other arguments are `TensorData`'s; the image ones (normalize, crop, flip, cutout,
        image_size) have no effect on this data.
    """

    def __init__(
        self,
        *,
        n_train: int = 2000,
        n_test: int = 1000,
        batch_size: int = 64,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        self.n_train, self.n_test = n_train, n_test

    def load(self) -> Splits:
        # Train from 2*seed+1, test from TEST_SEED=0: distinct streams for every run seed.
        train = make_hetero1d(self.n_train, torch.Generator().manual_seed(2 * self.seed + 1))
        test = make_hetero1d(self.n_test, torch.Generator().manual_seed(TEST_SEED))
        return Splits(train=train, test=test)

    @property
    def num_classes(self) -> int:
        return self.splits["train"][1].shape[1]  # output dimension of the regression

    def facts(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "in_features": self.splits["train"][0].shape[1]}
