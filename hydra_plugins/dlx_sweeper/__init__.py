"""dlx's Hydra sweeper: Hydra's basic sweeper, except that a sweep over presets runs each preset's own sweep.

`dlx train -m experiment=ce_vs_mse,vanishing_gradient` composes the sweep's config without the swept presets, so
Hydra's basic sweeper never sees their `hydra.sweeper.params` (ce_vs_mse's `loss: cross_entropy,mse`) and runs
one job per preset. This sweeper reads each swept preset's own params and runs the product of them for its
jobs (dlx.sweep.expand_presets), as `-m experiment=ce_vs_mse` alone would; values given on the command line win.
Hydra finds it as a plugin (the `hydra_plugins` namespace); conf/hydra/sweeper/dlx.yaml selects it.
"""

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class DlxSweeper(BasicSweeper):
    """BasicSweeper whose job list also runs the sweeps of the presets it selects."""

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        from dlx.sweep import expand_presets

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        jobs = expand_presets(jobs, self.preset_params)
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def preset_params(self, job: list[str]) -> dict[str, Any]:
        """`hydra.sweeper.params` of the config one job composes to (its presets' sweeps)."""
        from hydra.types import RunMode

        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_configuration(
            config_name=self.config.hydra.job.config_name, overrides=list(job), run_mode=RunMode.MULTIRUN)
        return dict(cfg.hydra.sweeper.get("params") or {})
