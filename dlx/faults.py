"""Failpoints for testing that nothing is lost: kill the process at a chosen moment, deterministically.

Set by environment variables (never by configs), read once. Timing-based kills in tests are flaky;
these make "SIGKILL mid-epoch" and "SIGKILL mid-save" exact:

- `DLX_FAULT_KILL_AT_STEP=N`: SIGKILL right after training step N completes (before any save).
- `DLX_FAULT_KILL_IN_SAVE=N`: SIGKILL during the N-th checkpoint save, after half the temp file is written.
"""

import os
import signal

_AT_STEP = int(os.environ.get("DLX_FAULT_KILL_AT_STEP", 0))
_IN_SAVE = int(os.environ.get("DLX_FAULT_KILL_IN_SAVE", 0))
_saves = 0


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
