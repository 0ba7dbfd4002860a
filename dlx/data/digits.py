"""scikit-learn's bundled handwritten digits: 1797 real 8x8 images, 10 classes, no download.

The default data set, so `dlx train` works anywhere offline. Pixels are 0..16 in the original;
they are stretched to uint8 0..255 so every image data set enters the model the same way.
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dlx.data.base import Splits, TensorData


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8) with pixels 0..16 and labels (1797,), from scikit-learn's bundled digits.csv.gz.

    The file is read directly: importing sklearn.datasets pulls in scipy.stats, 1-2 s of every default
    `dlx train`'s start-up. `load_digits` reads the same file; it is the fallback if the file moves.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixels, then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


class Digits(TensorData):
    """The UCI optical digits (8x8). Test split: a fixed 20% (stratified by a seeded shuffle)."""

    def load(self) -> Splits:
        images, labels = _digits_arrays()
        x = torch.from_numpy(images).mul(255 / 16).round().to(torch.uint8)[:, None]  # (N, 1, 8, 8)
        y = torch.from_numpy(labels).long()  # (N,)
        # The test split is fixed (seed 0), independent of the run's seed, so runs stay comparable.
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        n_test = len(y) // 5
        test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
        return Splits(train=(x[train], y[train]), test=(x[test], y[test]), classes=[str(i) for i in range(10)])
