"""`dlx resume RUN_DIR [overrides]`: continue a run in its own folder from checkpoints/last.pt.

The config is the run's own (.hydra/config.yaml) plus the overrides, which may change trainer
settings only (e.g. `trainer.epochs=20` to train longer); anything that changes what is trained
(model, data, task, loss, seed) is refused.
"""

import argparse
from pathlib import Path

from dlx import rundir
from dlx.errors import DlxError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx resume", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="trainer overrides, e.g. trainer.epochs=20")
    args = parser.parse_args(argv)
    cfg = load_run_config(args.run_dir, args.overrides)
    from dlx.distributed import run  # one process, or trainer.devices data-parallel ranks as the run had

    return run(cfg, args.run_dir, resume=True)


def load_run_config(run_dir: Path, overrides: list[str]):  # noqa: ANN201 - DictConfig
    """The run's composed config with dotlist overrides applied in struct mode (typos are refused)."""
    from omegaconf import OmegaConf

    from dlx import resolvers
    from dlx.config import check_config, explain

    resolvers.register()
    cfg = rundir.read_config(run_dir)
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise DlxError(f"{run_dir} has no checkpoints/last.pt to resume from")
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
