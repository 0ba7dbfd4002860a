"""dlx: a command-line deep-learning experiment runner driven by Hydra configs, with a Python API.

`import dlx` is cheap (no torch): the API is loaded on first use.

    dlx.train(overrides) -> dlx.RunResult      train one run as `dlx train` does (dlx/api.py)
    dlx.load_run(run_dir, device="auto", which="best") -> dlx.LoadedRun   a trained run (dlx/analysis/loading.py)
    dlx.DlxError, dlx.ConfigError              what a user error raises
"""

from importlib import import_module
from typing import Any

from dlx.errors import ConfigError, DlxError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DlxError", "LoadedRun", "RunResult", "load_run", "train"]

# name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "train": "dlx.api",
    "RunResult": "dlx.api",
    "load_run": "dlx.analysis.loading",
    "LoadedRun": "dlx.analysis.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dlx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
