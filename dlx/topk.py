"""`trainer.save_top_k=K`: keep the K best checkpoints by the monitored metric as checkpoints/best-<step>.pt.

best.pt stays the single best (written by the loop as before); these are the runners-up beside it, each a
full best-weights checkpoint that `dlx eval RUN --checkpoint best-<step>.pt` (and export, predict) can load.

Pruning never loses a kept checkpoint, whenever the process is killed. The kept set is the list in
checkpoints/top_k.json (written atomically), and a file leaves disk only after a list without it is durable:

1. the new checkpoint is saved atomically (temp file, fsync, rename) under its own name;
2. the new list (the K best of the old list plus it) replaces top_k.json atomically;
3. files no longer on the list are deleted.

A kill during 1 leaves a temp file and the old list; between 1 and 2 an extra file the list does not name;
between 2 and 3 a pruned file not yet deleted. The next call deletes such leftovers. Entries at or after
the current step come from a stretch of training that a resume is now doing again: they are dropped.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

INDEX = "top_k.json"


def read_index(folder: Path) -> list[dict[str, Any]]:
    """The kept checkpoints, best first: [{"step", "value", "file"}, ...] (empty when none yet)."""
    try:
        return list(json.loads((Path(folder) / INDEX).read_text())["kept"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return []


def keep(folder: Path, k: int, step: int, value: float, mode: str, metric: str,
         state: Callable[[], dict[str, Any]]) -> bool:
    """Offer the checkpoint of `step` (monitored `value`); save it when it is among the K best. True if kept.

    Args:
        folder: the run's checkpoints/ folder.
        k: how many to keep (>= 1).
        mode: "max" or "min": which way is better.
        metric: the monitored metric's name, recorded in the list.
        state: makes the checkpoint dict; called only when the checkpoint is kept.
    """
    from dlx import checkpoint, rundir

    folder = Path(folder)
    kept = [e for e in read_index(folder) if e["step"] < step]  # later ones: a resume is redoing them
    if not math.isfinite(value):
        ranked = kept
    else:
        new = {"step": step, "value": value, "file": f"best-{step}.pt"}
        # Best first; on a tie the earlier checkpoint stays ahead (it was there first).
        ranked = sorted([*kept, new], key=lambda e: (-e["value"] if mode == "max" else e["value"], e["step"]))[:k]
        if new in ranked:
            checkpoint.save(folder / new["file"], state())  # 1. atomic: a kill leaves only a temp file
    rundir.write_json(folder / INDEX, {"metric": metric, "mode": mode, "k": k, "kept": ranked})  # 2. the kept set
    prune(folder, {e["file"] for e in ranked})  # 3.
    return any(e["step"] == step for e in ranked)


def prune(folder: Path, kept: set[str]) -> None:
    """Delete best-<step>.pt files not in `kept`, and temp files that killed saves of them left behind."""
    for path in folder.glob("best-*.pt"):
        if path.name not in kept:
            path.unlink(missing_ok=True)
    for path in folder.glob(".best-*.tmp"):
        path.unlink(missing_ok=True)
