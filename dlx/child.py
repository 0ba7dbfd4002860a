"""A child dlx process started by a dlx command (`dlx claims` runs `dlx train -m ...`), stopped with its parent.

SIGTERM, SIGINT and SIGHUP to the parent are forwarded to the child (SIGHUP as SIGTERM: a closed terminal stops the
runs as `kill` does), and the parent waits for it: the child stops as any run stops on a signal (it saves, marks
its run `interrupted` and exits 3), so nothing keeps training after the command has ended. The child runs in its
own process group, so a Ctrl-C at the terminal, which goes to the whole foreground group, reaches it once, through
the parent: twice would abort its run at once instead of saving it.
"""

import os
import signal
import subprocess
from collections.abc import Sequence

FORWARDED = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}


def run(argv: Sequence[str]) -> tuple[int, str | None]:
    """Run `argv` to its end; return its exit code and the name of the first signal forwarded to it (None: none)."""
    received: list[int] = []
    # Its own process group (Popen's process_group=0 from Python 3.11 on; setpgrp does the same on 3.10).
    proc = subprocess.Popen(list(argv), preexec_fn=os.setpgrp if os.name == "posix" else None)

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        try:
            proc.send_signal(FORWARDED[signum])
        except ProcessLookupError:  # it has just ended
            pass

    before = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = proc.wait()  # retried after each forwarded signal (PEP 475)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    return code, signal.Signals(received[0]).name if received else None
