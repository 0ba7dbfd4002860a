"""In-memory tensor data: decoded once, moved to the device once, batched by index.

A data set that fits in memory is one tensor per field: images as uint8 (N, C, H, W), labels as int64
(N,), masks as int64 (N, H, W), sequences as float (N, T, F). Each epoch is a permutation drawn from a
generator seeded by (seed, epoch), so the order of any epoch can be recomputed on resume without
storing it. Normalization and augmentation run per batch on the device; there is no per-sample Python.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dlx.data import augment
from dlx.errors import ConfigError, DlxError

Batch = tuple[Tensor, ...]


@dataclass
class Splits:
    """Decoded tensors on the host. `val` None means: split it off `train` (deterministic from the seed)."""

    train: Batch
    test: Batch
    val: Batch | None = None
    classes: list[str] | None = None


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (unbiased) std of uint8 images (N, C, ...) on the [0, 1] scale, float32 (C,) each.

    From 256-bin histograms summed in float64: exact, and without a float copy of the whole set (CIFAR-10's
    is 550 MB, twice the rest of the run's data: it was the peak of a run's memory).
    """
    values = torch.arange(256, dtype=torch.float64, device=x.device) / 255  # (256,)
    means, stds = [], []
    for ch in range(x.shape[1]):
        counts = torch.bincount(x[:, ch].reshape(-1), minlength=256).double()  # (256,)
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / (n - 1)).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()


class TensorData:
    """Base of every in-memory data set; subclasses implement `load()` and nothing else.

    Args:
        root: folder holding the files (torchvision layout).
        download: fetch missing files (torchvision data sets only).
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test.
        val_fraction: share of the training split held out for validation when the set has no val split;
            0 trains on every training image and validates on the test split (`val_is_test`), as reference
            recipes that report the test loss after each epoch do (the loop then tests the final weights).
        normalize: standardize images per channel with the training split's mean and std; when false
            images are scaled to [0, 1] (what Bernoulli decoders and GANs want).
        crop_padding: random crop with this zero padding (0 = off).
        flip: random horizontal flip.
        cutout: side of a random zeroed square (0 = off).
        limit: train on the first `limit` training samples only (None = all).
        image_size: resize images to this side once at load (None = native size).
        on_device: keep the whole set on the training device (else pinned host memory, copied per batch).
        seed: seeds the train/val split and the shuffle order of every epoch.
    """

    def __init__(
        self,
        *,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.1,
        normalize: bool = True,
        crop_padding: int = 0,
        flip: bool = False,
        cutout: int = 0,
        limit: int | None = None,
        image_size: int | None = None,
        on_device: bool = True,
        seed: int = 0,
    ):
        self.root, self.download = root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.normalize = val_fraction, normalize
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout
        self.limit, self.image_size, self.on_device, self.seed = limit, image_size, on_device, seed
        self.rank, self.world_size = 0, 1  # set by `shard()` under data-parallel training
        self.device = torch.device("cpu")
        self.splits: dict[str, Batch] = {}
        self.classes: list[str] | None = None
        self.val_is_test = False  # set by setup(): validation runs on the test split (val_fraction 0)

    # ---- to implement -------------------------------------------------------------------------
    def load(self) -> Splits:
        """Decode the data set from `self.root` into host tensors."""
        raise NotImplementedError

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, device: torch.device | str = "cpu") -> None:
        """Load, split, resize and move every split to its storage device (once)."""
        self.device = torch.device(device)
        loaded = self.load()
        self.check_loaded(loaded)
        train, val = loaded.train, loaded.val
        if val is None:
            train, val = self._split_val(train)
        self.val_is_test = val is None
        if self.limit is not None:
            train = tuple(t[: self.limit] for t in train)
        self.classes = loaded.classes
        splits = {"train": train, "test": loaded.test} | ({} if val is None else {"val": val})
        splits = {k: tuple(self._resize(t) for t in v) for k, v in splits.items()}
        store = self.device if self.on_device else torch.device("cpu")
        pin = store.type == "cpu" and self.device.type == "cuda"
        self.splits = {
            k: tuple((t.pin_memory() if pin else t).to(store) for t in v) for k, v in splits.items()
        }
        if self.val_is_test:  # the same tensors, not a copy
            self.splits["val"] = self.splits["test"]
        self._fit_normalization(self.splits["train"][0])

    def origin(self, split: str) -> str:
        """The file (or folder) a split was read from, for error messages; subclasses that read files name them."""
        return f"{type(self).__name__} data in {self.root}"

    def check_loaded(self, loaded: Splits) -> None:
        """Every field of a split has one entry per sample, and labels lie in [0, number of classes): bad data
        fails here in one line naming its file, not as an index error (or a wrong metric) mid-training."""
        for split, tensors in (("train", loaded.train), ("val", loaded.val), ("test", loaded.test)):
            if not tensors:
                continue
            counts = [t.shape[0] for t in tensors]
            if len(set(counts)) > 1:
                raise DlxError(f"{self.origin(split)}: the {split} split has {counts[0]} images but "
                               f"{counts[1]} labels" + (f" ({counts})" if len(counts) > 2 else ""))
            if len(tensors) < 2 or tensors[1].is_floating_point() or tensors[1].dim() != 1 or not counts[0]:
                continue
            y = tensors[1]  # (N,) integer class labels
            top = len(loaded.classes) if loaded.classes is not None else None
            bad = (y < 0) | (y >= top) if top is not None else y < 0
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                allowed = f"[0, {top})" if top is not None else ">= 0"
                raise DlxError(f"{self.origin(split)}: label {int(y[i])} of sample {i} in the {split} split is "
                               f"outside {allowed} ({int(bad.sum())} such labels)")

    def shard(self, rank: int, world_size: int) -> None:
        """Give this process every `world_size`-th training batch (data-parallel training)."""
        self.rank, self.world_size = rank, world_size

    def _split_val(self, train: Batch) -> tuple[Batch, Batch | None]:
        """(train, val) held out with the seed; val None when `val_fraction` is 0 (validate on the test split)."""
        if self.val_fraction == 0:
            return train, None
        n = train[0].shape[0]
        n_val = int(round(n * self.val_fraction))
        if not 0 < n_val < n:
            raise ConfigError("data.val_fraction", self.val_fraction, f"must leave both splits non-empty (n={n})")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        return tuple(t[train_idx] for t in train), tuple(t[val_idx] for t in train)

    def _resize(self, t: Tensor) -> Tensor:
        """Resize images (N, C, H, W) and masks (N, H, W) to `image_size` once, at load."""
        if self.image_size is None or t.dim() < 3 or t.is_floating_point() and t.dim() == 3:
            return t
        if t.shape[-1] == self.image_size and t.shape[-2] == self.image_size:
            return t
        size = (self.image_size, self.image_size)
        if t.dim() == 3:  # mask: nearest, so labels stay labels
            return F.interpolate(t[:, None].float(), size=size, mode="nearest")[:, 0].to(t.dtype)
        out = F.interpolate(t.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        return out.round().clamp(0, 255).to(torch.uint8) if t.dtype == torch.uint8 else out

    def _fit_normalization(self, x: Tensor) -> None:
        """Per-channel affine map uint8 -> float: x * scale + shift (standardize, or just to [0, 1])."""
        self.scale = self.shift = None
        if x.dtype != torch.uint8:
            return
        c = x.shape[1]
        if self.normalize:
            mean, std = channel_stats(x)
            std = std.clamp_min(1e-6)
        else:
            mean, std = torch.zeros(c, device=x.device), torch.ones(c, device=x.device)
        self.scale = (1 / (255 * std)).to(self.device).view(1, c, 1, 1)
        self.shift = (-mean / std).to(self.device).view(1, c, 1, 1)

    # ---- shape facts that configs declare (checked by build) ----------------------------------
    @property
    def channels(self) -> int:
        x = self.splits["train"][0]
        return x.shape[1] if x.dim() == 4 else 1

    @property
    def size(self) -> int:
        return self.splits["train"][0].shape[-1]

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return int(max(t[1].max() for t in self.splits.values())) + 1

    def facts(self) -> dict[str, int]:
        """What the data really is, to compare with the `data.*` declarations configs interpolate."""
        x = self.splits["train"][0]
        facts = {"num_classes": self.num_classes, "in_features": x[0].numel()}
        if x.dim() == 4:
            facts.update(channels=self.channels, size=self.size)
        return facts

    # ---- batches ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.splits["train"][0].shape[0]

    def num_batches(self, split: str) -> int:
        """Training drops the last partial batch (every step sees `batch_size` samples); eval keeps it."""
        n = self.splits[split][0].shape[0]
        if split == "train":
            return max(1, n // self.batch_size) // self.world_size or 1
        return -(-n // self.eval_batch_size)

    def permutation(self, epoch: int) -> Tensor:
        """The training order of `epoch`: a pure function of (seed, epoch), so resume can recompute it."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self), generator=g)

    def batches(self, split: str, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yield device batches of `split`, starting at batch `start` (resume inside an epoch)."""
        tensors = self.splits[split]
        n = tensors[0].shape[0]
        if split == "train":
            bs = min(self.batch_size, n)
            order = self.permutation(epoch)
            steps = self.num_batches("train")
            for i in range(start, steps):
                j = i * self.world_size + self.rank
                idx = order[j * bs : (j + 1) * bs].to(tensors[0].device, non_blocking=True)
                # index_select, not t[idx]: on CPU advanced indexing of uint8 images is 10-30x slower.
                yield self._prepare(tuple(t.index_select(0, idx) for t in tensors), train=True)
        else:
            bs = self.eval_batch_size
            for i in range(start, self.num_batches(split)):
                yield self._prepare(tuple(t[i * bs : (i + 1) * bs] for t in tensors), train=False)

    def _prepare(self, batch: Batch, train: bool) -> Batch:
        """uint8 -> normalized float on the device, then augmentation (training batches only)."""
        batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
        x, rest = batch[0], batch[1:]
        if self.scale is not None:
            x = x.float().mul_(self.scale).add_(self.shift)  # in place: 3x faster on CPU than one addcmul
        if train and x.dim() == 4 and (self.crop_padding or self.flip or self.cutout):
            x, rest = self._augment(x, rest)
        return (x, *rest)

    def _augment(self, x: Tensor, rest: Batch) -> tuple[Tensor, Batch]:
        """Crop and flip move masks (B, H, W) with their images; cutout touches the image only."""
        mask = rest[0] if rest and rest[0].dim() == 3 and rest[0].shape[-2:] == x.shape[-2:] else None
        if mask is not None:  # ride along as an extra channel, so both get the same crop and flip
            x = torch.cat([x, mask[:, None].to(x.dtype)], 1)
        x = augment.random_crop(x, self.crop_padding)
        if self.flip:
            x = augment.random_flip(x)
        if mask is not None:
            x, m = x[:, :-1], x[:, -1].round().long()
            rest = (m, *rest[1:])
        return augment.cutout(x, self.cutout), rest
