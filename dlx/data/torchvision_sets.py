"""Torchvision's classic data sets as in-memory tensors: MNIST, Fashion-MNIST, CIFAR-10/100, SVHN.

Torchvision reads the files in their official on-disk formats (IDX, pickled batches, .mat) and decodes
them into whole arrays (`.data`, `.targets`); we take those arrays as they are, so there is no
per-sample Python and no per-sample transform. Images become uint8 (N, C, H, W), labels int64 (N,).
The test split is the official one; validation is split off training by `TensorData`. The decoded
tensors are cached next to the files (dlx/data/cache.py), and torchvision is imported only on a miss.

Torchvision's errors (missing files, failed md5 check, unparsable files, failed download) become one
`DlxError` line that names the data set, the absolute folder it looked in and what to do.
"""

import functools
import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from dlx.data import idx
from dlx.data.base import Splits, TensorData
from dlx.data.cache import cached, regular_files
from dlx.errors import DlxError

T = TypeVar("T")

# What a broken or foreign file makes torchvision raise while parsing: the IDX reader asserts on the
# header, pickle and scipy.io raise their own errors, a short file gives EOFError or a reshape ValueError.
_PARSE_ERRORS = (
    RuntimeError, OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AssertionError,
    pickle.UnpicklingError,
)


def _one_line(e: BaseException) -> str:
    """An exception's message squeezed to one line (torchvision's download errors span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def _torchvision_class(name: str) -> Any:
    """`torchvision.datasets.<name>`, imported on first use (the import alone takes ~1.5 s on a small CPU)."""
    from torchvision import datasets

    return getattr(datasets, name)


def _without_md5(cls: type[T], file_lists: dict[str, object]) -> type[T]:
    """A subclass of a torchvision data set whose file lists carry md5 None, so checks test existence only."""
    return type(f"Unverified{cls.__name__}", (cls,), file_lists)


class TorchvisionData(TensorData):
    """Shared part: where the files are, the decoded-tensor cache, and torchvision's errors as one `DlxError`.

    Subclasses set `name` (as in conf/data), `source_name` (the torchvision class), `verify` (md5 check of
    the official files) and implement `folder()`, `files()` and `_split()`.

    Args:
        cache: keep the decoded tensors in `<root>/.dlx-cache` and read them from there while the files
            are unchanged (dlx/data/cache.py).
        The other arguments are `TensorData`'s.
    """

    name = ""
    source_name = ""
    verify = False

    def __init__(self, *, cache: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.cache = cache

    @property
    def source(self) -> Any:
        """The torchvision data set class (imports torchvision)."""
        return _torchvision_class(self.source_name)

    def folder(self) -> str:
        """Absolute folder torchvision reads the files from."""
        raise NotImplementedError

    def files(self) -> list[str]:
        """File names torchvision expects in `folder()`."""
        raise NotImplementedError

    def _split(self, train: bool) -> tuple[Tensor, Tensor, list[str]]:
        """One official split as (x uint8 (N, C, H, W), y int64 (N,), class names)."""
        raise NotImplementedError

    def missing(self) -> list[str]:
        """The expected files that are not in `folder()`."""
        return [f for f in self.files() if not os.path.isfile(os.path.join(self.folder(), f))]

    def broken_file(self) -> str | None:
        """Which file is unreadable and why, when that can be told (after torchvision failed on the set)."""
        return None

    def cache_inputs(self) -> list[str]:
        """The files whose names, sizes and times key the cache: everything in `folder()`."""
        return regular_files(self.folder())

    def load(self) -> Splits:
        if not self.cache:
            return self.decode()
        salt = f"{type(self).__name__}|verify={self.verify}"
        # Checked before caching: bad labels or counts are not kept in the cache (setup checks what loads too).
        return cached(self.root, self.name, self.cache_inputs, salt, lambda: self.checked(self.decode()))

    def checked(self, loaded: Splits) -> Splits:
        self.check_loaded(loaded)
        return loaded

    def decode(self) -> Splits:
        """Read the files with torchvision."""
        x, y, classes = self._split(train=True)
        x_test, y_test, _ = self._split(train=False)  # the official test split; val comes off train
        return Splits(train=(x, y), test=(x_test, y_test), classes=classes)

    def open(self, make: Callable[[], T]) -> T:
        """Run `make` (a torchvision constructor); turn what it raises into one line that says what to do."""
        try:
            return make()
        except _PARSE_ERRORS as e:
            raise self._error(e) from e

    def _error(self, e: BaseException) -> DlxError:
        folder = self.folder()
        missing = self.missing()
        if missing and self.download:
            return DlxError(
                f"{self.name}: could not download into {folder} ({_one_line(e)}); "
                f"put the files ({', '.join(self.files())}) there by hand"
            )
        if missing:
            return DlxError(
                f"{self.name}: data set files not found in {folder} (missing {', '.join(missing)}); "
                f"pass data.download=true to fetch them, or put the torchvision files there"
            )
        broken = self.broken_file()
        if broken:
            return DlxError(f"{self.name}: {broken}; delete the files in {folder} and pass data.download=true")
        # With verify on, torchvision's RuntimeError on present files means an md5 mismatch.
        reason = "md5 differs from the official files" if self.verify and isinstance(e, RuntimeError) else _one_line(e)
        hint = " (or data.verify=false for files you wrote yourself in this format)" if self.verify else ""
        return DlxError(
            f"{self.name}: files in {folder} are corrupt or not the official release ({reason}); "
            f"delete them and pass data.download=true{hint}"
        )


# ---- MNIST family: IDX files under <root>/<ClassName>/raw, or directly in <root> ----------------------
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNIST(TorchvisionData):
    """MNIST handwritten digits, 28x28 grey, 60k train / 10k test.

    Two layouts of the four official IDX files are read: torchvision's (`<root>/MNIST/raw/`, uncompressed,
    what `data.download=true` writes; read by torchvision) and a flat folder that holds them directly, plain
    or gzipped as released (e.g. Debian's `dataset-fashion-mnist`: `data.root=/usr/share/datasets/fashion-mnist`;
    read by dlx.data.idx in half a second, without torchvision). The flat layout is never cached: nothing is
    written into a folder that a package or another person owns.
    """

    name = "mnist"
    source_name = "MNIST"
    class_names = [f"{i} - {w}" for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))]  # torchvision's

    def flat(self) -> dict[str, str] | None:
        """{official name: path} when `root` itself holds all four IDX files (plain or .gz), else None."""
        found = {}
        for name in IDX_FILES:
            for candidate in (name, f"{name}.gz"):
                path = os.path.join(os.path.abspath(self.root), candidate)
                if os.path.isfile(path):
                    found[name] = path
                    break
        return found if len(found) == len(IDX_FILES) else None

    def folder(self) -> str:
        if self.flat() is not None:
            return os.path.abspath(self.root)
        # Torchvision's `raw_folder` is <root>/<class name>/raw; the IDX files are read uncompressed.
        return os.path.abspath(os.path.join(self.root, self.source_name, "raw"))

    def files(self) -> list[str]:
        return list(IDX_FILES)

    def missing(self) -> list[str]:
        return [] if self.flat() is not None else super().missing()

    def load(self) -> Splits:
        return self.decode() if self.flat() is not None else super().load()

    def _split(self, train: bool) -> tuple[Tensor, Tensor, list[str]]:
        flat = self.flat()
        if flat is not None:
            return self._read_flat(flat, "train" if train else "t10k")
        if not self.download:  # torchvision's IDX reader asserts on a bad header without naming the file
            check_idx(self.folder(), "train" if train else "t10k")
        ds = self.open(lambda: self.source(self.root, train=train, download=self.download))
        return ds.data[:, None], ds.targets.long(), list(ds.classes)  # (N, 1, 28, 28) uint8, (N,)

    def _read_flat(self, paths: dict[str, str], prefix: str) -> tuple[Tensor, Tensor, list[str]]:
        x = self.open(lambda: idx.read(paths[f"{prefix}-images-idx3-ubyte"]))  # (N, 28, 28) uint8
        y = self.open(lambda: idx.read(paths[f"{prefix}-labels-idx1-ubyte"]))  # (N,) uint8
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise self._error(ValueError(f"{prefix} images {x.shape} and labels {y.shape} do not match"))
        return torch.from_numpy(x)[:, None], torch.from_numpy(y.astype(np.int64)), list(self.class_names)

    def origin(self, split: str) -> str:
        prefix = "t10k" if split == "test" else "train"
        return os.path.join(self.folder(), f"{prefix}-labels-idx1-ubyte")


IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # type code -> bytes per value


def idx_header(path: str) -> tuple[int, ...]:
    """The dimensions an IDX file declares, checked against its magic number and its size; DlxError naming
    the file when it is not an IDX file or is truncated."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES or not 1 <= magic[3] <= 4:
            raise DlxError(f"{path} is corrupt: not an IDX file (magic number {magic.hex() or 'missing'}); "
                           "delete it and pass data.download=true")
        raw = f.read(4 * magic[3])
    if len(raw) < 4 * magic[3]:
        raise DlxError(f"{path} is corrupt: truncated IDX header; delete it and pass data.download=true")
    dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))
    expected = 4 + 4 * len(dims) + IDX_TYPES[magic[2]] * int(np.prod(dims))
    if size != expected:
        raise DlxError(f"{path} is corrupt: {'truncated' if size < expected else 'longer than its header says'} "
                       f"({size} bytes, the header {dims} needs {expected}); delete it and pass data.download=true")
    return dims


def check_idx(folder: str, prefix: str) -> None:
    """An MNIST split's image and label files: valid IDX files that hold as many labels as images."""
    images = os.path.join(folder, f"{prefix}-images-idx3-ubyte")
    labels = os.path.join(folder, f"{prefix}-labels-idx1-ubyte")
    if not (os.path.isfile(images) and os.path.isfile(labels)):
        return  # torchvision's own message (files not found, download hint)
    image_dims, label_dims = idx_header(images), idx_header(labels)
    if len(image_dims) != 3 or len(label_dims) != 1:
        raise DlxError(f"{images if len(image_dims) != 3 else labels}: IDX file of the wrong kind "
                       f"(dimensions {image_dims if len(image_dims) != 3 else label_dims})")
    if image_dims[0] != label_dims[0]:
        raise DlxError(f"{labels}: {label_dims[0]} labels for the {image_dims[0]} images of {images}")


class FashionMNIST(MNIST):
    """Fashion-MNIST: Zalando's clothing images in MNIST's format and shape (10 classes), same two layouts."""

    name = "fashion_mnist"
    source_name = "FashionMNIST"
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]  # torchvision's


# ---- CIFAR: pickled batches under <root>/cifar-10-batches-py or <root>/cifar-100-python -----------
@functools.cache
def _cifar_without_md5(cls: type[T]) -> type[T]:
    return _without_md5(cls, {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


class CIFAR10(TorchvisionData):
    """CIFAR-10: 32x32 colour images, 10 classes, 50k train / 10k test.

    Args:
        verify: check the md5 sums of the official files (torchvision's default). Files you wrote
            yourself in the same format (tests, subsets) have other sums: pass false for them.
        The other arguments are `TensorData`'s.
    """

    name = "cifar10"
    source_name = "CIFAR10"
    base_folder = "cifar-10-batches-py"  # torchvision's `CIFAR10.base_folder`

    def __init__(self, *, verify: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.verify = verify

    @property
    def unverified(self) -> Any:
        """The torchvision class with its md5 sums blanked out (files you wrote yourself)."""
        return _cifar_without_md5(self.source)

    def folder(self) -> str:
        return os.path.abspath(os.path.join(self.root, self.base_folder))

    def files(self) -> list[str]:
        src = self.source
        return [f for f, _ in src.train_list + src.test_list] + [src.meta["filename"]]

    def broken_file(self) -> str | None:
        """The first pickled batch that does not load or whose data and labels disagree in length."""
        src = self.source
        for name, _ in src.train_list + src.test_list:
            path = os.path.join(self.folder(), name)
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")  # what torchvision itself does with these files
                data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
            except FileNotFoundError:
                continue
            except _PARSE_ERRORS as e:
                return f"{path} is corrupt ({_one_line(e)})"
            if labels is None or len(data) != len(labels) or np.asarray(data).size != len(data) * 3072:
                n = "no" if labels is None else len(labels)
                return f"{path} is corrupt: {len(data)} images ({np.asarray(data).size} bytes) but {n} labels"
        return None

    def origin(self, split: str) -> str:
        return self.folder()

    def _split(self, train: bool) -> tuple[Tensor, Tensor, list[str]]:
        cls = self.source if self.verify else self.unverified
        ds = self.open(lambda: cls(self.root, train=train, download=self.download))
        if len(ds.data) != len(ds.targets):
            counts = f"{len(ds.data)} images but {len(ds.targets)} labels in {self.folder()}"
            raise DlxError(f"{self.name}: {self.broken_file() or counts}")
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        y = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))  # (N,)
        return x, y, list(ds.classes)


class CIFAR100(CIFAR10):
    """CIFAR-100: CIFAR-10's format with 100 fine classes (the coarse superclasses are not used)."""

    name = "cifar100"
    source_name = "CIFAR100"
    base_folder = "cifar-100-python"


# ---- SVHN: one .mat file per split directly under <root> ------------------------------------------
@functools.cache
def _svhn_without_md5(cls: type[T]) -> type[T]:
    return _without_md5(cls, {"split_list": {k: [url, f, None] for k, (url, f, _) in cls.split_list.items()}})


class SVHN(CIFAR10):
    """Street View House Numbers (cropped digits): 32x32 colour, 73k train / 26k test; the digit 0 is label 0.

    Same constructor as `CIFAR10` (with `verify`). The 531k "extra" images are not used.
    """

    name = "svhn"
    source_name = "SVHN"
    mat_files = ("train_32x32.mat", "test_32x32.mat")  # torchvision's `SVHN.split_list` file names

    @property
    def unverified(self) -> Any:
        return _svhn_without_md5(self.source)

    def folder(self) -> str:
        return os.path.abspath(self.root)

    def cache_inputs(self) -> list[str]:
        return [os.path.join(self.folder(), f) for f in self.mat_files]  # the root holds other sets too

    def files(self) -> list[str]:
        return [self.source.split_list[s][1] for s in ("train", "test")]

    def _split(self, train: bool) -> tuple[Tensor, Tensor, list[str]]:
        cls = self.source if self.verify else self.unverified
        split = "train" if train else "test"
        ds = self.open(lambda: cls(self.root, split=split, download=self.download))
        x = torch.from_numpy(np.ascontiguousarray(ds.data))  # already (N, 3, 32, 32) uint8
        y = torch.from_numpy(ds.labels.astype(np.int64))  # (N,), 10 already mapped to 0 by torchvision
        return x, y, [str(i) for i in range(10)]  # torchvision's SVHN has no `.classes`
