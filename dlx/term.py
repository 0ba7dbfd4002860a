"""Output that survives logs: rich in a terminal; in a log (SLURM, `| tee`, CI) nothing is hard-wrapped.

Rich wraps at 80 columns when stdout is not a terminal, which cuts run folder paths in two (they can no longer be
copied) and spreads table rows over several lines. Off a terminal, dlx's consoles are as wide as their content:
a path stays on one line, a table keeps one line per row. Long work reports progress: a transient bar on a
terminal, a plain line now and then in a log. Nothing here imports torch.
"""

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console

# Off a terminal: wide enough that no line of dlx's output is ever wrapped by rich.
LOG_WIDTH = 100_000
# Off a terminal, a progress line at most this often (and at the start and the end).
LOG_EVERY_S = 5.0

T = TypeVar("T")


def console(stderr: bool = False) -> Console:
    """A rich Console for stdout (or stderr) that never hard-wraps when it is not a terminal."""
    out = Console(stderr=stderr)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


def progress(items: Iterable[T], total: int, what: str, label: Any = None) -> Iterator[T]:
    """Yield `items` while showing `what i/total` (and `label(item)`) on stderr: a transient bar on a terminal,
    a line at the start, about every LOG_EVERY_S seconds and at the end in a log."""
    err = Console(stderr=True)
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task(what, total=total)
            for item in items:
                bar.update(task, description=f"{what} {label(item)}" if label else what)
                yield item
                bar.advance(task)
        return
    last = None
    for i, item in enumerate(items):
        now = time.monotonic()
        if last is None or now - last >= LOG_EVERY_S:
            print(f"{what} {i + 1}/{total}" + (f" {label(item)}" if label else ""), file=sys.stderr, flush=True)
            last = now
        yield item
    print(f"{what} {total}/{total} done", file=sys.stderr, flush=True)


@contextmanager
def status(what: str) -> Iterator[None]:
    """A step of long work named on stderr: a spinner on a terminal, a line (and its time when done) in a log."""
    err = Console(stderr=True)
    if err.is_terminal:
        with err.status(what):
            yield
        return
    print(f"{what} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    yield
    print(f"{what}: done in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
