"""1-D regression runs drawn: the data, the predicted mean and the +-2 sigma band of the predicted noise.

For a heteroscedastic model (Kendall and Gal 2017) sigma(x) = exp(s(x) / 2) is the aleatoric noise it
learned; with MC-dropout the band also holds the epistemic part (variance of the sampled means),
which grows where there is no data. On `hetero1d` the true mean and noise are known and drawn too.
"""

import numpy as np
import torch

from dlx.errors import DlxError


@torch.no_grad()
def curves(run, x: torch.Tensor, samples: int | None = None) -> dict[str, np.ndarray]:  # noqa: ANN001 - LoadedRun
    """Predicted mean and std (aleatoric, epistemic, total) on inputs x (N, 1)."""
    from dlx.analysis.uncertainty import mc_dropout

    if samples:
        with mc_dropout(run.model):
            outs = [run.task.predict(x) for _ in range(samples)]
    else:
        outs = [run.task.predict(x)]
    means = torch.stack([m for m, _ in outs]).float()  # (T, N, 1)
    aleatoric = torch.stack([lv.exp() for _, lv in outs]).mean(0) if outs[0][1] is not None else None
    epistemic = means.var(0) if len(outs) > 1 else torch.zeros_like(means[0])
    total = epistemic + (aleatoric if aleatoric is not None else 0)
    result = {"x": x[:, 0].cpu().numpy(), "mean": means.mean(0)[:, 0].cpu().numpy(),
              "sigma_total": total.sqrt()[:, 0].cpu().numpy(), "sigma_epistemic": epistemic.sqrt()[:, 0].cpu().numpy()}
    if aleatoric is not None:
        result["sigma_aleatoric"] = aleatoric.sqrt()[:, 0].cpu().numpy()
    return result


def regress_plot(run, samples: int | None = None, points: int = 200):  # noqa: ANN001, ANN201 - (Figure, dict)
    """The plot and its numbers for a run with 1-D inputs and targets."""
    from dlx.analysis.plot import Figure

    if not hasattr(run.task, "predict"):
        raise DlxError(f"dlx viz regress draws regression runs (task=regress); {run.run_dir} is a "
                       f"{type(run.task).__name__} run")
    batch = next(iter(run.data.batches("test")))
    x_test, y_test = batch[0], batch[1]
    if x_test.dim() != 2 or x_test.shape[1] != 1 or y_test.shape[-1] != 1:
        raise DlxError(f"dlx viz regress draws 1-D regression (x (N, 1) -> y (N, 1)); {run.run_dir} has "
                       f"x {tuple(x_test.shape[1:])} -> y {tuple(y_test.shape[1:])}")
    lo, hi = float(x_test.min()), float(x_test.max())
    grid = torch.linspace(lo, hi, points, device=run.device)[:, None]
    c = curves(run, grid, samples)
    fig = Figure(f"{run.run_dir.name}: mean +- 2 sigma", xlabel="x", ylabel="y", legend="upper left")
    xs = c["x"]
    fig.scatter(x_test[:, 0].cpu().numpy(), y_test[:, 0].cpu().numpy(), label="test data", color="#7f7f7f",
                radius=1.5, alpha=0.5)
    truth = _truth(run, grid)
    if truth is not None:
        fig.line(xs, truth[0] + 2 * truth[1], label="true +- 2 sigma", color="black", width=1)
        fig.line(xs, truth[0] - 2 * truth[1], color="black", width=1)
    fig.band(xs, c["mean"] - 2 * c["sigma_total"], c["mean"] + 2 * c["sigma_total"],
             label="predicted +- 2 sigma", color="#1f77b4", alpha=0.3)
    fig.line(xs, c["mean"], label="predicted mean", color="#d62728")
    numbers = {"x": xs.tolist(), "mean": c["mean"].tolist(), "sigma": c["sigma_total"].tolist()}
    if "sigma_aleatoric" in c:
        numbers["sigma_aleatoric"] = c["sigma_aleatoric"].tolist()
    if samples:
        numbers["sigma_epistemic"] = c["sigma_epistemic"].tolist()
    if truth is not None:
        numbers["true_sigma"] = truth[1].tolist()
        if np.std(c["sigma_total"]) > 0:
            numbers["sigma_correlation"] = float(np.corrcoef(c["sigma_total"], truth[1])[0, 1])
    return fig, numbers


def _truth(run, grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:  # noqa: ANN001
    """The known mean and noise std of `hetero1d` on the grid, else None."""
    from dlx.data.hetero1d import Hetero1D, mean_fn, noise_std

    if not isinstance(run.data, Hetero1D):
        return None
    g = grid.cpu()
    return mean_fn(g)[:, 0].numpy(), noise_std(g)[:, 0].numpy()
