"""`dlx active [overrides] --acquisition bald`: active learning with MC-dropout (Gal, Islam and Ghahramani 2017).

Start from a few labelled training examples (balanced over the classes), then repeat: train a fresh
model on the labelled set with the training loop of `dlx train` (a run folder per round), take its test
accuracy, score a random subset of the unlabelled pool with T MC-dropout passes and move the K
highest-scoring examples into the labelled set. The paper's settings are the defaults: 20 initial labels,
10 per round, a pool subset of 2,000, T = 100 passes, weight decay c / (labelled examples) (`--weight-decay`),
every round's model trained from scratch for the config's budget (experiment=active_mnist: Gal et al.'s CNN,
200 full-batch steps, enough to fit the small set). `--seeds 3` repeats the whole experiment with 3 seeds
(initial set, pool subsets, weights) and reports mean +- std per number of labels.

Acquisition functions (all from dlx.analysis.uncertainty):
  bald              mutual information between prediction and weights (what the model could learn)
  entropy           predictive entropy (max entropy)
  variation_ratios  1 - share of the passes that agree with the modal class
  random            uniform over the pool subset: the baseline every acquisition function is compared with
                    (always run)
Within a seed every acquisition function starts from the same labelled set and each round's model from the
same initial weights, so the curves differ only by what was acquired.

Outputs in <paths.experiments>/active/<time>-<id>/ (or --out): active.png (test accuracy against labels,
mean +- std band), active.json (every curve, what each round acquired and the class counts of the acquired
labels), TensorBoard scalars `active/<acquisition>/test_acc` (step = labels; mean over seeds), a table,
and runs/<acquisition>-seed<s>/labels-<n>/: each round's run folder (summary.json, metrics, checkpoints).
"""

import argparse
import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ACQUISITIONS = ("bald", "entropy", "variation_ratios", "random")
VALIDATE_ONCE = 10**9  # trainer.val_every of a round: more than its steps, so it validates once, at the end


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx active", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("overrides", nargs="*", help="config overrides as for dlx train, e.g. experiment=active_mnist")
    p.add_argument("--acquisition", default="bald",
                   help=f"one or more (comma-separated) of {', '.join(ACQUISITIONS)}; random is always added")
    p.add_argument("--rounds", type=int, default=10, help="acquisition rounds")
    p.add_argument("--initial", type=int, default=20, help="labelled examples at the start (balanced by class)")
    p.add_argument("--per-round", type=int, default=10, help="examples acquired per round (K)")
    p.add_argument("--mc-samples", type=int, default=100, help="MC-dropout passes per pool example (T)")
    p.add_argument("--pool-subset", type=int, default=2000,
                   help="score a fresh random subset of this many pool examples each round (0: the whole pool)")
    p.add_argument("--weight-decay", type=float, default=None, metavar="C",
                   help="optimizer.weight_decay = C / labelled examples in each round (the paper's c / N); "
                        "default: the config's optimizer.weight_decay, unscaled")
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed, seed+1, ...; mean +- std over them")
    p.add_argument("--out", default=None, help="output folder (default <paths.experiments>/active/<time>-<id>)")
    return p.parse_intermixed_args(argv)  # overrides may come after the options


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
    seeds = [int(cfg.seed) + i for i in range(args.seeds)]
    curves: dict[str, dict[int, dict[str, list]]] = {acq: {} for acq in acquisitions}
    for seed in seeds:
        initial = balanced_initial(labels, args.initial, seed)
        for acq in acquisitions:
            curves[acq][seed] = run_acquisition(cfg, data, initial, acq, seed, args, folder / "runs")
    summary = {acq: summarize(by_seed, labels) for acq, by_seed in curves.items()}
    for acq, s in summary.items():
        for n, m in zip(s["labels"], s["mean"], strict=True):
            out.writer.add_scalar(f"active/{acq}/test_acc", m, n)
    out.image("active", curve_figure(summary, cfg, len(seeds)).render())
    result = {"summary": summary, "acquisitions": {a: {str(s): c for s, c in by.items()} for a, by in curves.items()},
              "seeds": seeds, "initial": args.initial, "per_round": args.per_round, "rounds": args.rounds,
              "mc_samples": args.mc_samples, "pool_subset": args.pool_subset, "weight_decay_c": args.weight_decay,
              "config": OmegaConf.to_container(cfg)}
    out.json("active", result)
    print_table(summary, len(seeds))
    out.close()
    return 0


def check_args(args: argparse.Namespace) -> list[str]:
    """Valid numbers and acquisition names; returns the acquisition functions to run, random last."""
    from dlx.errors import ConfigError

    names = [a.strip() for a in args.acquisition.split(",") if a.strip()]
    for a in names:
        if a not in ACQUISITIONS:
            raise ConfigError("--acquisition", a, f"choose from {', '.join(ACQUISITIONS)}")
    for key in ("rounds", "initial", "per_round", "seeds"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}", getattr(args, key), "an integer >= 1")
    if args.mc_samples < 2:
        raise ConfigError("--mc-samples", args.mc_samples, "MC-dropout needs at least 2 passes (e.g. 100)")
    if args.pool_subset < 0 or 0 < args.pool_subset < args.per_round:
        raise ConfigError("--pool-subset", args.pool_subset, f"0 (the whole pool) or >= --per-round={args.per_round}")
    if args.weight_decay is not None and args.weight_decay < 0:
        raise ConfigError("--weight-decay", args.weight_decay, "a number >= 0 (the paper's c: 3.5 in Keras' L2)")
    return [a for a in dict.fromkeys(names) if a != "random"] + ["random"]


def check_setup(cfg, data, args: argparse.Namespace, acquisitions: list[str]) -> None:  # noqa: ANN001
    """Fail before any training: a classification task, in-memory data, a pool large enough, dropout."""
    from dlx import build
    from dlx.analysis.uncertainty import require_dropout
    from dlx.data.image_folder import ImageFolder
    from dlx.errors import DlxError
    from dlx.tasks.classify import Classify

    if isinstance(data, ImageFolder):
        raise DlxError("dlx active needs an in-memory data set; image_folder streams from disk")
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
    """A shallow copy of the data module whose train split is `train_idx` (and whose "pool" split is `pool_idx`).

    Normalization stays the one fitted on the whole training split; val and test are shared, not copied.
    """
    sub = copy.copy(data)
    train = data.splits["train"]
    sub.splits = dict(data.splits)
    sub.splits["train"] = tuple(t[train_idx.to(t.device)] for t in train)
    if pool_idx is not None:
        sub.splits["pool"] = tuple(t[pool_idx.to(t.device)] for t in train)
    return sub


def round_config(cfg, seed: int, labelled: int, weight_decay_c: float | None):  # noqa: ANN001, ANN201 - DictConfig
    """The config of one round's run: its seed, one validation at the end, no progress bar, scaled weight decay."""
    from omegaconf import OmegaConf, open_dict

    rc = copy.deepcopy(cfg)
    with open_dict(rc):
        rc.seed = seed
        rc.trainer.val_every = VALIDATE_ONCE
        rc.trainer.progress = False
        if weight_decay_c is not None:
            rc.optimizer.weight_decay = weight_decay_c / labelled
    OmegaConf.resolve(rc)
    return rc


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """The loop's start and end screens are one line per round here (dlx active prints its own)."""
    from dlx import console

    was = console.console.quiet
    console.console.quiet = True
    try:
        yield
    finally:
        console.console.quiet = was


def train_round(cfg, data, run_dir: Path):  # noqa: ANN001, ANN201 - a trained dlx.state.Run
    """A fresh model trained on `data`'s train split by the training loop of `dlx train`, tested on the test split.

    The round is a run like any other: `prepare.setup` builds it around the labelled subset and
    `loop.train_and_test` runs `fit` (accumulation, EMA, clipping, precision, the finite check) and tests it,
    leaving a run folder with its config, summary.json, metrics and checkpoints. It validates once, at its last
    step, so best.pt is its final weights.
    """
    from dlx import loop, prepare, rundir
    from dlx.errors import EXIT_INTERRUPTED, DlxError

    prepare.configure_logging(run_dir)
    rundir.write_config(run_dir, cfg)  # as `dlx train` leaves it: dlx resume, eval and runs read the folder
    with quiet_console():
        r = prepare.setup(cfg, run_dir, data=data)
        code = loop.train_and_test(r)
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        raise DlxError(f"the round trained in {run_dir} did not complete ({r.error or 'see its train.log'})")
    return r


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


def pool_subset(labelled, n: int, size: int, generator):  # noqa: ANN001, ANN201 - (P,) indices
    """The unlabelled training indices, or a fresh random `size` of them (the paper scores 2,000 per round)."""
    import torch

    mask = torch.ones(n, dtype=torch.bool)
    mask[labelled] = False
    pool = torch.nonzero(mask)[:, 0]
    if size and size < len(pool):
        pool = pool[torch.randperm(len(pool), generator=generator)[:size]].sort().values
    return pool


def run_acquisition(cfg, data, initial, acq: str, seed: int, args: argparse.Namespace,  # noqa: ANN001
                    runs: Path) -> dict[str, list]:
    """Rounds of train -> test -> score pool subset -> acquire for one acquisition function and seed."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    n = len(data.splits["train"][0])
    labelled = initial.clone()
    curve: dict[str, list] = {"initial": initial.tolist(), "labels": [], "test_acc": [], "acquired": []}
    for r in range(args.rounds + 1):
        t0 = time.perf_counter()
        rc = round_config(cfg, seed * 1000 + r, len(labelled), args.weight_decay)  # same weights for every acq
        run = train_round(rc, subset(data, labelled), runs / f"{acq}-seed{seed}" / f"labels-{len(labelled)}")
        acc = run.test["test/acc"]
        curve["labels"].append(len(labelled))
        curve["test_acc"].append(acc)
        line = f"{acq:>16}  seed {seed}  round {r:>3}  labels {len(labelled):>5}  test acc {acc:.4f}"
        if r == args.rounds:
            print(f"{line}  ({time.perf_counter() - t0:.1f}s)", flush=True)
            break
        pool = pool_subset(labelled, n, args.pool_subset, g)
        s = scores(run.eval_task, subset(data, labelled, pool), acq, args.mc_samples, g)
        new = pool[s.topk(args.per_round).indices]
        curve["acquired"].append(new.tolist())
        labelled = torch.cat([labelled, new])
        print(f"{line}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    return curve


def summarize(by_seed: dict[int, dict[str, list]], labels) -> dict[str, list]:  # noqa: ANN001
    """Mean and std (over seeds) of test accuracy per number of labels, and the class counts of what was acquired."""
    import numpy as np

    acc = np.array([c["test_acc"] for c in by_seed.values()])  # (seeds, rounds + 1)
    acquired = [i for c in by_seed.values() for r in c["acquired"] for i in r]
    counts = np.bincount(labels.cpu()[acquired].numpy(), minlength=int(labels.max()) + 1) if acquired else []
    return {
        "labels": next(iter(by_seed.values()))["labels"],
        "mean": acc.mean(0).tolist(),
        "std": (acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])).tolist(),
        "acquired_per_class": [int(c) for c in counts],  # summed over seeds and rounds
    }


def curve_figure(summary: dict[str, dict[str, list]], cfg, n_seeds: int):  # noqa: ANN001, ANN201 - plot Figure
    from dlx.analysis.plot import PALETTE, Figure

    data = cfg.data._target_.rsplit(".", 1)[-1]
    model = cfg.model._target_.rsplit(".", 1)[-1]
    seeds = f", mean +- std of {n_seeds} seeds" if n_seeds > 1 else ""
    fig = Figure(f"active learning: {model} on {data}{seeds}", xlabel="labelled examples",
                 ylabel="test accuracy", legend="lower right")
    for i, (acq, s) in enumerate(summary.items()):
        color = "gray" if acq == "random" else PALETTE[i % len(PALETTE)]
        if n_seeds > 1:
            lo = [m - d for m, d in zip(s["mean"], s["std"], strict=True)]
            hi = [m + d for m, d in zip(s["mean"], s["std"], strict=True)]
            fig.band(s["labels"], lo, hi, color=color, alpha=0.15)
        fig.line(s["labels"], s["mean"], label=acq, color=color)
        fig.scatter(s["labels"], s["mean"], color=color, radius=3)
    return fig


def print_table(summary: dict[str, dict[str, Any]], n_seeds: int) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "test accuracy by number of labels" + (f" (mean +- std over {n_seeds} seeds)" if n_seeds > 1 else "")
    table = Table(title=title)
    table.add_column("labels", justify="right")
    for acq in summary:
        table.add_column(acq, justify="right")
    first = next(iter(summary.values()))
    for i, n in enumerate(first["labels"]):
        cells = [f"{s['mean'][i]:.4f}" + (f" +- {s['std'][i]:.4f}" if n_seeds > 1 else "") for s in summary.values()]
        table.add_row(str(n), *cells)
    table.add_row("acquired per class", *[" ".join(map(str, s["acquired_per_class"])) for s in summary.values()])
    Console().print(table)
