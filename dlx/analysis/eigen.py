"""Eigen-images (Turk and Pentland 1991, "eigenfaces"): PCA of a data set's images, and what it is good for.

Images (N, C, H, W) in [0, 1] are flattened to x in R^D. With the mean m and the top-k principal
directions U_k (D, k) of the training images:
  - eigen-images: the columns of U_k drawn as images (the directions of largest pixel variance);
  - reconstruction from k components: m + U_k U_k^T (x - m);
  - explained variance: the share of the total pixel variance the first k directions carry;
  - distance from the eigen-space ("distance from face space"): ||(x - m) - U_k U_k^T (x - m)||, small
    for images like the training data and large for others: an out-of-distribution detector,
    measured by the AUROC of in-distribution test images against out-of-distribution images.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dlx.errors import DlxError


@dataclass
class EigenSpace:
    """PCA of flattened images: mean (D,), components (r, D) orthonormal rows, variances (r,)."""

    mean: Tensor
    components: Tensor
    variances: Tensor
    shape: tuple[int, int, int]  # (C, H, W)

    @property
    def explained_ratio(self) -> Tensor:
        return self.variances / self.variances.sum()

    def project(self, x: Tensor, k: int) -> Tensor:
        """Coefficients of images (N, C, H, W) on the first k components: (N, k)."""
        return (x.flatten(1) - self.mean) @ self.components[:k].T

    def reconstruct(self, x: Tensor, k: int) -> Tensor:
        """m + U_k U_k^T (x - m), as images (N, C, H, W)."""
        return (self.mean + self.project(x, k) @ self.components[:k]).view(-1, *self.shape)

    def distance(self, x: Tensor, k: int) -> Tensor:
        """Distance of each image from the k-dimensional eigen-space (the reconstruction error norm): (N,)."""
        return (x - self.reconstruct(x, k)).flatten(1).norm(dim=1)


def fit(x: Tensor) -> EigenSpace:
    """PCA by SVD of the centred data matrix (N, D): X - m = U S V^T, components = rows of V^T."""
    flat = x.flatten(1).double()
    mean = flat.mean(0)
    _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    variances = s.pow(2) / max(len(flat) - 1, 1)
    return EigenSpace(mean.float(), vh.float(), variances.float(), tuple(x.shape[1:]))


def images(data, split: str, limit: int | None = None) -> Tensor:  # noqa: ANN001 - a data module
    """Pixels in [0, 1] (N, C, H, W) of a split (the data module is built with normalize=false)."""
    parts, n = [], 0
    for batch in data.batches(split):
        x = batch[0]
        if x.dim() != 4:
            raise DlxError(f"eigen-images need an image data set; this one gives inputs of shape {tuple(x.shape[1:])}")
        parts.append(x.float().cpu())
        n += len(x)
        if limit and n >= limit:
            break
    return torch.cat(parts)[:limit].clamp(0, 1)


def conform(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Images of another data set brought to (C, H, W): grey <-> RGB by mean/repeat, then resized."""
    c, h, w = shape
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True) if c == 1 else x[:, :1].expand(-1, c, -1, -1)
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def shuffled_pixels(x: Tensor, generator: torch.Generator) -> Tensor:
    """Noise with the data's own per-pixel distributions: each pixel position permuted across images.

    Every pixel keeps its marginal distribution, only the correlations between pixels are destroyed,
    so the detector cannot win on brightness or contrast alone.
    """
    flat = x.flatten(1)
    idx = torch.argsort(torch.rand(flat.shape, generator=generator), dim=0)  # a permutation per column
    return flat.gather(0, idx).view_as(x)


def auroc(inside: Tensor, outside: Tensor) -> float:
    """AUROC of separating outside (positive) from inside by the score (distance)."""
    from sklearn.metrics import roc_auc_score

    scores = torch.cat([inside, outside]).numpy()
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(labels, scores))


# ---- figures ----------------------------------------------------------------------------------------
def _picture(v: Tensor, shape: tuple[int, int, int], side: int, signed: bool):  # noqa: ANN202
    from dlx.analysis.images import colormap, minmax, symmetric, to_pil

    img = v.view(shape)
    if signed and shape[0] == 1:
        return to_pil(colormap(symmetric(img[0]).numpy(), diverging=True), side)
    return to_pil(minmax(img), side)


def components_figure(space: EigenSpace, k: int):  # noqa: ANN201 - PIL image
    """The mean image and the top-k eigen-images (grey sets: blue negative, red positive)."""
    from dlx.analysis.images import grid, table

    side = max(64, space.shape[-1] * 2)
    mean = _picture(space.mean, space.shape, side, signed=False)
    comps = [_picture(space.components[i], space.shape, side, signed=True) for i in range(k)]
    ratio = space.explained_ratio
    return table([[mean, grid(comps, min(8, k))]], ["mean", f"top {k} eigen-images ({100 * float(ratio[:k].sum()):.1f}%"
                                                     " of the variance)"])


def reconstructions_figure(space: EigenSpace, x: Tensor, ks: list[int]):  # noqa: ANN201
    """Rows of test images: the original, then its reconstruction from each k in `ks`."""
    from dlx.analysis.images import table, to_pil

    side = max(64, space.shape[-1] * 2)
    rows = []
    for img in x:
        row = [to_pil(img, side)]
        row += [to_pil(space.reconstruct(img[None], k)[0].clamp(0, 1), side) for k in ks]
        rows.append(row)
    return table(rows, ["original", *[f"k={k}" for k in ks]], title="reconstruction from k components")


def variance_figure(space: EigenSpace, k: int):  # noqa: ANN201 - plot Figure
    from dlx.analysis.plot import Figure

    ratio = space.explained_ratio.numpy()
    n = np.arange(1, len(ratio) + 1)
    fig = Figure("explained variance", xlabel="number of components", ylabel="share of pixel variance",
                 ylim=(0, 1.02), legend="lower right")
    fig.line(n, np.cumsum(ratio), label="cumulative")
    fig.line(n, ratio, label="per component")
    fig.line([k, k], [0, 1], label=f"k={k} ({100 * ratio[:k].sum():.1f}%)", color="gray", width=1)
    return fig


def ood_figure(inside: Tensor, outside: Tensor, ood_name: str, k: int, score: float):  # noqa: ANN201
    from dlx.analysis.plot import Figure

    hi = float(torch.cat([inside, outside]).max())
    fig = Figure(f"distance from the {k}-dim eigen-space: AUROC {score:.3f}", xlabel="distance", ylabel="density")
    fig.hist(inside.numpy(), bins=40, range=(0, hi), label="test images (in distribution)", color="#2ca02c")
    fig.hist(outside.numpy(), bins=40, range=(0, hi), label=f"{ood_name} (out of distribution)", color="#d62728")
    return fig
