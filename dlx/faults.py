"""Failpoints for testing that nothing is lost: faults at a chosen moment, deterministically.

Set by environment variables (never by configs), read once. Timing-based kills in tests are flaky;
these make "SIGKILL mid-epoch", "SIGKILL mid-save", "Ctrl-C twice", "a signal during set-up", "a full
disk" and "a crash while testing" exact:

- `DLX_FAULT_KILL_AT_STEP=N`: SIGKILL right after training step N completes (before any save).
- `DLX_FAULT_KILL_IN_SAVE=N`: SIGKILL during the N-th checkpoint save, after half the temp file is written.
- `DLX_FAULT_NAN_AT_STEPS=N,M`: the inputs of training steps N and M are NaN (a bad batch: non-finite loss).
- `DLX_FAULT_VAL_NEGATE_RANK=R`: rank R's validation metrics are negated, so the ranks disagree on what improved.
- `DLX_FAULT_FULL_DISK_IN_SAVE=N`: the N-th checkpoint save fails with ENOSPC after half the temp file is
  written, as a full disk makes it fail.
- `DLX_FAULT_SIGINT_TWICE_AT_STEP=N`: two SIGINTs (Ctrl-C twice) right after training step N.
- `DLX_FAULT_SIGNAL_IN_SETUP=INT|TERM`: that signal while the run is being set up (after the data loaded).
- `DLX_FAULT_CRASH_IN_TEST=1`: an unexpected exception when the test phase starts.
"""

import errno
import os
import signal

_AT_STEP = int(os.environ.get("DLX_FAULT_KILL_AT_STEP", 0))
_IN_SAVE = int(os.environ.get("DLX_FAULT_KILL_IN_SAVE", 0))
_NAN_AT = {int(s) for s in os.environ.get("DLX_FAULT_NAN_AT_STEPS", "").split(",") if s.strip()}
_VAL_NEGATE_RANK = int(os.environ.get("DLX_FAULT_VAL_NEGATE_RANK", -1))
_FULL_DISK = int(os.environ.get("DLX_FAULT_FULL_DISK_IN_SAVE", 0))
_SIGINT_TWICE = int(os.environ.get("DLX_FAULT_SIGINT_TWICE_AT_STEP", 0))
_SIGNAL_IN_SETUP = os.environ.get("DLX_FAULT_SIGNAL_IN_SETUP", "")
_CRASH_IN_TEST = os.environ.get("DLX_FAULT_CRASH_IN_TEST", "") == "1"
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
    if _SIGINT_TWICE and step == _SIGINT_TWICE:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)


def in_save(f) -> None:  # noqa: ANN001 - an open binary file being written
    """Called between writing the checkpoint bytes and the rename; truncates and dies (or fails) when asked."""
    global _saves
    _saves += 1
    if (_IN_SAVE and _saves == _IN_SAVE) or (_FULL_DISK and _saves == _FULL_DISK):
        f.flush()
        f.truncate(max(1, f.tell() // 2))  # a torn write: what a kill or a full disk leaves behind
        f.flush()
        if _FULL_DISK:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)
        os.kill(os.getpid(), signal.SIGKILL)


def in_setup() -> None:
    if _SIGNAL_IN_SETUP:
        os.kill(os.getpid(), getattr(signal, f"SIG{_SIGNAL_IN_SETUP}"))


def in_test() -> None:
    if _CRASH_IN_TEST:
        raise RuntimeError("injected crash in the test phase (DLX_FAULT_CRASH_IN_TEST)")
