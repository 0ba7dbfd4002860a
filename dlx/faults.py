"""Failpoints for testing that nothing is lost: kill the process at a chosen moment, deterministically.

Set by environment variables (never by configs), read once. Timing-based kills in tests are flaky;
these make "SIGKILL mid-epoch" and "SIGKILL mid-save" exact:

- `DLX_FAULT_KILL_AT_STEP=N`: SIGKILL right after training step N completes (before any save).
- `DLX_FAULT_KILL_IN_SAVE=N`: SIGKILL during the N-th checkpoint save, after half the temp file is written.
- `DLX_FAULT_NAN_AT_STEPS=N,M`: the inputs of training steps N and M are NaN (a bad batch: non-finite loss).
- `DLX_FAULT_VAL_NEGATE_RANK=R`: rank R's validation metrics are negated, so the ranks disagree on what improved.
"""

import os
import signal

_AT_STEP = int(os.environ.get("DLX_FAULT_KILL_AT_STEP", 0))
_IN_SAVE = int(os.environ.get("DLX_FAULT_KILL_IN_SAVE", 0))
_NAN_AT = {int(s) for s in os.environ.get("DLX_FAULT_NAN_AT_STEPS", "").split(",") if s.strip()}
_VAL_NEGATE_RANK = int(os.environ.get("DLX_FAULT_VAL_NEGATE_RANK", -1))
_saves = 0


def poison(batch: tuple, step: int) -> tuple:
    """The batch of training step `step`, with NaN inputs when that step is listed in DLX_FAULT_NAN_AT_STEPS."""
    if step not in _NAN_AT or not batch[0].is_floating_point():
        return batch
    return (batch[0] * float("nan"), *batch[1:])


def skew_validation(metrics: dict[str, float], rank: int) -> dict[str, float]:
    """Rank `rank`'s validation metrics, negated when it is DLX_FAULT_VAL_NEGATE_RANK (ranks that disagree)."""
    if rank != _VAL_NEGATE_RANK:
        return metrics
    return {k: -v for k, v in metrics.items()}


def after_step(step: int) -> None:
    if _AT_STEP and step == _AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)


def in_save(f) -> None:  # noqa: ANN001 - an open binary file being written
    """Called between writing the checkpoint bytes and the rename; truncates and dies when asked."""
    global _saves
    _saves += 1
    if _IN_SAVE and _saves == _IN_SAVE:
        f.flush()
        f.truncate(max(1, f.tell() // 2))  # a torn write: what a kill or a full disk leaves behind
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
