"""Parity of bit strings: the lecture's RNN example (is the number of ones odd?), generated offline.

A sequence model must carry one bit of state through time; an MLP on the flattened string must learn
an XOR of all inputs. With `variable=true` lengths vary and only a recurrent model handles them naturally.
"""

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dlx.data.base import Splits, TensorData
from dlx.errors import ConfigError

TEST_SEED = 0  # the test set is fixed, independent of the run's seed, so runs stay comparable
TEST_SHARE = 5  # one distinct string in TEST_SHARE is reserved for the test set
ENUMERABLE = 16  # up to this length every string is listed, so the held-out share is exact per class


def draw_bits(n: int, length: int, variable: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`n` strings as bits int64 (N, T), zero on the left padding, and their lengths int64 (N,)."""
    bits = torch.randint(0, 2, (n, length), generator=generator)  # (N, T)
    if variable:
        lengths = torch.randint(1, length + 1, (n,), generator=generator)  # (N,)
    else:
        lengths = torch.full((n,), length)
    return bits * padding_mask(lengths, length), lengths


def padding_mask(lengths: Tensor, length: int) -> Tensor:
    """(N, T) bool, true on the real bits: padding is on the left."""
    return torch.arange(length)[None, :] >= length - lengths[:, None]


def one_hot(bits: Tensor, lengths: Tensor) -> Tensor:
    """(N, T, 2) float one-hot bits, all zeros on padding."""
    return F.one_hot(bits, 2).float() * padding_mask(lengths, bits.shape[1])[..., None]


def held_out(bits: Tensor, lengths: Tensor) -> Tensor:
    """(N,) bool: the string belongs to the test set's share of all strings, never drawn for training.

    Up to ENUMERABLE steps every string of each length is listed and, within each parity, a fixed random
    1/TEST_SHARE of them (at least one) is reserved, so even length 4's 16 strings give a test set of unseen
    strings of both labels. Longer strings are too many to list: a fixed random hash picks the share.
    """
    length = bits.shape[1]
    if length <= ENUMERABLE:
        codes = (bits * 2 ** torch.arange(length - 1, -1, -1)).sum(1)  # (N,): the string as a binary number
        out = torch.zeros(len(bits), dtype=torch.bool)
        for n_bits in lengths.unique().tolist():
            rows = lengths == n_bits
            out[rows] = reserved(n_bits)[codes[rows]]
        return out
    keys = torch.randint(0, 2**40, (length + 1,), generator=torch.Generator().manual_seed(TEST_SEED))  # (T + 1,)
    return ((bits * keys[1:]).sum(1) + lengths * keys[0]) % TEST_SHARE == 0  # a random linear hash


@functools.cache
def reserved(n_bits: int) -> Tensor:
    """(2^n_bits,) bool over the strings of n_bits bits (as numbers): the test share, per parity class."""
    codes = torch.arange(2**n_bits)
    ones = torch.stack([(codes >> i) & 1 for i in range(n_bits)]).sum(0)  # (S,)
    table = torch.zeros(2**n_bits, dtype=torch.bool)
    g = torch.Generator().manual_seed(TEST_SEED + n_bits)
    for label in (0, 1):
        strings = codes[ones % 2 == label]
        share = -(-len(strings) // TEST_SHARE)  # ceil: at least one per label
        table[strings[torch.randperm(len(strings), generator=g)[:share]]] = True
    return table


def draw_split(n: int, length: int, variable: bool, test: bool, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`n` strings from the test share (`test`) or from the rest, by drawing and keeping the right ones."""
    kept_bits, kept_lengths, count = [], [], 0
    while count < n:
        bits, lengths = draw_bits(max(2 * n, 64), length, variable, generator)
        keep = held_out(bits, lengths) == test
        kept_bits.append(bits[keep])
        kept_lengths.append(lengths[keep])
        count += int(keep.sum())
    bits, lengths = torch.cat(kept_bits)[:n], torch.cat(kept_lengths)[:n]
    return one_hot(bits, lengths), bits.sum(1) % 2


class Parity(TensorData):
    """Bit strings labelled even (0) or odd (1). Batches are (x (B, T, 2) float, y (B,) int64).

    Args:
        length: number of time steps T.
        variable: random lengths in [1, length], left-padded (see `draw_bits`).
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
        if length < 2:  # both strings of length 1 are reserved for the test set (`held_out`)
            raise ConfigError("data.length", length, "must be at least 2")
        self.length, self.variable, self.n_train, self.n_test = length, variable, n_train, n_test

    def load(self) -> Splits:
        # Train from 2*seed+1, test from TEST_SEED=0: distinct streams for every run seed. The test strings
        # are a reserved share no training string is drawn from (`held_out`): test accuracy measures parity
        # learned, not strings remembered (length 8 has only 256 strings, fewer than n_train).
        g_train, g_test = torch.Generator().manual_seed(2 * self.seed + 1), torch.Generator().manual_seed(TEST_SEED)
        train = draw_split(self.n_train, self.length, self.variable, False, g_train)
        test = draw_split(self.n_test, self.length, self.variable, True, g_test)
        return Splits(train=train, test=test, classes=["even", "odd"])

    def facts(self) -> dict[str, int]:
        x = self.splits["train"][0]  # (N, T, 2)
        return {"num_classes": 2, "in_features": x[0].numel(), "input_size": x.shape[2], "seq_len": x.shape[1]}
