"""MC-dropout (Gal and Ghahramani 2016) and the measures of predictive uncertainty built on it.

Keeping dropout on at test time and averaging T stochastic forward passes approximates the predictive
distribution of a Bayesian net. From the T softmax vectors p_t (T, B, K):
  - predictive mean        p = 1/T sum_t p_t
  - predictive entropy     H[p] = -sum_k p_k log p_k                (total uncertainty)
  - expected entropy       1/T sum_t H[p_t]                          (aleatoric part)
  - mutual information     I = H[p] - 1/T sum_t H[p_t]               (epistemic part; BALD, Houlsby et al. 2011)
  - variation ratio        1 - (votes of the modal class) / T        (Freeman 1965)
Only dropout layers go to train mode; BatchNorm keeps its running statistics (eval mode), otherwise
every pass would also change with the batch's composition.

Calibration (Guo et al. 2017): confidences max_k p_k in M = 15 equal-width bins; the expected
calibration error is ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from dlx.errors import DlxError

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
EPS = 1e-12


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout modules that actually drop something (p > 0)."""
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


def require_dropout(model: nn.Module, where: str) -> None:
    """Refuse MC-dropout on a model with nothing to sample: one clear line naming the fix."""
    if not dropout_layers(model):
        raise DlxError(f"MC-dropout needs dropout at test time, but {type(model).__name__} in {where} has no "
                       "dropout layer with p > 0: train it with model.dropout=0.3 (or another rate in (0, 1))")


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode everywhere except the dropout layers; restores the previous mode on exit."""
    was_training = model.training
    model.eval()
    for m in dropout_layers(model):
        m.train()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def mc_probs(model: nn.Module, x: Tensor, samples: int) -> Tensor:
    """Softmax outputs of `samples` stochastic passes: (T, B, K). Call inside `mc_dropout(model)`.

    A classifier of dlx's two-part form (`forward(x) = classifier(features(x))`) whose `features` hold no dropout
    layer is deterministic up to its classifier: the features are computed once and only the classifier runs T
    times. Same outputs, the same random draws in the same order, T times less convolution work (Gal et al.'s CNN
    and LeNet keep their dropout after the convs).
    """
    head = model
    if deterministic_features(model):
        x, head = model.features(x), model.classifier
    return torch.stack([head(x).float().softmax(-1) for _ in range(samples)])


def deterministic_features(model: nn.Module) -> bool:
    """Whether `model` is a features -> classifier net with no dropout layer in its features."""
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    return isinstance(features, nn.Module) and isinstance(classifier, nn.Module) and not dropout_layers(features)


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy in nats along `dim`."""
    return -(p * p.clamp_min(EPS).log()).sum(dim)


def predictive_entropy(probs: Tensor) -> Tensor:
    """H of the mean prediction, (T, B, K) -> (B,)."""
    return entropy(probs.mean(0))


def expected_entropy(probs: Tensor) -> Tensor:
    """Mean over passes of each pass's entropy, (T, B, K) -> (B,)."""
    return entropy(probs).mean(0)


def mutual_information(probs: Tensor) -> Tensor:
    """Mutual information between the prediction and the weights (BALD), (T, B, K) -> (B,), >= 0."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0)


def variation_ratio(probs: Tensor) -> Tensor:
    """1 - share of passes voting for the modal class, (T, B, K) -> (B,)."""
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)  # (B, K)
    return 1 - votes.amax(-1).float() / probs.shape[0]


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict[str, list[float] | float]:
    """Reliability-diagram bins and the expected calibration error.

    Args:
        confidence: (N,) predicted probability of the predicted class.
        correct: (N,) 1 where the prediction was right.
        bins: M equal-width bins over (0, 1]; sample i goes to bin m with (m - 1)/M < conf_i <= m/M.

    Returns:
        ece, and per bin: lower and upper edge, count, mean accuracy and mean confidence (0 when empty).
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    idx = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=bins)
    nonempty = count > 0
    acc = np.divide(acc_sum, count, out=np.zeros(bins), where=nonempty)
    conf = np.divide(conf_sum, count, out=np.zeros(bins), where=nonempty)
    n = max(len(confidence), 1)
    ece = float(np.sum(count / n * np.abs(acc - conf)))
    edges = np.linspace(0, 1, bins + 1)
    return {"ece": ece, "lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
            "accuracy": acc.tolist(), "confidence": conf.tolist()}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE with `bins` equal-width bins (Guo et al. 2017)."""
    return float(calibration(confidence, correct, bins)["ece"])


def reliability_figure(cal: dict, title: str):  # noqa: ANN201 - dlx.analysis.plot.Figure
    """Accuracy per confidence bin (blue bars) against the diagonal, each bin's mean confidence as a black dot,
    and the gap between the two in the middle half of the bin: red where the model is overconfident (mean
    confidence above accuracy), green where it is underconfident. Every bar is one bin of `cal` (the JSON)."""
    from dlx.analysis.plot import Figure

    lower, upper = np.array(cal["lower"]), np.array(cal["upper"])
    acc, conf, count = np.array(cal["accuracy"]), np.array(cal["confidence"]), np.array(cal["count"])
    used = count > 0
    quarter = (upper - lower) / 4
    inner_lo, inner_hi = lower + quarter, upper - quarter
    over, under = used & (conf > acc), used & (conf < acc)
    fig = Figure(f"{title}  (ECE {cal['ece']:.3f})", xlabel="confidence", ylabel="accuracy",
                 xlim=(0, 1), ylim=(0, 1), legend="upper left")
    fig.bars(lower[used], upper[used], acc[used], label="accuracy of the bin", color="#1f77b4", alpha=0.85)
    if over.any():
        fig.bars(inner_lo[over], inner_hi[over], conf[over], bottom=acc[over], color="#d62728", alpha=0.75,
                 label="overconfident: confidence > accuracy")
    if under.any():
        fig.bars(inner_lo[under], inner_hi[under], acc[under], bottom=conf[under], color="#2ca02c", alpha=0.75,
                 label="underconfident: confidence < accuracy")
    fig.scatter((lower[used] + upper[used]) / 2, conf[used], label="mean confidence of the bin", color="black",
                radius=3)
    fig.line([0, 1], [0, 1], label="perfect calibration", color="gray")
    return fig
