"""scikit-learn's bundled handwritten digits: 1797 real 8x8 images, 10 classes, no download.

The default data set, so `dlx train` works anywhere offline. Pixels are 0..16 in the original;
they are stretched to uint8 0..255 so every image data set enters the model the same way.
"""

import torch

from dlx.data.base import Splits, TensorData


class Digits(TensorData):
    """The UCI optical digits (8x8). Test split: a fixed 20% (stratified by a seeded shuffle)."""

    def load(self) -> Splits:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.from_numpy(bunch.images).mul(255 / 16).round().to(torch.uint8)[:, None]  # (N, 1, 8, 8)
        y = torch.from_numpy(bunch.target).long()  # (N,)
        # The test split is fixed (seed 0), independent of the run's seed, so runs stay comparable.
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        n_test = len(y) // 5
        test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
        return Splits(train=(x[train], y[train]), test=(x[test], y[test]), classes=[str(i) for i in range(10)])
