"""Atomic checkpoint save and safe load (docs/architecture.md, "Checkpoints").

A checkpoint holds only tensors and plain Python values, so it loads with `weights_only=True`; there
is never a pickle fallback. A save writes a temp file in the same folder, fsyncs it and renames it
over the old one, so a kill or a full disk mid-save leaves the previous checkpoint intact.
"""

import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlx import faults, rundir
from dlx.errors import DlxError


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically (rundir.atomic_writer: temp file, fsync, rename, fsync the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rundir.atomic_writer(path) as f:
        torch.save(state, f)
        faults.in_save(f)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; any failure is one clear DlxError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DlxError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            reason = "it holds objects other than tensors and plain values; it was not loaded (weights_only=True)"
        raise DlxError(f"checkpoint {path} is unreadable: {reason}") from None
    if not isinstance(state, dict) or "task" not in state:
        raise DlxError(f"checkpoint {path} is not a dlx checkpoint (no 'task' weights)")
    return state


def load_weights(module: torch.nn.Module, weights: Any, path: Path, finite: bool = False) -> None:
    """`module.load_state_dict(weights)`; weights of another shape or structure (missing, extra or resized
    tensors, not a state dict at all) or, with `finite`, NaN/inf weights are one DlxError naming the file."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise DlxError(f"checkpoint {path} does not hold a state dict of tensors under 'task'")
    if finite:
        bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise DlxError(f"checkpoint {path} holds non-finite weights ({', '.join(bad[:3])}"
                           f"{', ...' if len(bad) > 3 else ''}): the run diverged before they were saved")
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        reason = " ".join(lines[1:3] if len(lines) > 1 else lines)[:300] or type(e).__name__
        raise DlxError(f"checkpoint {path} does not fit the model of its config: {reason}") from None


# ---- RNG state as plain values ------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (numpy's array becomes a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
