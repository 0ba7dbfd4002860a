"""`dlx active [overrides] --acquisition bald`: active learning with MC-dropout (Gal, Islam and Ghahramani 2017).

Start from a few labelled training examples (balanced over the classes), then repeat: train a fresh
model on the labelled set for a fixed number of steps, measure test accuracy, score the unlabelled
pool with T MC-dropout passes and move the K highest-scoring examples into the labelled set.
Acquisition functions (all from dlx.analysis.uncertainty):
  bald              mutual information between prediction and weights (what the model could learn)
  entropy           predictive entropy (max entropy)
  variation_ratios  1 - share of the passes that agree with the modal class
  random            uniform: the baseline every acquisition function is compared with (always run)
Each acquisition function starts from the same labelled set and each round's model from the same seed,
so the curves differ only by what was acquired. Outputs: test accuracy against the number of labels as
a PNG, TensorBoard scalars `active/<acquisition>/test_acc` (step = labels), a table and active.json in
<paths.experiments>/active/<time>-<id>/ (or --out).

The model, data, optimizer and loss come from the usual overrides (`experiment=mc_dropout_mnist`, or
e.g. `model.dropout=0.5`); each round trains with the Stepper of `dlx train` on the labelled subset.
"""

import argparse
import copy
import time
from pathlib import Path
from typing import Any

ACQUISITIONS = ("bald", "entropy", "variation_ratios", "random")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx active", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides as for dlx train, e.g. experiment=mc_dropout_mnist")
    p.add_argument("--acquisition", default="bald",
                   help=f"one or more (comma-separated) of {', '.join(ACQUISITIONS)}; random is always added")
    p.add_argument("--rounds", type=int, default=10, help="acquisition rounds")
    p.add_argument("--initial", type=int, default=20, help="labelled examples at the start (balanced by class)")
    p.add_argument("--per-round", type=int, default=10, help="examples acquired per round (K)")
    p.add_argument("--mc-samples", type=int, default=20, help="MC-dropout passes per pool example (T)")
    p.add_argument("--steps", type=int, default=200, help="training steps per round (a fresh model each round)")
    p.add_argument("--pool-subset", type=int, default=None,
                   help="score a random subset of this many pool examples per round (default: the whole pool)")
    p.add_argument("--out", default=None, help="output folder (default <paths.experiments>/active/<time>-<id>)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    acquisitions = check_args(args)
    from omegaconf import OmegaConf

    from dlx import build, config, runtime
    from dlx.analysis.loading import Outputs

    cfg, _ = config.check(args.overrides)
    OmegaConf.resolve(cfg)
    runtime.seed_everything(int(cfg.seed), False)
    device = runtime.pick_device(cfg.trainer.device)
    data = build.build_data(cfg, device)
    check_setup(cfg, data, args, acquisitions)
    folder = Path(args.out) if args.out else default_folder(cfg)
    out = Outputs(folder)
    labels = data.splits["train"][1]
    initial = balanced_initial(labels, args.initial, int(cfg.seed))
    curves: dict[str, dict[str, list]] = {}
    for acq in acquisitions:
        curves[acq] = run_acquisition(cfg, data, device, initial, acq, args, out)
    out.image("active", curve_figure(curves, cfg).render())
    result = {"acquisitions": curves, "initial": args.initial, "per_round": args.per_round, "rounds": args.rounds,
              "mc_samples": args.mc_samples, "steps": args.steps, "pool_subset": args.pool_subset,
              "config": OmegaConf.to_container(cfg)}
    out.json("active", result)
    print_table(curves)
    out.close()
    return 0


def check_args(args: argparse.Namespace) -> list[str]:
    """Valid numbers and acquisition names; returns the acquisition functions to run, random last."""
    from dlx.errors import ConfigError

    names = [a.strip() for a in args.acquisition.split(",") if a.strip()]
    for a in names:
        if a not in ACQUISITIONS:
            raise ConfigError("--acquisition", a, f"choose from {', '.join(ACQUISITIONS)}")
    for key in ("rounds", "initial", "per_round", "steps"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}", getattr(args, key), "an integer >= 1")
    if args.mc_samples < 2:
        raise ConfigError("--mc-samples", args.mc_samples, "MC-dropout needs at least 2 passes (e.g. 20)")
    if args.pool_subset is not None and args.pool_subset < args.per_round:
        raise ConfigError("--pool-subset", args.pool_subset, f"must hold at least --per-round={args.per_round}")
    return [a for a in dict.fromkeys(names) if a != "random"] + ["random"]


def check_setup(cfg, data, args: argparse.Namespace, acquisitions: list[str]) -> None:  # noqa: ANN001
    """Fail before any training: a classification task, in-memory data, a pool large enough, dropout."""
    from dlx import build
    from dlx.analysis.uncertainty import require_dropout
    from dlx.errors import DlxError
    from dlx.tasks.classify import Classify

    if not hasattr(data, "splits") or "train" not in data.splits:
        raise DlxError(f"dlx active needs an in-memory data set; {type(data).__name__} streams from disk")
    n = len(data.splits["train"][0])
    need = args.initial + args.rounds * args.per_round
    if need > n:
        raise DlxError(f"--initial + --rounds x --per-round = {need} labels, but the training split has {n} examples")
    task = build.build_task(cfg)
    if not isinstance(task, Classify):
        raise DlxError(f"dlx active acquires labels for classifiers; task is {type(task).__name__}")
    if any(a != "random" for a in acquisitions):
        require_dropout(task.model, f"model={cfg.model._target_.rsplit('.', 1)[-1]}")


def default_folder(cfg) -> Path:  # noqa: ANN001
    """<paths.experiments>/active/<time>-<id>: unique even for two starts in the same second."""
    import secrets

    return Path(cfg.paths.experiments) / "active" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{secrets.token_hex(3)}"


def balanced_initial(labels, n: int, seed: int):  # noqa: ANN001, ANN201 - (N,) labels -> (n,) indices
    """`n` training indices with as equal a count per class as possible, drawn with `seed`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c)[:, 0] for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    picked, i = [], 0
    while len(picked) < n:  # round robin over the classes
        idx = per_class[i % len(classes)]
        k = i // len(classes)
        if k < len(idx):
            picked.append(int(idx[k]))
        i += 1
    return torch.tensor(picked)


def subset(data, train_idx, pool_idx=None):  # noqa: ANN001, ANN201 - a data module
    """A shallow copy of the data module whose train split is `train_idx` (and whose "pool" split is `pool_idx`)."""
    sub = copy.copy(data)
    train = data.splits["train"]
    sub.splits = dict(data.splits)
    sub.splits["train"] = tuple(t[train_idx.to(t.device)] for t in train)
    if pool_idx is not None:
        sub.splits["pool"] = tuple(t[pool_idx.to(t.device)] for t in train)
    return sub


def train_round(cfg, data, device, steps: int, seed: int):  # noqa: ANN001, ANN201 - a trained task
    """A fresh task trained for `steps` steps on `data`'s train split with dlx.train's Stepper."""
    from dlx import build, runtime
    from dlx.stepper import Stepper

    runtime.seed_everything(seed, False)
    task = build.build_task(cfg).to(device)
    task.on_fit_start(data)
    optimizers = build.build_optimizers(cfg, task, device)
    schedulers = build.build_schedulers(cfg, optimizers, steps)
    precision = runtime.pick_precision(cfg.trainer.precision, device)
    scaler = runtime.grad_scaler(device, precision)
    stepper = Stepper(optimizers, schedulers, scaler, cfg.trainer.grad_clip, 1, "stop", device.type)
    task.train()
    step, epoch = 0, 0
    while step < steps:
        for batch in data.batches("train", epoch):
            stepper.step_count = step + 1
            with runtime.autocast(device, precision):
                task.training_step(batch, stepper)
            step += 1
            if step >= steps:
                break
        epoch += 1
    return task.eval()


def test_accuracy(task, data) -> float:  # noqa: ANN001
    """Accuracy on the test split (batch-size-weighted mean of the task's metric)."""
    from dlx.train import Meter

    meter = Meter()
    for batch in data.batches("test"):
        meter.add(task.validation_step(batch), batch[0].shape[0])
    return meter.read("test")["test/acc"]


def scores(task, data, acquisition: str, samples: int, generator):  # noqa: ANN001, ANN201 - (P,) scores
    """Acquisition scores of every example of `data`'s "pool" split (higher = acquire first)."""
    import torch

    from dlx.analysis import uncertainty as u

    n = len(data.splits["pool"][0])
    if acquisition == "random":
        return torch.rand(n, generator=generator)
    parts = []
    with torch.no_grad(), u.mc_dropout(task.model):
        for batch in data.batches("pool"):
            probs = u.mc_probs(task.model, batch[0], samples).cpu()  # (T, B, K)
            if acquisition == "bald":
                parts.append(u.mutual_information(probs))
            elif acquisition == "entropy":
                parts.append(u.predictive_entropy(probs))
            else:
                parts.append(u.variation_ratio(probs))
    # Tiny noise breaks ties at random (variation ratios take only T + 1 values).
    return torch.cat(parts) + 1e-9 * torch.rand(n, generator=generator)


def run_acquisition(cfg, data, device, initial, acq: str, args: argparse.Namespace, out) -> dict[str, list]:  # noqa: ANN001
    """Rounds of train -> test -> score pool -> acquire for one acquisition function; the accuracy curve."""
    import torch

    seed = int(cfg.seed)
    g = torch.Generator().manual_seed(seed + 1)
    n = len(data.splits["train"][0])
    labelled = initial.clone()
    curve: dict[str, list] = {"labels": [], "test_acc": [], "acquired": []}
    for r in range(args.rounds + 1):
        t0 = time.perf_counter()
        task = train_round(cfg, subset(data, labelled), device, args.steps, seed + r)
        acc = test_accuracy(task, data)
        curve["labels"].append(len(labelled))
        curve["test_acc"].append(acc)
        out.writer.add_scalar(f"active/{acq}/test_acc", acc, len(labelled))
        print(f"{acq:>16}  round {r:>3}  labels {len(labelled):>5}  test acc {acc:.4f}  "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
        if r == args.rounds:
            break
        mask = torch.ones(n, dtype=torch.bool)
        mask[labelled] = False
        pool = torch.nonzero(mask)[:, 0]
        if args.pool_subset and args.pool_subset < len(pool):
            pool = pool[torch.randperm(len(pool), generator=g)[: args.pool_subset]]
        s = scores(task, subset(data, labelled, pool), acq, args.mc_samples, g)
        new = pool[s.topk(args.per_round).indices]
        curve["acquired"].append(new.tolist())
        labelled = torch.cat([labelled, new])
    return curve


def curve_figure(curves: dict[str, dict[str, list]], cfg):  # noqa: ANN001, ANN201 - plot Figure
    from dlx.analysis.plot import PALETTE, Figure

    data = cfg.data._target_.rsplit(".", 1)[-1]
    model = cfg.model._target_.rsplit(".", 1)[-1]
    fig = Figure(f"active learning: {model} on {data}", xlabel="labelled examples", ylabel="test accuracy",
                 legend="lower right")
    for i, (acq, c) in enumerate(curves.items()):
        color = "gray" if acq == "random" else PALETTE[i % len(PALETTE)]
        fig.line(c["labels"], c["test_acc"], label=acq, color=color)
        fig.scatter(c["labels"], c["test_acc"], color=color, radius=3)
    return fig


def print_table(curves: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="test accuracy by number of labels")
    table.add_column("labels", justify="right")
    for acq in curves:
        table.add_column(acq, justify="right")
    first = next(iter(curves.values()))
    for i, n in enumerate(first["labels"]):
        table.add_row(str(n), *[f"{c['test_acc'][i]:.4f}" for c in curves.values()])
    Console().print(table)
