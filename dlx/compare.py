"""`dlx compare [PATH ...]`: runs side by side, grouped by their overrides minus `seed`: mean +- std (n).

    dlx compare experiments/classify-mlp-digits/multirun-...        # one row per setting, best first
    dlx compare experiments/ --by optimizer.lr                        # a column per learning rate
    dlx compare SWEEP --csv > runs.csv                                # or --markdown for a report
    dlx compare SWEEP --plot val/acc --out acc.png                    # mean curve with a +-std band per group

Reads run folders only (summary.json, .hydra/overrides.yaml, metrics.jsonl; no torch import). A job
folder that a resumable sweep pointed elsewhere (same_as.json) counts as the run it points to, under
the job's overrides. Only completed runs enter the statistics; the others are counted in a note.
"""

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlx import rundir
from dlx.errors import DlxError
from dlx.runs import best_mode

# Override keys that never tell two settings apart: where outputs go, the progress bar, sweep bookkeeping.
IGNORED = ("trainer.progress", "trainer.print_config", "name", "tags")
# Override keys whose runs are pooled into one group (mean +- std), unless `--by` pivots on them.
POOLED = ("seed",)
IGNORED_PREFIXES = ("paths.", "hydra.", "hydra/", "sweep.")
HIDDEN_METRICS = ("lr", "perf/", "grad_norm", "train/grad_norm")


@dataclass
class RunRecord:
    """One run as compare sees it: where, under which overrides, its summary and final metrics."""

    dir: Path
    overrides: dict[str, str]
    summary: dict[str, Any]
    unreadable: rundir.Unreadable | None = None  # a damaged summary.json: counted, never dropped silently

    @property
    def status(self) -> str:
        return "unreadable" if self.unreadable else str(self.summary.get("status", "?"))

    @property
    def final(self) -> dict[str, float]:
        final = self.summary.get("metrics", {}).get("final", {})
        best = self.summary.get("metrics", {}).get("best", {})
        out = {k: float(v) for k, v in final.items() if isinstance(v, int | float) and not _hidden(k)}
        monitor = self.summary.get("monitor", {}).get("metric")
        if monitor and isinstance(best.get(monitor), int | float):
            out[f"best {monitor}"] = float(best[monitor])
        return out


@dataclass
class Group:
    """Runs that share every override but the seed."""

    key: tuple[tuple[str, str], ...]
    runs: list[RunRecord] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [r.final[metric] for r in self.runs if metric in r.final and math.isfinite(r.final[metric])]

    def stat(self, metric: str) -> tuple[float, float, int]:
        """(mean, sample std (0 for one run), n) of `metric` over the group's runs; NaN mean when none."""
        v = self.values(metric)
        if not v:
            return math.nan, math.nan, 0
        return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def _hidden(metric: str) -> bool:
    return metric in HIDDEN_METRICS or metric.startswith(("perf/", "grad_norm/", "lr/"))


# ---- reading run folders ----------------------------------------------------------------------------
def find_runs(paths: list[Path]) -> list[RunRecord]:
    """Every run below `paths` (summary.json), plus the runs that job folders' same_as.json point to."""
    seen: dict[Path, RunRecord] = {}
    for root in paths:
        if not root.exists():
            raise DlxError(f"{root} does not exist (runs are written under experiments/ in the current folder)")
        for path in sorted(root.rglob("summary.json")):
            _add(seen, path.parent, path.parent)
        for pointer in sorted(root.rglob("same_as.json")):
            try:
                target = Path(json.loads(pointer.read_text())["run_dir"])
            except (OSError, KeyError, json.JSONDecodeError):
                continue
            _add(seen, target, pointer.parent)
    return list(seen.values())


def _add(seen: dict[Path, RunRecord], run_dir: Path, named_by: Path) -> None:
    key = run_dir.resolve()
    if key in seen or not (run_dir / "summary.json").is_file():
        return
    try:
        summary, unreadable = rundir.read_summary(run_dir), None
    except rundir.Unreadable as e:
        summary, unreadable = {}, e
    seen[key] = RunRecord(run_dir, read_overrides(named_by) or read_overrides(run_dir), summary, unreadable)


def read_overrides(run_dir: Path) -> dict[str, str]:
    """The job's command-line overrides (.hydra/overrides.yaml) as {key: value}, ignored keys left out."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if key not in IGNORED and not key.startswith(IGNORED_PREFIXES):
            out[key] = value
    return out


def group_runs(runs: list[RunRecord], drop: tuple[str, ...] = POOLED) -> list[Group]:
    """Runs grouped by their overrides minus `drop` (by default the seed: seeds are pooled)."""
    groups: dict[tuple, Group] = {}
    for r in runs:
        key = tuple(sorted((k, v) for k, v in r.overrides.items() if k not in drop))
        groups.setdefault(key, Group(key)).runs.append(r)
    return list(groups.values())


# ---- what to show -----------------------------------------------------------------------------------
def main_metric(runs: list[RunRecord]) -> tuple[str, str]:
    """(metric, mode): the test twin of the monitored metric when runs have it (test/acc), else the monitor."""
    for r in runs:
        monitor = r.summary.get("monitor", {})
        metric, mode = monitor.get("metric"), monitor.get("mode", "max")
        if metric:
            test = "test/" + metric.split("/", 1)[-1]
            return (test if any(test in x.final for x in runs) else metric), mode
    return ("test/acc", "max") if any("test/acc" in r.final for r in runs) else ("val/loss", "min")


def metric_columns(runs: list[RunRecord], wanted: list[str] | None) -> list[str]:
    names = {k for r in runs for k in r.final}
    if wanted:
        for name in wanted:
            known_metric(name, names, "--metrics")
        return wanted
    order = {"test": 0, "val": 1, "best": 2, "train": 3}
    return sorted(names, key=lambda k: (order.get(k.split("/")[0].split(" ")[0], 4), k))


def known_metric(name: str, names: set[str], option: str) -> None:
    """Refuse a metric no completed run has (a typo would otherwise give an empty column or no ranking)."""
    if name not in names:
        raise DlxError(f"{option} {name}: no completed run has it; choose from {', '.join(sorted(names))}")


def varying_keys(groups: list[Group]) -> list[str]:
    """Override keys whose value differs between groups (the label of each row); the rest are shared."""
    keys = sorted({k for g in groups for k, _ in g.key})
    values = {k: {dict(g.key).get(k) for g in groups} for k in keys}
    return [k for k in keys if len(values[k]) > 1] or keys


def label(group: Group, keys: list[str]) -> str:
    d = dict(group.key)
    return " ".join(f"{k}={d[k]}" for k in keys if k in d) or "(no overrides)"


def rank(groups: list[Group], metric: str, mode: str) -> list[Group]:
    """Best first by the mean of `metric`; groups without it last."""
    def key(g: Group) -> float:
        mean = g.stat(metric)[0]
        if math.isnan(mean):
            return math.inf
        return -mean if mode == "max" else mean

    return sorted(groups, key=key)


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0:
        return ""
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


# ---- outputs ----------------------------------------------------------------------------------------
def table_rows(groups: list[Group], metrics: list[str], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["setting", "n", *metrics]
    rows = []
    for g in groups:
        cells = [fmt(*g.stat(m)) for m in metrics]
        rows.append([label(g, keys), str(len(g.runs)), *cells])
    return header, rows


def pivot_rows(groups: list[Group], by: str, metric: str, mode: str) -> tuple[list[str], list[list[str]]]:
    """Rows: settings of the other overrides; columns: the values of `by`; cells: mean ± std (n) of `metric`."""
    values = sorted({dict(g.key).get(by, "(default)") for g in groups}, key=_sortable)
    rows_of: dict[tuple, dict[str, Group]] = defaultdict(dict)
    for g in groups:
        rest = tuple((k, v) for k, v in g.key if k != by)
        rows_of[rest][dict(g.key).get(by, "(default)")] = g
    rest_groups = [Group(rest, [r for g in cells.values() for r in g.runs]) for rest, cells in rows_of.items()]
    keys = varying_keys(rest_groups) if len(rest_groups) > 1 else []
    rows = []
    for rg in rank(rest_groups, metric, mode):
        cells = rows_of[rg.key]
        row = [label(rg, keys) if keys else "(all)"]
        for v in values:
            g = cells.get(v)
            if g is None:
                row.append("")
                continue
            mean, std, n = g.stat(metric)
            row.append(f"{fmt(mean, std, n)} (n={n})" if n else "")
        rows.append(row)
    return [f"{metric} by {by}", *[f"{by}={v}" for v in values]], rows


def _sortable(value: str) -> tuple[int, float | str]:
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def print_rich(title: str, header: list[str], rows: list[list[str]], note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # As wide as the table needs (a terminal narrower than that wraps lines rather than cells).
    needed = sum(max(len(c) for c in col) + 3 for col in zip(header, *rows, strict=True)) + 1
    console = Console(width=max(needed, min(Console().width, 200)))
    console.print(table)
    if note:
        console.print(note)


def write_csv(groups: list[Group], metrics: list[str], keys: list[str]) -> None:
    """One row per group: its overrides (one column per varying key), n, and mean/std per metric."""
    out = csv.writer(sys.stdout)
    out.writerow([*keys, "n", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for g in groups:
        d = dict(g.key)
        stats = [g.stat(m) for m in metrics]
        out.writerow([*(d.get(k, "") for k in keys), len(g.runs),
                      *(x for mean, std, n in stats for x in (("", "") if n == 0 else (f"{mean:.6g}", f"{std:.6g}")))])


def write_markdown(title: str, header: list[str], rows: list[list[str]], note: str) -> None:
    print(f"**{title}**\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    if note:
        print(f"\n{note}")


# ---- curves -----------------------------------------------------------------------------------------
def curve(run_dir: Path, metric: str) -> dict[int, float]:
    """step -> value of `metric` from a run's metrics.jsonl."""
    out = {}
    for record in rundir.read_metrics(run_dir):  # a torn line (being written, or a crash) is skipped
        value = record.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            out[int(record["step"])] = float(value)
    return out


def plot(groups: list[Group], keys: list[str], metric: str, out: Path, log: bool) -> Path:
    """A line per group: the mean of `metric` over its runs at each step, with a +-std band."""
    from dlx.analysis.plot import Figure

    fig = Figure(title=f"{metric}: mean ± std over seeds", xlabel="step", ylabel=metric, logy=log,
                 legend="lower right" if "acc" in metric else "upper right")
    drawn = 0
    alpha = 0.2 if len(groups) <= 4 else 0.1  # eight overlapping bands at 0.2 turn the plot to mud
    for g in groups:
        curves = [curve(r.dir, metric) for r in g.runs]
        steps = sorted({s for c in curves for s in c})
        if not steps:
            continue
        bands = [mean_band([c[s] for c in curves if s in c], log) for s in steps]  # (mean, low, high) per step
        means, lows, highs = map(list, zip(*bands, strict=True))
        color = _color(drawn)
        fig.band(steps, lows, highs, color=color, alpha=alpha)
        fig.line(steps, means, label=f"{label(g, keys)} (n={len(g.runs)})", color=color)
        drawn += 1
    if not drawn:
        raise DlxError(f"no run logged '{metric}' in metrics.jsonl")
    return fig.save(out)


def mean_band(values: list[float], log: bool) -> tuple[float, float, float]:
    """(mean, low, high) of one step's values over seeds: mean -+ sample std.

    On a log axis mean - std can fall to or below zero (one seed's loss far above the others'), and the band
    would fill down to the axis' floor; there it stops at the lowest seed's value instead.
    """
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, max(m - sd, min(values)) if log else m - sd, m + sd


def _color(i: int) -> str:
    from dlx.analysis.plot import PALETTE

    return PALETTE[i % len(PALETTE)]


# ---- the command --------------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx compare", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path, default=[Path("experiments")],
                   help="sweep folders, experiment folders or run folders (default: experiments)")
    p.add_argument("--by", metavar="KEY", help="pivot: one column per value of this override, e.g. optimizer.lr")
    p.add_argument("--metric", help="metric that ranks the groups (default: test/acc, or the runs' monitor)")
    p.add_argument("--metrics", help="comma-separated metrics to show (default: all final metrics)")
    fmt_group = p.add_mutually_exclusive_group()
    fmt_group.add_argument("--csv", action="store_true", help="CSV on stdout: overrides, n, mean and std per metric")
    fmt_group.add_argument("--markdown", action="store_true", help="a Markdown table on stdout")
    p.add_argument("--plot", metavar="METRIC", help="PNG of METRIC over steps, one mean curve with a +-std band "
                   "per group")
    p.add_argument("--out", type=Path, help="where --plot writes (default: compare-<metric>.png in the first PATH)")
    p.add_argument("--log", action="store_true", help="--plot with a log y axis")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    runs = find_runs(args.paths)
    unreadable = rundir.unreadable_note([r.unreadable for r in runs if r.unreadable])
    done = [r for r in runs if r.status == "completed"]
    others = defaultdict(int)
    for r in runs:
        if r.status != "completed":
            others[r.status] += 1
    if not done:
        raise DlxError(f"no completed runs under {', '.join(map(str, args.paths))}"
                       + (f" ({', '.join(f'{n} {s}' for s, n in others.items())})" if others else "")
                       + (f"; {unreadable}" if unreadable else ""))
    if unreadable:  # listed and counted, never dropped silently
        print(f"dlx: warning: {unreadable}", file=sys.stderr)
    metric, mode = main_metric(done)
    if args.metric:
        known_metric(args.metric, {k for r in done for k in r.final}, "--metric")
        metric = args.metric
        mode = best_mode(metric)
    metrics = metric_columns(done, args.metrics.split(",") if args.metrics else None)
    groups = rank(group_runs(done, drop=tuple(k for k in POOLED if k != args.by)), metric, mode)
    keys = varying_keys(groups)
    note = ", ".join(f"{n} {s}" for s, n in others.items())
    note = f"not counted: {note} run(s)" if note else ""
    title = f"{len(done)} runs in {len(groups)} groups, best first by {metric} ({mode})"
    if args.plot:
        out = args.out or (args.paths[0] if args.paths[0].is_dir() else Path(".")) / \
            f"compare-{args.plot.replace('/', '_')}.png"
        print(f"plot: {plot(groups, keys, args.plot, out, args.log)}", file=sys.stderr if args.csv else sys.stdout)
    if args.by:
        if not any(args.by in dict(g.key) for g in groups):
            known = sorted({k for g in groups for k, _ in g.key})
            raise DlxError(f"--by {args.by}: no run overrides it; the runs override {', '.join(known) or 'nothing'}")
        header, rows = pivot_rows(groups, args.by, metric, mode)
    else:
        header, rows = table_rows(groups, metrics, keys)
    if args.csv:
        if args.by:
            csv.writer(sys.stdout).writerows([header, *rows])
        else:
            write_csv(groups, metrics, keys)
    elif args.markdown:
        write_markdown(title, header, rows, note)
    else:
        print_rich(title, header, rows, note)
    return 0
