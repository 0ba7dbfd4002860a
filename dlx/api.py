"""The Python API, for notebooks and scripts: `dlx.train(...)` and `dlx.load_run(...)`.

    import dlx

    result = dlx.train("model=lenet trainer.max_steps=200")     # the same overrides as `dlx train`
    result.status, result.metrics["test/acc"], result.run_dir
    run = dlx.load_run(result.run_dir, device="cpu")             # config, model (eval mode), data, history
    run.model(next(iter(run.data.batches("test")))[0]).argmax(-1)

`dlx.train` runs exactly what the command runs (the same checks, Hydra composition, run folder, loop) in
this process and returns a `RunResult` instead of exiting: a user error raises `dlx.DlxError` (its message is
the line the command would print), a diverged or interrupted run comes back with that status.
"""

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlx.errors import DlxError


@dataclass
class RunResult:
    """What one `dlx.train` call produced.

    Attributes:
        run_dir: the run folder (experiments/<name>/<time>-<id>).
        status: completed | interrupted | diverged | failed (summary.json's).
        metrics: the final metrics ("train/loss", "val/acc", "test/acc", ...).
        best: the monitored metric's best value and its step ({"step": 300, "val/acc": 0.97}).
        exit_code: what `dlx train` would exit with (0 completed, 3 interrupted, 4 diverged).
        summary: the whole summary.json.
    """

    run_dir: Path
    status: str
    metrics: dict[str, float]
    best: dict[str, Any]
    exit_code: int
    summary: dict[str, Any] = field(repr=False, default_factory=dict)

    def load(self, device: str = "auto", which: str = "best") -> Any:
        """The trained run (`dlx.load_run(self.run_dir, device, which)`)."""
        from dlx.analysis.loading import load_run

        return load_run(self.run_dir, device, which)


def train(overrides: list[str] | str = ()) -> RunResult:
    """Train one run, as `dlx train OVERRIDES` does, and return its result.

    Args:
        overrides: Hydra overrides as a list (["model=lenet", "optimizer.lr=0.01"]) or one string split like a
            shell would ("model=lenet optimizer.lr=0.01"). Runs land in ./experiments (or paths.experiments).

    Raises:
        DlxError: a user error (unknown key, bad value, missing data, ...), with the command's one-line message.
    """
    argv = shlex.split(overrides) if isinstance(overrides, str) else [str(o) for o in overrides]
    if {"-m", "--multirun"} & set(argv) or any(a.startswith("hparams_search=") for a in argv):
        raise DlxError("dlx.train runs one run; run sweeps with the command: dlx train -m ...")
    config_flags = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
    flags = [a for a in argv if a.startswith("-") and a.split("=")[0] not in config_flags]
    if flags:
        raise DlxError(f"dlx.train takes overrides (key=value) and config folder flags only, not {flags[0]}")
    from dlx import cli

    saved = list(sys.argv)
    try:
        code = cli.train(argv)
    except SystemExit as e:  # Hydra exits on errors it reports itself (a traceback of a bug was printed)
        raise RuntimeError(f"dlx train stopped with exit code {e.code}") from None
    finally:
        sys.argv = saved
    run_dir = cli.last_run_dir()
    if run_dir is None or not (run_dir / "summary.json").is_file():
        raise RuntimeError(f"dlx train returned {code} without a run folder")
    return result_of(run_dir, code)


def result_of(run_dir: Path, code: int) -> RunResult:
    from dlx import rundir

    summary = rundir.read_summary(run_dir)
    metrics = summary.get("metrics", {})
    return RunResult(run_dir=Path(run_dir), status=summary["status"], metrics=dict(metrics.get("final", {})),
                     best=dict(metrics.get("best", {})), exit_code=code, summary=summary)
