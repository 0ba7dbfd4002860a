"""Write small data sets in the real on-disk formats torchvision reads, for tests (no downloads, no mocks).

Every writer takes the root that `data.root` will point at, lays the files out where torchvision looks
for them and returns what it wrote as numpy arrays in dlx's layout, so a test can check exact round trips:
`{"train": (x uint8 (N, C, H, W), y int64 (N,)), "test": (...)}`. Labels cycle through every class
(then shuffled), so each class appears as soon as N >= number of classes.

CIFAR and SVHN files written here have other md5 sums than the official ones, so load them with
`data.verify=false` (`CIFAR10(verify=False)`); MNIST-format files are not md5-checked by torchvision.

End-to-end use: `write_mnist(tmp_path / "d")`, then `dlx train data=mnist paths.data=<tmp>/d` (or
`data.root=...`); `write_cifar10(...)`, then `dlx train data=cifar10 data.root=... data.verify=false`.
Import as `from tests.data_files import write_mnist`.
"""

import pickle
from pathlib import Path

import numpy as np

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _images(rng: np.random.Generator, n: int, c: int, side: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images (N, C, H, W) with every byte value possible, and shuffled cycling labels (N,)."""
    x = rng.integers(0, 256, size=(n, c, side, side), dtype=np.uint8)
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    return x, y


def _idx(array: np.ndarray) -> bytes:
    """IDX bytes (big-endian header: 0, 0, type 0x08 = uint8, number of dims, then each dim as uint32)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: str | Path, n_train: int = 60, n_test: int = 20, *, fashion: bool = False, seed: int = 0
) -> Arrays:
    """Write MNIST (or Fashion-MNIST) IDX files, uncompressed, under `root/MNIST/raw/` (`root/FashionMNIST/raw/`).

    Args:
        root: the folder `data.root` points at.
        n_train: number of training images (28x28 grey).
        n_test: number of test images.
        fashion: write Fashion-MNIST's folder instead of MNIST's (same format).
        seed: seeds the random pixels and labels.

    Returns:
        {"train": (x (N, 1, 28, 28) uint8, y (N,) int64), "test": (...)}, as `dlx` should load them.
    """
    raw = Path(root) / ("FashionMNIST" if fashion else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _images(rng, n, 1, 28, 10)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(x[:, 0]))  # IDX images are (N, 28, 28)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(y))
        out[split] = (x, y)
    return out


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str | Path, n_train: int = 50, n_test: int = 10, *, seed: int = 0) -> Arrays:
    """Write CIFAR-10's python pickles under `root/cifar-10-batches-py/`.

    Files: `data_batch_1`..`data_batch_5` (the training images split across them in order), `test_batch`
    and `batches.meta` with the 10 real label names. Each batch is a dict with "data" (N, 3072) uint8
    (channel-major rows: R plane, G plane, B plane) and "labels" (list of int). Load with `verify=False`.

    Args:
        root: the folder `data.root` points at.
        n_train: number of training images (32x32 RGB), at least 5 (one per batch file).
        n_test: number of test images.
        seed: seeds the random pixels and labels.

    Returns:
        {"train": (x (N, 3, 32, 32) uint8, y (N,) int64), "test": (...)}, in file order.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y = _images(rng, n_train, 3, 32, 10)
    for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
        _pickle(folder / f"data_batch_{i + 1}", {"data": x[part].reshape(len(part), -1), "labels": y[part].tolist()})
    x_test, y_test = _images(rng, n_test, 3, 32, 10)
    _pickle(folder / "test_batch", {"data": x_test.reshape(n_test, -1), "labels": y_test.tolist()})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    return {"train": (x, y), "test": (x_test, y_test)}


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, *, seed: int = 0) -> Arrays:
    """Write CIFAR-100's python pickles under `root/cifar-100-python/`: `train`, `test` and `meta`.

    Each split is a dict with "data" (N, 3072) uint8, "fine_labels" and "coarse_labels" (lists of int);
    `meta` holds "fine_label_names" (100 names, here "class_00".."class_99") and "coarse_label_names".
    Load with `verify=False`.

    Args:
        root: the folder `data.root` points at.
        n_train: number of training images (32x32 RGB).
        n_test: number of test images.
        seed: seeds the random pixels and labels.

    Returns:
        {"train": (x (N, 3, 32, 32) uint8, y (N,) int64 fine labels), "test": (...)}.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 3, 32, 100)
        entry = {"data": x.reshape(n, -1), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()}
        _pickle(folder / split, entry)
        out[split] = (x, y)
    meta = {"fine_label_names": [f"class_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}
    _pickle(folder / "meta", meta)
    return out


def write_svhn(root: str | Path, n_train: int = 40, n_test: int = 20, *, seed: int = 0) -> Arrays:
    """Write SVHN's `train_32x32.mat` and `test_32x32.mat` directly under `root` (MATLAB v5, scipy.io).

    As in the official files, X is (32, 32, 3, N) uint8 and y is (N, 1) with the digit 0 stored as 10.
    Load with `verify=False`.

    Args:
        root: the folder `data.root` points at.
        n_train: number of training images.
        n_test: number of test images.
        seed: seeds the random pixels and labels.

    Returns:
        {"train": (x (N, 3, 32, 32) uint8, y (N,) int64 with 0 for the digit 0), "test": (...)}.
    """
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 3, 32, 10)
        stored = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # (N, 1), SVHN's 10 for the digit 0
        savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored})  # (H, W, C, N)
        out[split] = (x, y)
    return out


def write_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "fish"),
    per_class: dict[str, int] | None = None,
    *,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write small PNGs of varied sizes in class sub-folders: `root/<split>/<class>/<i>.png`.

    Args:
        root: the folder `data.root` points at.
        classes: class sub-folder names.
        per_class: images per class for each split folder, e.g. {"train": 6, "test": 2}; the split ""
            writes class folders directly under `root` (no split folders). Default {"train": 6, "test": 2}.
        seed: seeds the pixels and the image sizes (between 10 and 24 pixels a side, not square).

    Returns:
        The written files per split, sorted as torchvision's ImageFolder lists them.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for split, n in (per_class or {"train": 6, "test": 2}).items():
        files = []
        for c in classes:
            folder = Path(root) / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(10, 25, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
                files.append(folder / f"{i:03d}.png")
        written[split] = sorted(files)
    return written
