"""What a person sees in the terminal: the config tree at the start, a progress bar, a result table at the end."""

from typing import Any

from omegaconf import OmegaConf
from rich.table import Table
from rich.tree import Tree

from dlx import term

console = term.console()  # never hard-wrapped in a log: the run folder's path stays one line to copy


def config_tree(cfg: Any) -> Tree:
    """A rich tree of the composed config, one branch per group."""
    tree = Tree("[bold]config")
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, value in plain.items():
        if isinstance(value, dict):
            branch = tree.add(f"[bold cyan]{key}")
            for k, v in value.items():
                branch.add(f"{k}: {v}")
        else:
            tree.add(f"[cyan]{key}[/]: {value}")
    return tree


def start(r: Any) -> None:
    if r.cfg.trainer.print_config:  # trainer.print_config=false: only the one line below
        console.print(config_tree(r.cfg))
    console.print(f"[bold]run[/] {r.run_dir}  device={r.device} precision={r.precision} "
                  f"params={r.meta.get('params'):,} steps={r.total_steps} ({r.steps_per_epoch}/epoch)", soft_wrap=True)


# summary.json's stop_reason in words, for the end-of-run title.
STOPS = {"budget": "", "early_stop": "early stop", "grad_norm": "gradient norm below trainer.stop_grad_norm",
         "interrupted": "interrupted", "diverged": "diverged", "failed": "failed"}


def pretrained(report: Any) -> None:
    """What `init_from` loaded and what stays freshly initialized (dlx.prepare.Pretrained), a line each."""
    total = len(report.loaded) + len(report.fresh)
    console.print(f"[bold]init_from[/] {report.path}: loaded {len(report.loaded)} of {total} tensors, "
                  f"{len(report.fresh)} fresh", soft_wrap=True)
    console.print(f"  loaded: {_names(report.loaded)}", soft_wrap=True)
    if report.fresh:
        console.print("  fresh:  " + _names([f"{k} ({why})" for k, why in report.fresh.items()]), soft_wrap=True)
    if report.unused:
        console.print(f"  not used from the checkpoint: {_names(report.unused)}", soft_wrap=True)


def _names(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", and {len(names) - most} more (all in train.log)" if len(names) > most else "")


def finish(r: Any, status: str) -> None:
    """One screen: status, best and final metrics, where the run is."""
    reason = STOPS.get(r.stop_reason, r.stop_reason or "")
    title = f"{r.cfg.name}: {status}" + (f" ({reason})" if reason and reason != status else "")
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    final = {**r.last_val, **r.test}
    for k, v in sorted(final.items()):
        table.add_row(k, f"{v:.4f}")
    if r.state.best is not None:
        table.add_row(f"best {r.monitor} (step {r.state.best_step})", f"{r.state.best:.4f}")
    console.print(table)
    if r.stop_reason in ("early_stop", "grad_norm"):
        console.print(f"{STOPS[r.stop_reason]}: {r.stop_detail}", soft_wrap=True)
    if r.error:
        console.print(f"[red]{r.error}", soft_wrap=True)
    console.print(f"run folder: {r.run_dir}", soft_wrap=True)


class Progress:
    """A rich progress bar (step, epoch, loss, it/s, ETA) updated only at log steps."""

    def __init__(self, r: Any):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self.bar.start()
        self.id = self.bar.add_task("train", total=r.total_steps, completed=r.state.step, info="")

    def update(self, r: Any) -> None:
        info = f"epoch {r.state.step / r.steps_per_epoch:.2f}"
        loss = r.last_train.get("train/loss")
        if loss is not None:
            info += f"  loss {loss:.4f}"
        sps = r.last_train.get("perf/samples_per_sec")
        if sps:
            info += f"  {sps / r.data.batch_size:.1f} it/s"
        self.bar.update(self.id, completed=r.state.step, info=info)

    def close(self, r: Any = None) -> None:
        """Stop the bar where the run stopped, saying why when it is not the step budget (early stop at 25/300)."""
        if r is not None:
            self.update(r)
            reason = {"early_stop": "early stop", "interrupted": "interrupted"}.get(r.stop_reason or "")
            if reason:
                self.bar.update(self.id, description=f"train: {reason} at step {r.state.step}")
        self.bar.stop()
