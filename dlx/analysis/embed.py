"""Penultimate-layer features of the test set: TensorBoard's projector, t-SNE and PCA scatter plots.

The features are the input of the model's last linear layer: the pooled conv map of a GAP net, the
last hidden layer of an MLP. A trained classifier maps each class to its own cluster there; t-SNE
(van der Maaten and Hinton 2008) keeps neighbourhoods in 2-D, PCA keeps the directions of largest
variance. Numbers that say how well the classes separate: k-nearest-neighbour accuracy (leave-one-out,
k = 5) in the features and in the t-SNE map, and the silhouette score of the t-SNE map.
"""

import numpy as np
import torch
from torch import Tensor, nn

from dlx.errors import DlxError


def last_linear(model: nn.Module) -> nn.Linear:
    """The last Linear of `model.classifier` when there is one (auxiliary heads come after it in some nets)."""
    head = getattr(model, "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    linears = linears or [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DlxError(f"{type(model).__name__} has no linear layer whose input could serve as the embedding")
    return linears[-1]


@torch.no_grad()
def penultimate(model: nn.Module, x: Tensor) -> Tensor:
    """The input of the last Linear layer for a batch: (B, D)."""
    seen: dict[str, Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        seen["x"] = inputs[0]

    handle = last_linear(model).register_forward_pre_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    return seen["x"].flatten(1).float()


def knn_accuracy(z: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy of labels from points z (N, D)."""
    from sklearn.neighbors import KNeighborsClassifier

    if len(z) <= k:
        return float("nan")
    knn = KNeighborsClassifier(n_neighbors=k + 1).fit(z, labels)
    idx = knn.kneighbors(z, return_distance=False)[:, 1:]  # drop each point itself
    votes = labels[idx]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == labels).mean())


def tsne(z: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of (N, D) features (PCA initialization, perplexity at most 30 and below N / 3)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def pca2(z: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """2-D PCA projection and the share of variance each of the two axes explains."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(z)
    return pca.transform(z), pca.explained_variance_ratio_.tolist()


def scatter_figure(points: np.ndarray, labels: np.ndarray, names: list[str], title: str, xlabel: str, ylabel: str):  # noqa: ANN201
    """Points coloured by class, one legend entry per class (up to 10 classes; more share the palette)."""
    from dlx.analysis.plot import PALETTE, Figure

    fig = Figure(title, xlabel=xlabel, ylabel=ylabel, size=(760, 600))
    classes = np.unique(labels)
    if len(classes) <= len(PALETTE):
        for c in classes:
            sel = labels == c
            fig.scatter(points[sel, 0], points[sel, 1], label=names[c], color=PALETTE[c % len(PALETTE)], alpha=0.8)
    else:
        fig.scatter(points[:, 0], points[:, 1], colors=[PALETTE[c % len(PALETTE)] for c in labels], alpha=0.8)
    return fig
