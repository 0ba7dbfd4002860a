"""`dlx eval RUN_DIR [--split test] [--mc-samples N]`: metrics of a run's best weights, with MC-dropout.

Without `--mc-samples`: the task's own metrics on the split (as `dlx train` computes them) and, for
classifiers, the negative log-likelihood, the expected calibration error (15 bins), a reliability
diagram and the entropy of correct vs wrong predictions.

With `--mc-samples T`: dropout stays on (BatchNorm does not) and T passes are averaged: predictive
mean, predictive entropy, mutual information (epistemic), variation ratio, their accuracy, NLL and
ECE, whether the uncertainty separates wrong from right predictions (AUROC), a reliability diagram
and histograms of entropy and mutual information for correct vs wrong predictions. Regression runs
with a noise head split the predictive variance into aleatoric (mean sigma^2) and epistemic (variance
of the means) parts (Kendall and Gal 2017).

Writes RUN_DIR/eval-<split>.json, PNGs under RUN_DIR/eval/ and TensorBoard scalars and images there.
"""

import argparse
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx eval", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a run folder (experiments/<name>/<run-id>)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--mc-samples", type=int, default=None, metavar="T",
                   help="MC-dropout: T stochastic passes with dropout on (e.g. 50)")
    p.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE and the reliability diagram")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), last, or a checkpoint file (e.g. best-120.pt kept by trainer.save_top_k)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--seed", type=int, default=0, help="seed of the dropout masks")
    p.add_argument("--out", default=None, help="folder for PNGs and TensorBoard (default RUN_DIR/eval)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from dlx.errors import ConfigError

    if args.mc_samples is not None and args.mc_samples < 2:
        raise ConfigError("--mc-samples", args.mc_samples, "MC-dropout needs at least 2 passes (e.g. 50)")
    if args.bins < 1:
        raise ConfigError("--bins", args.bins, "an integer >= 1")

    import torch

    from dlx.analysis import uncertainty
    from dlx.analysis.loading import Outputs, load_run, output_folder

    run = load_run(args.run_dir, args.device, args.checkpoint)
    if args.mc_samples:
        uncertainty.require_dropout(run.model, str(run.run_dir))
    torch.manual_seed(args.seed)
    out = Outputs(output_folder(args.out, run.run_dir, "eval"), step=run.step)
    s = args.split
    result: dict[str, Any] = {"run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint), "step": run.step,
                              "split": s, "metrics": task_metrics(run, s)}
    from dlx.tasks.classify import Classify

    if isinstance(run.task, Classify):
        probs, labels = collect_probs(run, s, None)
        result["mistakes"] = mistakes_report(out, run, s)
        report = classification_report(out, probs[None], labels, s, args.bins, "deterministic")
        result["calibration"] = report.pop("reliability")
        result["metrics"].update(report)
        if args.mc_samples:
            probs, _ = collect_probs(run, s, args.mc_samples)
            report = classification_report(out, probs, labels, s, args.bins, "mc")
            calibration = report.pop("reliability")
            result["mc_dropout"] = {"samples": args.mc_samples, **report, "calibration": calibration}
    elif args.mc_samples and hasattr(run.task, "predict"):
        result["mc_dropout"] = {"samples": args.mc_samples, **regression_report(run, s, args.mc_samples)}
    if not isinstance(run.task, Classify):
        task_visuals(out, run, s)
    flat = {f"{s}/{k}": v for k, v in result["metrics"].items() if isinstance(v, float)}
    flat.update({f"{s}/mc_{k}": v for k, v in result.get("mc_dropout", {}).items() if isinstance(v, float)})
    out.scalars({f"eval/{k}": v for k, v in flat.items()})
    out.json("eval", result, path=run.run_dir / f"eval-{s}.json" if not args.out else None)
    print_table(flat, run)
    out.close()
    return 0


def task_metrics(run, split: str) -> dict[str, float]:  # noqa: ANN001 - LoadedRun
    """The task's own validation metrics over a whole split (batch-size-weighted means), as dlx train does."""
    from dlx.loop import Meter

    meter = Meter()
    run.task.eval()
    for batch in run.data.batches(split):
        meter.add(run.task.validation_step(batch), batch[0].shape[0])
    return {k.split("/", 1)[1]: v for k, v in meter.read(split).items()}


def collect_probs(run, split: str, samples: int | None) -> tuple[Any, Any]:  # noqa: ANN001
    """Softmax outputs over a split: (T, N, K) with MC-dropout, (N, K) without; labels (N,)."""
    import torch

    from dlx.analysis.uncertainty import mc_dropout, mc_probs

    probs, labels = [], []
    with torch.no_grad():
        for batch in run.data.batches(split):
            x, y = batch[0], batch[1]
            if samples:
                with mc_dropout(run.model):
                    probs.append(mc_probs(run.model, x, samples).cpu())
            else:
                run.model.eval()
                probs.append(run.model(x).float().softmax(-1).cpu())
            labels.append(y.cpu())
    return torch.cat(probs, dim=-2), torch.cat(labels)


def mistakes_report(out, run, split: str) -> dict[str, Any]:  # noqa: ANN001
    """The task's figures of the split (classification: confusion matrix and the most confidently wrong images),
    as at the end of a run: PNGs and TensorBoard images; their numbers for the JSON report."""
    import torch

    run.task.eval()
    with torch.no_grad():
        images, numbers = run.task.figures(run.data, split, f"{split}, {run.checkpoint.stem} weights (step {run.step})")
    for name, img in images.items():
        out.image(f"{name}-{split}", img)
    return numbers


def task_visuals(out, run, split: str) -> None:  # noqa: ANN001
    """The images a task makes at validation (reconstructions, samples, masks), from the evaluated weights in
    eval mode, on the split's first batch."""
    import torch
    from torchvision.utils import make_grid

    from dlx.analysis.images import to_pil

    run.task.eval()
    with torch.no_grad():
        visuals = run.task.visuals(next(iter(run.data.batches(split))))
    for name, v in visuals.items():
        if isinstance(v, str):
            continue
        grid = make_grid(v.detach().float().cpu().clamp(0, 1), nrow=min(8, len(v)), padding=1)
        out.image(f"{name.replace('/', '_')}-{split}", to_pil(grid))


def classification_report(out, probs, labels, split: str, bins: int, kind: str) -> dict[str, Any]:  # noqa: ANN001
    """Accuracy, NLL, ECE and uncertainty of T sets of softmax outputs (T, N, K); writes the PNGs."""
    from sklearn.metrics import roc_auc_score

    from dlx.analysis import uncertainty as u

    mean = probs.mean(0)  # (N, K) predictive mean
    conf, pred = mean.max(-1)
    correct = (pred == labels).numpy()
    nll = float(-mean.gather(1, labels[:, None]).clamp_min(u.EPS).log().mean())
    cal = u.calibration(conf.numpy(), correct, bins)
    entropy = u.predictive_entropy(probs).numpy()
    report: dict[str, Any] = {"acc": float(correct.mean()), "nll": nll, "ece": cal["ece"],
                              "entropy": float(entropy.mean())}
    scores = {"entropy": entropy}
    if probs.shape[0] > 1:
        mi = u.mutual_information(probs).numpy()
        vr = u.variation_ratio(probs).numpy()
        report.update(mutual_information=float(mi.mean()), expected_entropy=float(u.expected_entropy(probs).mean()),
                      variation_ratio=float(vr.mean()))
        scores["mutual_information"] = mi
    wrong = ~correct.astype(bool)
    for name, score in scores.items():
        report[f"{name}_correct"] = float(score[~wrong].mean()) if (~wrong).any() else None
        report[f"{name}_wrong"] = float(score[wrong].mean()) if wrong.any() else None
        if 0 < wrong.sum() < len(wrong):  # how well the uncertainty flags the model's own mistakes
            report[f"{name}_error_auroc"] = float(roc_auc_score(wrong, score))
    report["reliability"] = cal
    label = "MC-dropout" if kind == "mc" else "deterministic"
    tag = f"-{kind}" if kind == "mc" else ""
    out.image(f"reliability{tag}-{split}", u.reliability_figure(cal, f"{label} reliability, {split}").render())
    out.image(f"uncertainty{tag}-{split}", uncertainty_figure(scores, wrong, f"{label}, {split}"))
    return report


def uncertainty_figure(scores: dict[str, np.ndarray], wrong: np.ndarray, title: str):  # noqa: ANN201 - PIL image
    """Histograms of each uncertainty score for correct and wrong predictions, side by side."""
    from PIL import Image

    from dlx.analysis.plot import Figure

    panels = []
    for name, score in scores.items():
        hi = float(score.max()) if score.size and score.max() > 0 else 1.0
        fig = Figure(f"{name.replace('_', ' ')} ({title})", xlabel=f"{name.replace('_', ' ')} (nats)",
                     ylabel="density", size=(560, 400))
        fig.hist(score[~wrong], bins=30, range=(0, hi), label=f"correct ({int((~wrong).sum())})", color="#2ca02c")
        fig.hist(score[wrong], bins=30, range=(0, hi), label=f"wrong ({int(wrong.sum())})", color="#d62728")
        panels.append(fig.render())
    img = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for p in panels:
        img.paste(p, (x, 0))
        x += p.width
    return img


def regression_report(run, split: str, samples: int) -> dict[str, float]:  # noqa: ANN001
    """MC-dropout regression: total predictive variance = aleatoric (mean sigma^2) + epistemic (var of means)."""
    import torch

    from dlx.analysis.uncertainty import mc_dropout

    means, variances, targets = [], [], []
    with torch.no_grad(), mc_dropout(run.model):
        for batch in run.data.batches(split):
            outs = [run.task.predict(batch[0]) for _ in range(samples)]
            means.append(torch.stack([m for m, _ in outs]).cpu())  # (T, B, D)
            if outs[0][1] is not None:
                variances.append(torch.stack([lv.exp() for _, lv in outs]).cpu())
            targets.append(batch[1].cpu())
    mu, y = torch.cat(means, 1), torch.cat(targets)
    epistemic = mu.var(0)  # (N, D)
    aleatoric = torch.cat(variances, 1).mean(0) if variances else torch.zeros_like(epistemic)
    total = epistemic + aleatoric
    mean = mu.mean(0)
    report = {"mse": float((mean - y).pow(2).mean()), "epistemic_var": float(epistemic.mean()),
              "aleatoric_var": float(aleatoric.mean())}
    if variances:
        nll = 0.5 * (total.log() + (y - mean).pow(2) / total + np.log(2 * np.pi))
        report["nll"] = float(nll.mean())
    return report


def print_table(metrics: dict[str, float], run) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dlx eval {run.run_dir} (step {run.step})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    Console().print(table)
