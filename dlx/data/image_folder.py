"""A folder of class sub-folders, for data too large to hold in memory.

Layout (`data.root`), as torchvision's ImageFolder reads it:

    root/train/<class>/*.png|jpg|...   root/test/<class>/...   (or root/val/ instead of root/test/)
    root/<class>/...                                           (no split folders: test and val split off)

Workers decode and resize each image to `image_size` x `image_size` uint8 (C=3, RGB); the rest is the
in-memory path's: normalization and augmentation run per batch on the device (`TensorData._prepare`).
The epoch order is `permutation(epoch)`, a pure function of (seed, epoch), handed to the DataLoader as
lists of indices, so resuming at batch `start` skips earlier batches without decoding them.
"""

import os
import re
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from dlx.data.base import Batch, TensorData
from dlx.errors import ConfigError, DlxError

TEST_SEED = 0  # a test split cut from the training images is fixed, independent of the run's seed
NORM_IMAGES = 512  # images (a fixed subset of the training split) that estimate the normalization


UNREADABLE = "dlx: unreadable image "


def load_rgb(path: str) -> Image.Image:
    """torchvision's PIL loader, whose failure names the file (a worker's error reaches the main process as text)."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"{UNREADABLE}{path}: {' '.join(str(e).split()) or type(e).__name__}") from None


class BatchPlan:
    """The batch sampler of a persistent DataLoader: the index lists of its next pass, set before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageFolder(TensorData):
    """Images in class sub-folders, fed by a `DataLoader`. Batches are (x (B, 3, S, S), y (B,) int64).

    Same interface as the in-memory `TensorData` (setup, batches, num_batches, facts, shard, permutation),
    but `splits` stays empty: the images stay on disk and only indices are kept.

    Args:
        root: the folder of class sub-folders (or of train/ and test/ or val/ folders of them).
        num_workers: DataLoader worker processes that decode images (0 = in the main process).
        test_fraction: share of the images held out (with a fixed seed) as test split when there is no
            test/ or val/ folder.
        image_size: side every image is resized to (not kept square-cropped: the aspect ratio changes).
        download: unused (nothing to download); kept so every data config has the same keys.
        on_device: unused (images stay on disk); kept so every data config has the same keys.
        The other arguments are `TensorData`'s.
    """

    def __init__(
        self,
        *,
        root: str = "data/image_folder",
        batch_size: int = 64,
        eval_batch_size: int = 256,
        test_fraction: float = 0.2,
        image_size: int = 64,
        num_workers: int = 2,
        **kwargs: Any,
    ):
        super().__init__(
            root=root, batch_size=batch_size, eval_batch_size=eval_batch_size, image_size=image_size, **kwargs
        )
        if not isinstance(image_size, int) or image_size < 1:
            raise ConfigError("data.image_size", image_size, "image folders need a positive int side, e.g. 64")
        if num_workers < 0:
            raise ConfigError("data.num_workers", num_workers, "must be 0 or more")
        self.num_workers, self.test_fraction = num_workers, test_fraction
        # split -> (the torchvision folder data set it reads from, (N,) int64 indices into that data set)
        self.parts: dict[str, tuple[datasets.ImageFolder, Tensor]] = {}
        self._loaders: dict[str, DataLoader] = {}  # split -> its DataLoader with persistent workers
        self._reading: set[str] = set()  # splits whose persistent loader is in the middle of a pass

    # ---- set-up -------------------------------------------------------------------------------
    def _folder(self, path: str) -> datasets.ImageFolder:
        # PIL resizes (antialiased, in C), then one uint8 (3, S, S) tensor: workers never produce floats.
        transform = v2.Compose([v2.Resize((self.image_size, self.image_size), antialias=True), v2.PILToTensor()])
        try:
            return datasets.ImageFolder(path, transform=transform, loader=load_rgb)
        except (FileNotFoundError, OSError) as e:
            raise DlxError(
                f"image_folder: no images in class sub-folders of {path} ({' '.join(str(e).split())}); "
                f"set data.root to a folder of <class>/ folders (or of train/ and test/ folders of them)"
            ) from e

    def _holdout(self, idx: Tensor, fraction: float, key: str) -> tuple[Tensor, Tensor]:
        """Split indices (N,) into (kept, held out) with a fixed seed; both sorted, both non-empty."""
        n, n_out = len(idx), int(round(len(idx) * fraction))
        if not 0 < n_out < n:
            raise ConfigError(key, fraction, f"must leave both splits non-empty (n={n})")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(TEST_SEED))
        return idx[perm[n_out:].sort().values], idx[perm[:n_out].sort().values]

    def _open(self) -> dict[str, tuple[datasets.ImageFolder, Tensor]]:
        """Find the split folders and index every split: train/ + test/ (+ val/), train/ + val/, or one folder."""
        root = os.path.abspath(self.root)
        if not os.path.isdir(root):
            raise DlxError(f"image_folder: no folder {root}; set data.root to a folder of <class>/ folders")
        sub = {s: os.path.join(root, s) for s in ("train", "val", "test") if os.path.isdir(os.path.join(root, s))}
        if sub and "train" not in sub:  # else ImageFolder would take test/ and val/ for classes
            raise DlxError(f"image_folder: {root} has {'/ and '.join(sub)}/ but no train/ folder next to it")
        train = self._folder(sub.get("train", root))
        train_idx = torch.arange(len(train))
        held = [self._folder(sub[s]) for s in ("test", "val") if "train" in sub and s in sub]
        for ds in held:
            if ds.classes != train.classes:
                raise DlxError(
                    f"image_folder: class folders of {ds.root} ({ds.classes}) differ from those of "
                    f"{train.root} ({train.classes}); every split needs the same class sub-folders"
                )
        if held:  # test/ if present, else val/ serves as the test split
            test = (held[0], torch.arange(len(held[0])))
        else:
            train_idx, test_idx = self._holdout(train_idx, self.test_fraction, "data.test_fraction")
            test = (train, test_idx)
        if len(held) == 2:  # both test/ and val/
            val = (held[1], torch.arange(len(held[1])))
        else:
            (train_idx,), held_val = self._split_val((train_idx,))
            val = test if held_val is None else (train, held_val[0])  # val_fraction 0: validate on the test split
        self.val_is_test = val is test
        if self.limit is not None:
            train_idx = train_idx[: self.limit]
        return {"train": (train, train_idx), "val": val, "test": test}

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Index the folders and estimate the normalization from a fixed subset of training images."""
        self.device = torch.device(device)
        self.parts = self._open()
        self.classes = list(self.parts["train"][0].classes)
        idx = self.parts["train"][1]
        pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(TEST_SEED))[:NORM_IMAGES]
        x = torch.cat([x for x, _ in self._loader("train", pick.split(self.eval_batch_size))])  # (<=512, 3, S, S)
        self._fit_normalization(x)

    def _loader(self, split: str, positions: list[Tensor] | tuple[Tensor, ...]) -> Iterator[tuple[Tensor, Tensor]]:
        """Exactly these batches (positions within `split`), in this order, decoded by the workers.

        One DataLoader per split keeps its workers between passes (`persistent_workers`): starting them each
        epoch costs a fork per worker here and a fresh Python that imports torch per worker where processes
        spawn (macOS, Windows). A pass that starts while the split's previous one is still being read (the
        train split evaluated inside a training epoch) gets a loader of its own.
        """
        try:
            yield from self._decoded(split, positions)
        except Exception as e:  # noqa: BLE001 - a worker re-raises load_rgb's error inside its own message
            m = re.search(rf"{UNREADABLE}(.+?): ([^\n]*)", str(e))
            if not m:
                raise
            path, reason = m.group(1), m.group(2)
            raise DlxError(f"image_folder: unreadable image {path} ({reason}); remove or replace it") from None

    def _decoded(self, split: str, positions: list[Tensor] | tuple[Tensor, ...]) -> Iterator[tuple[Tensor, Tensor]]:
        ds, idx = self.parts[split]
        batches = [idx[p].tolist() for p in positions]  # positions in the split -> indices in the folder
        kept = self._loaders.get(split)
        if self.num_workers == 0 or split in self._reading:
            loader = DataLoader(
                ds, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.device.type == "cuda"
            )
            yield from loader
            return
        if kept is None:
            kept = self._loaders[split] = DataLoader(
                ds, batch_sampler=BatchPlan(), num_workers=self.num_workers, persistent_workers=True,
                pin_memory=self.device.type == "cuda",
            )
        kept.batch_sampler.batches = batches  # before iter(): the workers are handed the first batches there
        self._reading.add(split)
        try:
            yield from kept
        finally:
            self._reading.discard(split)

    # ---- shape facts --------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return 3  # torchvision's loader converts every image to RGB

    @property
    def size(self) -> int:
        return self.image_size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def facts(self) -> dict[str, int]:
        return {
            "num_classes": self.num_classes, "in_features": self.channels * self.size**2,
            "channels": self.channels, "size": self.size,
        }

    # ---- batches ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.parts["train"][1])

    def num_batches(self, split: str) -> int:
        """Training drops the last partial batch (every step sees `batch_size` samples); eval keeps it."""
        n = len(self.parts[split][1])
        if split == "train":
            return max(1, n // self.batch_size) // self.world_size or 1
        return -(-n // self.eval_batch_size)

    def batches(self, split: str, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yield device batches of `split` from batch `start` on; skipped batches are never decoded."""
        n = len(self.parts[split][1])
        if split == "train":
            bs, order = min(self.batch_size, n), self.permutation(epoch)
            js = [i * self.world_size + self.rank for i in range(start, self.num_batches("train"))]
            positions = [order[j * bs : (j + 1) * bs] for j in js]
        else:
            bs = self.eval_batch_size
            positions = [torch.arange(i * bs, min((i + 1) * bs, n)) for i in range(start, self.num_batches(split))]
        for x, y in self._loader(split, positions):
            yield self._prepare((x, y), train=split == "train")
