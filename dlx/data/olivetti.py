"""The Olivetti faces (AT&T Laboratories Cambridge): 400 grey 64x64 faces, 10 each of 40 people.

The data set of eigenfaces (Turk and Pentland 1991), through scikit-learn's fetcher: the file
`olivetti_py3.pkz` in `data.root` (scikit-learn's cache format), fetched with `data.download=true`
when online. Offline and without the file, loading fails with one line saying where it looked.
Test split: 2 images of every person (fixed, seed 0), so each person is seen in training.
"""

import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from dlx.data.base import Splits, TensorData
from dlx.errors import DlxError

FILE = "olivetti_py3.pkz"  # scikit-learn's cache name (sklearn.datasets._base._pkl_filepath)
TEST_PER_PERSON = 2


class OlivettiFaces(TensorData):
    """Olivetti faces as uint8 (400, 1, 64, 64) with the person (0..39) as the label."""

    def load(self) -> Splits:
        home = Path(self.root).resolve()
        if not (home / FILE).is_file() and not self.download:
            raise DlxError(f"olivetti_faces: {home / FILE} not found; data.download=true fetches it with "
                           "scikit-learn (needs internet), or point data.root at a folder that holds it")
        from sklearn.datasets import fetch_olivetti_faces

        try:  # scikit-learn prints "downloading ..." to stdout and warns on each retry: keep stdout clean
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                bunch = fetch_olivetti_faces(data_home=str(home), download_if_missing=self.download, n_retries=1,
                                             delay=0.1)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, socket and file errors: one line
            reason = " ".join(str(e).split()) or type(e).__name__
            raise DlxError(f"olivetti_faces: cannot fetch the faces into {home} ({reason}); "
                           "scikit-learn downloads them from the internet") from None
        x = torch.from_numpy(np.round(bunch.images * 255)).to(torch.uint8)[:, None]  # (400, 1, 64, 64)
        y = torch.from_numpy(bunch.target).long()
        g = torch.Generator().manual_seed(0)
        test = torch.zeros(len(y), dtype=torch.bool)
        for person in y.unique():
            idx = torch.nonzero(y == person)[:, 0]
            test[idx[torch.randperm(len(idx), generator=g)[:TEST_PER_PERSON]]] = True
        classes = [f"person {i}" for i in range(int(y.max()) + 1)]
        return Splits(train=(x[~test], y[~test]), test=(x[test], y[test]), classes=classes)
