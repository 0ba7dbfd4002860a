"""Parity of bit strings: the lecture's RNN example (is the number of ones odd?), generated offline.

A sequence model must carry one bit of state through time; an MLP on the flattened string must learn
an XOR of all inputs. With `variable=true` lengths vary and only a recurrent model handles them naturally.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dlx.data.base import Splits, TensorData
from dlx.errors import ConfigError

TEST_SEED = 0  # the test set is fixed, independent of the run's seed, so runs stay comparable


def make_parity(n: int, length: int, variable: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw `n` random bit strings and their parity.

    Args:
        n: number of strings.
        length: number of time steps T (the longest string).
        variable: lengths uniform in [1, T]; shorter strings are LEFT-padded with zero vectors, so the
            last time step is always the last real bit (what an RNN reads its answer from).
        generator: the random source.

    Returns:
        x float (N, T, 2), the one-hot bit at each step (all zeros on padding); y int64 (N,), 1 = odd.
    """
    bits = torch.randint(0, 2, (n, length), generator=generator)  # (N, T)
    if variable:
        lengths = torch.randint(1, length + 1, (n,), generator=generator)  # (N,)
    else:
        lengths = torch.full((n,), length)
    real = torch.arange(length)[None, :] >= length - lengths[:, None]  # (N, T), padding on the left
    bits = bits * real
    x = F.one_hot(bits, 2).float() * real[..., None]  # (N, T, 2)
    return x, bits.sum(1) % 2


class Parity(TensorData):
    """Bit strings labelled even (0) or odd (1). Batches are (x (B, T, 2) float, y (B,) int64).

    Args:
        length: number of time steps T.
        variable: random lengths in [1, length], left-padded (see `make_parity`).
        n_train: training strings (validation is split off these), drawn from the run's seed.
        n_test: test strings, drawn from a fixed seed.
        The other arguments are `TensorData`'s; the image ones (normalize, crop, flip, cutout,
        image_size) have no effect on sequences.
    """

    def __init__(
        self,
        *,
        length: int = 8,
        variable: bool = False,
        n_train: int = 4096,
        n_test: int = 1024,
        batch_size: int = 64,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        if length < 1:
            raise ConfigError("data.length", length, "must be at least 1")
        self.length, self.variable, self.n_train, self.n_test = length, variable, n_train, n_test

    def load(self) -> Splits:
        # Train from 2*seed+1, test from TEST_SEED=0: distinct streams for every run seed.
        train = make_parity(self.n_train, self.length, self.variable, torch.Generator().manual_seed(2 * self.seed + 1))
        test = make_parity(self.n_test, self.length, self.variable, torch.Generator().manual_seed(TEST_SEED))
        return Splits(train=train, test=test, classes=["even", "odd"])

    def facts(self) -> dict[str, int]:
        x = self.splits["train"][0]  # (N, T, 2)
        return {"num_classes": 2, "in_features": x[0].numel(), "input_size": x.shape[2], "seq_len": x.shape[1]}
