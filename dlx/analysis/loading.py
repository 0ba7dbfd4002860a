"""Open a finished (or running) run: its config, data module and trained task, and a place for outputs.

`load_run` is the one way a trained run is loaded: dlx eval, predict, viz, sample, `init_from=` and the
Frechet judge (`task.judge_run`) all use it. It takes a run folder (best.pt, else last.pt) or a
checkpoint file. The config comes from the checkpoint itself (the resolved config the run trained
with), so a run reloads exactly as it was built, whatever the conf/ folder says today. Its `_target_`s
pass the same allowlist as `dlx train`, so a checkpoint cannot make a command run foreign code.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor, nn

from dlx.errors import DlxError


@dataclass
class LoadedRun:
    """A run's config, data module, task with trained weights (eval mode), device and checkpoint record."""

    run_dir: Path
    cfg: DictConfig
    task: nn.Module
    data: Any
    device: torch.device
    step: int
    checkpoint: Path

    @property
    def model(self) -> nn.Module:
        return self.task.model

    @property
    def history(self) -> list[dict[str, Any]]:
        """metrics.jsonl: one dict per logged step ({"step": 25, "train/loss": 0.41, ...}), oldest first."""
        from dlx import rundir

        return rundir.read_metrics(self.run_dir)

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json: status, final and best metrics, size, timing, versions."""
        from dlx import rundir

        return rundir.read_summary(self.run_dir)

    @property
    def name(self) -> str:
        return f"{self.run_dir.name} ({type(self.model).__name__})"


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    """checkpoints/best.pt (falling back to last.pt), last.pt, or a named checkpoint file: one of the run's
    (`best-120.pt` of `trainer.save_top_k`) or a path; one clear error when it does not exist.
    A checkpoint file given as `run_dir` is its own path."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise DlxError(f"run folder {run_dir} does not exist")
    ckpts = run_dir / "checkpoints"
    if which not in ("best", "last"):
        for candidate in (ckpts / which, Path(which)):
            if candidate.is_file():
                return candidate
        kept = sorted(p.name for p in ckpts.glob("*.pt")) if ckpts.is_dir() else []
        raise DlxError(f"--checkpoint {which}: no such file in {ckpts} or here; the run has "
                       f"{', '.join(kept) or 'no checkpoints'} (or use best, last)")
    order = ["best.pt", "last.pt"] if which == "best" else ["last.pt"]
    for name in order:
        if (ckpts / name).is_file():
            return ckpts / name
    raise DlxError(f"{run_dir} holds no checkpoints/{' or '.join(order)}: "
                   "is it a dlx run folder that got to a validation?")


def run_folder(path: Path) -> Path:
    """The run folder of a checkpoint file (RUN/checkpoints/x.pt -> RUN)."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_run(run_dir: Path | str, device: str = "auto", which: str = "best", with_data: bool = True) -> LoadedRun:
    """Rebuild a run's task from its checkpoint (weights and config), and its data module on `device`.

    Args:
        run_dir: a run folder, or a checkpoint file (`RUN/checkpoints/last.pt`, a copied `.pt`).
        device: where the task (and data) go: auto, cpu, cuda, mps.
        which: "best" (best.pt, else last.pt), "last", or a checkpoint file name; ignored for a checkpoint file.
        with_data: also build the data module (else `data` is None and nothing is read from disk but the
            checkpoint: shapes come from the config's data declarations).
    """
    from dlx import build, checkpoint, resolvers, runtime

    path = checkpoint_path(Path(run_dir), which)
    run_dir = run_folder(path) if Path(run_dir).is_file() else Path(run_dir)
    dev = runtime.pick_device(device)
    state = checkpoint.load(path, map_location=dev)
    if "config" not in state:
        raise DlxError(f"checkpoint {path} holds no config; it was not written by dlx train")
    resolvers.register()
    cfg = OmegaConf.create(state["config"])
    build.check_targets(cfg)
    runtime.seed_everything(int(cfg.seed), False)
    data = build.build_data(cfg, dev) if with_data else None
    task = build.build_task(cfg)
    checkpoint.load_weights(task, state["task"], path, finite=True)
    task.to(dev).eval()
    for p in task.parameters():
        p.requires_grad_(False)
    step = int(state.get("state", {}).get("step", 0))
    return LoadedRun(run_dir=run_dir, cfg=cfg, task=task, data=data, device=dev, step=step, checkpoint=path)


def display(data: Any, x: Tensor) -> Tensor:
    """Model inputs (B, C, H, W) back to pixels in [0, 1], undoing the data module's normalization."""
    scale, shift = getattr(data, "scale", None), getattr(data, "shift", None)
    if scale is not None:
        return ((x - shift) / scale / 255).clamp(0, 1)
    lo = x.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def normalize(data: Any, pixels: Tensor) -> Tensor:
    """Pixels in [0, 1] (B, C, H, W) -> model inputs, as the data module prepares its own batches."""
    scale, shift = getattr(data, "scale", None), getattr(data, "shift", None)
    if scale is None:
        return pixels
    return pixels * 255 * scale + shift


def test_images(run: LoadedRun, split: str = "test", n: int | None = None) -> tuple[Tensor, ...]:
    """The first `n` samples of a split as one batch (x, y, ...), on the run's device."""
    parts: list[tuple[Tensor, ...]] = []
    count = 0
    for batch in run.data.batches(split):
        parts.append(batch)
        count += batch[0].shape[0]
        if n is not None and count >= n:
            break
    return tuple(torch.cat([b[i] for b in parts])[:n] for i in range(len(parts[0])))


def require_images(run: LoadedRun, what: str) -> None:
    """Refuse runs whose inputs are not images (B, C, H, W)."""
    x = next(iter(run.data.batches("test")))[0]
    if x.dim() != 4:
        raise DlxError(f"{what} needs an image data set; run {run.run_dir} was trained on inputs of shape "
                       f"{tuple(x.shape[1:])} (data={run.cfg.data._target_.rsplit('.', 1)[-1]})")


def load_image(path: Path, channels: int, size: int) -> Tensor:
    """An image file -> pixels (1, C, size, size) in [0, 1], converted to the run's channels (PIL)."""
    path = Path(path)
    if not path.is_file():
        raise DlxError(f"image file {path} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except OSError as e:
        raise DlxError(f"image file {path} cannot be read: {e}") from None
    img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).float().div(255)
    return x.view(size, size, channels).permute(2, 0, 1)[None]  # (1, C, H, W)


@dataclass
class Outputs:
    """Where a command's files go: PNGs and JSON in `folder`, images also to a TensorBoard writer there."""

    folder: Path
    step: int = 0
    tensorboard: bool = True
    paths: list[Path] = field(default_factory=list)
    _writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.folder))
        return self._writer

    def image(self, name: str, img: Image.Image) -> Path:
        """Save `folder/name.png` and log it as the TensorBoard image `name`."""
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        img.convert("RGB").save(path)
        if self.tensorboard:
            self.writer.add_image(name, np.asarray(img.convert("RGB")), self.step, dataformats="HWC")
        self.paths.append(path)
        return path

    def json(self, name: str, obj: dict[str, Any], path: Path | None = None) -> Path:
        from dlx.rundir import write_json

        path = path or self.folder / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, obj)
        self.paths.append(path)
        return path

    def scalars(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, self.step)

    def close(self, show: bool = True) -> None:
        """Flush TensorBoard and print every written path, one per line."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        if show:
            for p in self.paths:
                print(p)


def output_folder(out: str | None, run_dir: Path | None, sub: str) -> Path:
    """`--out` when given, else RUN_DIR/<sub>."""
    if out:
        return Path(out)
    if run_dir is None:
        raise DlxError("give --out DIR for the output files")
    return Path(run_dir) / sub


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=float)
