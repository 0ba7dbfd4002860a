"""`dlx runs [PATH]`: a table of every run folder under experiments/ (or PATH), read from summary.json.

Reads folders only (no torch import), so it is instant and works while runs are training.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dlx import rundir
from dlx.errors import DlxError


def find_runs(root: Path) -> list[dict[str, Any]]:
    """Every readable summary.json below `root`, with the folder it came from (`_dir`)."""
    return rundir.find_summaries(Path(root))[0]


def main_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Test metrics if the run got that far, else the last validation metrics."""
    final = summary.get("metrics", {}).get("final", {})
    picked = {k: v for k, v in final.items() if k.startswith("test/")}
    return picked or {k: v for k, v in final.items() if k.startswith("val/")}


# Metrics where lower is better (losses, distances, calibration error, time); every other metric is higher-better.
LOWER_IS_BETTER = ("loss", "error", "nll", "mse", "mae", "fid", "elbo", "bits_per_dim", "ece", "kl", "recon",
                   "duration")


def best_mode(metric: str) -> str:
    """"min" or "max": which end of `metric` is best (the order of `dlx runs --sort` and `dlx compare --metric`)."""
    return "min" if any(word in metric for word in LOWER_IS_BETTER) else "max"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx runs", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="experiments", type=Path)
    parser.add_argument("--sort", default=None, help="metric or column to sort by, e.g. test/acc or duration")
    parser.add_argument("--limit", type=int, default=None, help="show at most N runs")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="only runs tagged TAG (tags=[...] when training); repeat for runs with every one")
    args = parser.parse_args(argv)
    if not args.path.exists():
        raise DlxError(f"{args.path} does not exist (runs are written under experiments/ in the current folder)")
    if args.limit is not None and args.limit < 1:
        raise DlxError(f"--limit {args.limit}: must be at least 1")
    runs, unreadable = rundir.find_summaries(args.path)
    if args.tag:
        known = sorted({str(t) for s in runs for t in s.get("tags") or []})
        if runs and not set(args.tag) <= set(known):
            missing = sorted(set(args.tag) - set(known))
            raise DlxError(f"--tag {missing[0]}: no run has it; the runs' tags are {', '.join(known) or 'none'}")
        runs = [s for s in runs if set(args.tag) <= {str(t) for t in s.get("tags") or []}]
        unreadable = []  # a damaged summary has no tags to match
    if args.sort:
        known = sorted({k for s in runs for k in s.get("metrics", {}).get("final", {})} | {"duration"})
        if runs and args.sort not in known:
            raise DlxError(f"--sort {args.sort}: no run has it; choose one of {', '.join(known)}")
        # Best first: highest accuracy, lowest loss; runs without the value last.
        sign = -1 if best_mode(args.sort) == "max" else 1
        runs.sort(key=lambda s: sign * _sort_value(s, args.sort))
    else:
        runs.sort(key=lambda s: str(s["_dir"]), reverse=True)
    runs = runs[: args.limit] if args.limit else runs
    if args.json:
        for s in runs:
            print(json.dumps({"dir": str(s["_dir"]), "name": s.get("name"), "status": s.get("status"),
                              "stop_reason": s.get("stop_reason"), "tags": s.get("tags") or [],
                              "metrics": main_metrics(s), "duration_s": s.get("duration_s")}))
        for e in unreadable:
            print(json.dumps({"dir": str(e.path.parent), "status": "unreadable", "error": e.reason}))
    else:
        print_table(runs, args.path, unreadable)
    if unreadable:
        print(f"dlx: warning: {rundir.unreadable_note(unreadable)}", file=sys.stderr)
    return 0


def _sort_value(summary: dict[str, Any], key: str) -> float:
    value = summary.get("metrics", {}).get("final", {}).get(key, summary.get(key.replace("duration", "duration_s")))
    if not isinstance(value, int | float) or value != value:  # missing or NaN: after every real value
        return float("inf") if best_mode(key) == "min" else float("-inf")
    return value


def print_table(runs: list[dict[str, Any]], root: Path, unreadable: list[rundir.Unreadable] = ()) -> None:
    from rich.table import Table

    from dlx import term

    columns = sorted({k for s in runs for k in main_metrics(s)})
    tagged = any(s.get("tags") for s in runs)
    title = f"{len(runs)} runs under {root}" + (f", {len(unreadable)} unreadable" if unreadable else "")
    table = Table(title=title)
    for col in ("name", "folder", "status", *(["tags"] if tagged else []), *columns, "duration"):
        table.add_column(col, justify="right" if col in columns or col == "duration" else "left",
                         no_wrap=col == "folder")
    colors = {"completed": "green", "running": "yellow", "failed": "red", "diverged": "red", "interrupted": "magenta",
              "aborted": "magenta"}
    for s in runs:
        metrics = main_metrics(s)
        status = s.get("status", "?")
        shown = f"[{colors.get(status, 'white')}]{status}[/]"
        if s.get("stop_reason") and s["stop_reason"] not in ("budget", status):
            shown += f" ({s['stop_reason'].replace('_', ' ')})"  # completed (early stop)
        table.add_row(
            str(s.get("name", "?")), str(Path(s["_dir"]).relative_to(root)) if Path(s["_dir"]) != root else ".",
            shown, *([", ".join(map(str, s.get("tags") or []))] if tagged else []),
            *(f"{metrics[c]:.4f}" if c in metrics else "" for c in columns),
            f"{s.get('duration_s') or 0:.1f}s",
        )
    for e in unreadable:  # listed, not dropped: a damaged run is still a run
        folder = e.path.parent if e.path.name == rundir.SUMMARY else e.path
        where = str(folder.relative_to(root)) if folder.is_relative_to(root) and folder != root else str(folder)
        table.add_row("?", where, "[red]unreadable[/]", *([""] if tagged else []), *("" for _ in columns), "")
    out = term.console()
    if out.is_terminal:
        out.width = max(out.width, 200)  # narrower terminals scroll sideways rather than fold every row
    out.print(table)
