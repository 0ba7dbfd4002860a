"""`dlx resume RUN_DIR [overrides]`: continue a run in its own folder from checkpoints/last.pt.

The config is the run's own (.hydra/config.yaml) plus the overrides, which may change how it trains
(e.g. `trainer.epochs=20` to train longer, `optimizer.lr=0.01`; each takes effect from the next step and
is logged in train.log); anything that changes what is trained (model, data, task, loss, seed) is
refused. A completed run is not trained again: `dlx resume` says so and how to extend it, and changes
nothing. A budget below the step the run is at is refused.
"""

import argparse
import json
from pathlib import Path
from typing import Any

from dlx import rundir
from dlx.errors import ConfigError, DlxError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx resume", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="trainer overrides, e.g. trainer.epochs=20")
    args = parser.parse_args(argv)
    cfg = load_run_config(args.run_dir, args.overrides)
    check_resumable(_saved_config(args.run_dir), cfg)
    done = completed_budget(args.run_dir, cfg)
    if done is not None:
        print(f"dlx: {args.run_dir} is complete ({done} steps, nothing to train); extend it with: "
              f"dlx resume {args.run_dir} trainer.max_steps={2 * done}")
        return 0
    from dlx.cli import train_one  # one process, or trainer.devices data-parallel ranks as the run had

    return train_one(cfg, args.run_dir, resume=True)


RESUME_FIXED = ("seed", "model", "data", "task", "loss", "init", "decay")


def first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first leaf (dotted key) where two plain configs differ, with both values."""
    found = differences(a, b, path)
    return found[0] if found else None


def differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf (dotted key) where two plain configs differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [(path, a, b)]


def check_resumable(saved: dict, cfg: Any) -> None:  # cfg: a DictConfig
    """Refuse a resume whose overrides change what was trained; more steps or epochs are fine."""
    from omegaconf import OmegaConf

    now = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUME_FIXED:
        found = first_difference(saved.get(key), now.get(key), key)
        if found:
            path, was, new = found
            raise ConfigError(path, new, f"the checkpoint was trained with {was!r}; a resume may change trainer "
                              "settings only (start a new run, or use init_from= to fine-tune from this one)")
    if saved["optimizer"]["_target_"] != now["optimizer"]["_target_"]:
        raise ConfigError("optimizer", now["optimizer"]["_target_"], "differs from the checkpoint's optimizer")


def _saved_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)


def completed_budget(run_dir: Path, cfg) -> int | None:  # noqa: ANN001 - DictConfig
    """The step count of a completed run whose budget under `cfg` is no more than what it trained, else None.

    Read from summary.json (no torch): a run marked completed at step N with a budget of N steps or less
    (a smaller one is refused like any budget below the current step) has nothing left to train.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") != "completed" or not isinstance(summary.get("step"), int):
        return None
    t, step = cfg.trainer, summary["step"]
    per_epoch = None if t.max_steps else summary.get("steps_per_epoch") or derived_steps_per_epoch(run_dir, summary)
    if not t.max_steps and not per_epoch:
        return None  # unknown: the resume sets the run up, which counts them, and tests it again
    total = t.max_steps or t.epochs * per_epoch
    if total < step:
        key = "trainer.max_steps" if t.max_steps else "trainer.epochs"
        raise ConfigError(key, t.max_steps or t.epochs, f"is {total} steps, below the {step} this run has "
                          "trained; a resume can only keep or extend its budget")
    return step if total == step else None


def derived_steps_per_epoch(run_dir: Path, summary: dict) -> int | None:
    """Batches per epoch of a run whose summary.json predates `steps_per_epoch`: its budget in steps over the epochs
    of its saved config when that budget was epochs (exact), else its step over its epoch (rounded to 3 places)."""
    try:
        trainer = _saved_config(run_dir).get("trainer") or {}
    except Exception:  # noqa: BLE001 - an unreadable config: the second way, or None
        trainer = {}
    total, epochs = summary.get("total_steps"), trainer.get("epochs")
    if not trainer.get("max_steps") and isinstance(total, int) and isinstance(epochs, int) and epochs > 0:
        return total // epochs or None
    epoch = summary.get("epoch")
    return round(summary["step"] / epoch) or None if isinstance(epoch, int | float) and epoch > 0 else None


def load_run_config(run_dir: Path, overrides: list[str]):  # noqa: ANN201 - DictConfig
    """The run's composed config with dotlist overrides applied in struct mode (typos are refused)."""
    from omegaconf import OmegaConf

    from dlx import resolvers
    from dlx.config import add_later_trainer_keys, check_config, explain

    resolvers.register()
    cfg = rundir.read_config(run_dir)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise DlxError(f"{run_dir} has no checkpoints/last.pt to resume from")
    add_later_trainer_keys(cfg)
    try:
        OmegaConf.set_struct(cfg, True)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise DlxError(f"override '{item}' must look like key=value")
            OmegaConf.update(cfg, key, OmegaConf.create(f"v: {value}").v, merge=False)  # the value as YAML reads it
        OmegaConf.resolve(cfg)
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - OmegaConf errors, one line
        raise explain(e) from None
    check_config(cfg)
    return cfg
