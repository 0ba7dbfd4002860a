"""Everything a run writes about itself: TensorBoard events, metrics.jsonl, summary.json, train.log.

Only the run folder is written. TensorBoard gets scalars `split/name`, images, histograms and the
HParams plugin's session records (start info at start, end info with the real status at the end);
the plugin reads the metric values from the run's own scalars, so the HParams tab compares a sweep.
"""

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dlx import rundir

log = logging.getLogger("dlx")


def flat_hparams(node: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a plain config dict as `a.b.c: value`, keeping the types TensorBoard's HParams accepts."""
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("_partial_", "paths", "logger") or k.startswith("hydra"):
                continue
            out.update(flat_hparams(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(node, bool | int | float | str):
        out[prefix.replace("._target_", "")] = node
    elif prefix == "tags" and isinstance(node, list | tuple):
        out[prefix] = ",".join(map(str, node))  # HParams filters by text: "baseline,fast"
    elif isinstance(node, list | tuple):
        out[prefix] = str(list(node))
    elif node is None:
        out[prefix] = "null"
    return out


class Tracker:
    """Writes one run's records. `resume_step` drops records after the checkpoint being resumed from.

    `remote` (from `remote_logger`: MLflow) gets a copy of the scalars, is told of each last.pt written
    (`checkpointed`) and of the end status.
    """

    def __init__(self, run_dir: Path, hparams: dict[str, Any], resume_step: int | None = None, remote: Any = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.hparams = hparams
        self.remote = remote
        self.jsonl = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            self._truncate_jsonl(resume_step)
        # purge_step makes TensorBoard discard events at or after it from earlier files of this run.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=resume_step + 1 if resume_step else None)
        self._session_start()

    def _truncate_jsonl(self, step: int) -> None:
        """Records after the checkpoint's step are trained again; a torn last line (a crash mid-write) goes too."""
        dropped = rundir.truncate_metrics(self.run_dir, step)
        if dropped:
            log.info("metrics.jsonl: dropped %d record(s) after step %d or unreadable", dropped, step)

    def _session_start(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        _, ssi, _ = hparams(self.hparams, {})
        self.writer.file_writer.add_summary(ssi)

    def scalars(self, step: int, metrics: dict[str, float], epoch: float | None = None) -> None:
        """One TensorBoard scalar per metric and one metrics.jsonl line."""
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), "time": time.time()}
        rundir.append_metrics(self.run_dir, {**record, **metrics})
        if self.remote is not None:
            self.remote.metrics(step, metrics)

    def checkpointed(self, step: int) -> None:
        """last.pt now holds `step`: a resume restarts after it, so records up to it are final."""
        if self.remote is not None:
            self.remote.checkpointed(step)

    def images(self, step: int, images: dict[str, Tensor | str]) -> None:
        """Image batches (N, C, H, W) in [0, 1] as grids; strings (text samples) to the TEXT tab and train.log."""
        from torchvision.utils import make_grid

        for k, v in images.items():
            if isinstance(v, str):  # indented: TensorBoard renders text as Markdown, code blocks verbatim
                self.writer.add_text(k, "\n".join("    " + line for line in v.splitlines()), step)
                log.info("step %d %s:\n%s", step, k, v)
                continue
            grid = make_grid(v.detach().float().cpu().clamp(0, 1), nrow=min(8, len(v)), padding=1)
            self.writer.add_image(k, grid, step)

    def image(self, step: int, name: str, img: Any) -> None:
        """A PIL image (a figure) to TensorBoard's IMAGES tab."""
        import numpy as np

        self.writer.add_image(name, np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def histograms(self, step: int, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), step)

    def session_end(self, status: str) -> None:
        """Close the HParams session with the run's status (the metrics are the run's own scalars)."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams.api_pb2 import Status
        from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

        code = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "diverged": "STATUS_FAILURE"}
        info = SessionEndInfo(status=Status.Value(code.get(status, "STATUS_RUNNING")), end_time_secs=time.time())
        content = HParamsPluginData(session_end_info=info, version=PLUGIN_DATA_VERSION).SerializeToString()
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content))
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)]))
        if self.remote is not None:
            self.remote.end(status)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def remote_logger(cfg: Any, run_dir: Path, hparams: dict[str, Any]) -> Any:
    """The `logger=` beyond the run folder (MLflow), connected before training; None for `logger=tensorboard`.

    Raises:
        DlxError: the tracking server cannot be reached (unless `logger.on_unreachable=local`).
    """
    from omegaconf import DictConfig

    node = cfg.get("logger")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    from dlx.build import create
    from dlx.loggers.mlflow import run_tags

    remote = create(node, "logger")
    experiment = str(cfg.sweep.name) if cfg.get("sweep") is not None else str(cfg.name)
    labels = list(cfg.get("tags") or [])
    return remote if remote.start(run_dir, experiment, hparams, run_tags(run_dir, run_metadata(), labels)) else None


def command_line() -> str:
    """The command as the user typed it (`dlx train ...`), from the interpreter's original argv."""
    import shlex
    import sys

    argv = list(getattr(sys, "orig_argv", sys.argv))
    while argv and not Path(argv[0]).name.startswith("dlx"):
        argv.pop(0)  # drop the interpreter and its flags
    return shlex.join(["dlx", *argv[1:]]) if argv else shlex.join(sys.argv)


def run_metadata() -> dict[str, Any]:
    """Versions, git commit, dirty flag and changed files of the current directory's checkout (if any), command line."""
    import subprocess
    import sys

    import dlx

    meta: dict[str, Any] = {"torch": torch.__version__, "dlx": dlx.__version__, "python": sys.version.split()[0],
                            "command": command_line()}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD", "--show-toplevel"], capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            head, top = commit.stdout.split()[:2]
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            changed = changed_files(dirty.stdout, top)
            meta["git"] = {"commit": head, "dirty": bool(changed), "changed": changed[:MAX_CHANGED]}
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return meta


MAX_CHANGED = 100  # changed files named in summary.json (the dirty flag counts them all)


def changed_files(porcelain: str, top: str) -> list[str]:
    """Absolute paths of the modified tracked files in `git status --porcelain` output (v1: "XY path" lines, paths
    relative to the checkout's root `top`, "old -> new" for a rename). Readers tell what changed: `dlx claims`
    does not call a run dirty for the report files it writes itself between its claims."""
    import os

    paths = [line[3:].split(" -> ")[-1].strip('"') for line in porcelain.splitlines() if len(line) > 3]
    return [os.path.join(top, p) for p in paths]
