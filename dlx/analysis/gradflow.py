"""Gradient flow: the per-layer gradient norms a run logged (`trainer.log_grad_norms=true`), over training.

The loop writes `grad_norm/<layer>` (the L2 norm of each weight's gradient) into metrics.jsonl at
every log step. Two plots: each layer's norm against the step (log scale), and the norm against the
layer's depth at a few moments of training: a slope down towards the input is the vanishing gradient
(deep sigmoid nets), a slope up is the explosion of deep plain nets with batch norm.
"""

from pathlib import Path

import numpy as np

from dlx import rundir
from dlx.errors import DlxError

PREFIX = "grad_norm/"


def read(run_dir: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps (S,) and for each layer, in model order, its norms (S,) (NaN where a step lacks it)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise DlxError(f"{run_dir} has no metrics.jsonl: is it a dlx run folder?")
    records = [r for r in rundir.read_metrics(run_dir) if any(k.startswith(PREFIX) for k in r)]
    if not records:
        raise DlxError(f"{run_dir} logged no per-layer gradient norms: train with trainer.log_grad_norms=true")
    layers: list[str] = []
    for record in records:
        layers += [k[len(PREFIX) :] for k in record if k.startswith(PREFIX) and k[len(PREFIX) :] not in layers]
    steps = np.array([r["step"] for r in records], dtype=float)
    norms = {name: np.array([r.get(PREFIX + name, np.nan) for r in records], dtype=float) for name in layers}
    return steps, norms


def over_training_figure(steps: np.ndarray, norms: dict[str, np.ndarray], max_lines: int = 20):  # noqa: ANN201
    """One line per layer (at most `max_lines`, evenly picked from input to output) over the steps, coloured by
    depth (dark blue at the input to yellow at the output); the legend names every line when they are few, else
    the first, a few in between and the last, with their place in the net."""
    from dlx.analysis.plot import Figure

    names = list(norms)
    if len(names) > max_lines:
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_lines).round().astype(int)]
    labelled = set(names) if len(names) <= 8 else {names[i] for i in np.linspace(0, len(names) - 1, 5).round()
                                                                              .astype(int)}
    fig = Figure("per-layer gradient norm during training (colour: depth, dark = input side)", xlabel="step",
                 ylabel="gradient L2 norm", logy=True, size=(860, 520), legend="upper right")
    for i, name in enumerate(names):
        where = "input side" if i == 0 else "output side" if i == len(names) - 1 else f"layer {i + 1}/{len(names)}"
        fig.line(steps, norms[name], label=f"{name} ({where})" if name in labelled else None,
                 color=depth_colour(i / max(len(names) - 1, 1)))
    return fig


# viridis at 0, 1/4, 1/2, 3/4, 1: dark blue -> teal -> green -> yellow, readable in grey too.
VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


def depth_colour(t: float) -> str:
    """'#rrggbb' at `t` in [0, 1] along viridis (linear between its anchors)."""
    pos = min(max(t, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(pos), len(VIRIDIS) - 2)
    f = pos - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(VIRIDIS[i], VIRIDIS[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def profile_figure(steps: np.ndarray, norms: dict[str, np.ndarray]):  # noqa: ANN201
    """Norm against depth (input left, output right) at the first, middle and last logged step."""
    from dlx.analysis.plot import Figure

    names = list(norms)
    table = np.stack([norms[n] for n in names])  # (L, S)
    picks = sorted({0, len(steps) // 2, len(steps) - 1})
    stride = max(1, len(names) // 24)  # keep the tick labels readable
    ticks = [(i, names[i]) for i in range(0, len(names), stride)]
    fig = Figure("gradient flow: norm by layer", xlabel="", ylabel="gradient L2 norm", logy=True,
                 size=(860, 560), xticks=ticks)
    for j in picks:
        fig.line(np.arange(len(names)), table[:, j], label=f"step {int(steps[j])}")
    return fig


def summary(steps: np.ndarray, norms: dict[str, np.ndarray]) -> dict:
    """Per-layer mean norms and the first/last layer ratio at the end (< 1: vanishing towards the input)."""
    names = list(norms)
    last = {n: float(norms[n][-1]) for n in names}
    first, final = last[names[0]], last[names[-1]]
    return {"layers": names, "steps": steps.astype(int).tolist(),
            "mean_norm": {n: float(np.nanmean(norms[n])) for n in names}, "last_norm": last,
            "first_to_last_ratio": first / final if final else None}
