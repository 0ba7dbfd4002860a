"""A child dlx process started by a dlx command (`dlx claims` runs `dlx train -m ...`), stopped with its parent.

SIGTERM, SIGINT and SIGHUP to the parent are forwarded to the child (SIGHUP as SIGTERM: a closed terminal stops the
runs as `kill` does), and the parent waits for it: the child stops as any run stops on a signal (it saves, marks
its run `interrupted` and exits 3), so nothing keeps training after the command has ended. The child runs in its
own process group, so a Ctrl-C at the terminal, which goes to the whole foreground group, reaches it once, through
the parent: twice would abort its run at once instead of saving it.

A parent killed with SIGKILL forwards nothing. On Linux the child asks the kernel for a parent-death signal
(prctl PR_SET_PDEATHSIG = SIGTERM, before it execs), so it stops then too, saved, as on `kill`. The kernel sends it
when the thread that started the child ends: `run` is called from the main thread. Elsewhere that case is not covered.
"""

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

FORWARDED = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_setup() -> Callable[[], None] | None:
    """What the child does between fork and exec: its own process group (POSIX; Popen's process_group=0 from
    Python 3.11 on, setpgrp on 3.10) and, on Linux, SIGTERM when its parent dies."""
    if os.name != "posix":
        return None
    if not sys.platform.startswith("linux"):
        return os.setpgrp
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent: after fork only the call is made
    parent = os.getpid()

    def setup() -> None:
        os.setpgrp()
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def run(argv: Sequence[str]) -> tuple[int, str | None]:
    """Run `argv` to its end; return its exit code and the name of the first signal forwarded to it (None: none)."""
    received: list[int] = []
    proc = subprocess.Popen(list(argv), preexec_fn=child_setup())

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
