"""`dlx models [overrides] [--names]`: every model of conf/model/ with its size at a data set's shape.

    dlx models                          # all models at the default data's shape (digits, 1x8x8)
    dlx models data=cifar10             # ... at CIFAR-10's shape (3x32x32); the data set is not loaded
    dlx models model.depth=56           # model.* overrides apply to the models that have the key
    dlx models model=resnet --names     # module names of one model (for freeze=[...] and dlx viz --layer)

Each model is composed as `dlx train` composes it (with its pre-checks), built on PyTorch's meta device
(shapes without memory, so a 138 M-parameter VGG costs nothing) and run forward once on a dummy input
made from the data's declarations alone: images (1, C, S, S), sequences (1, seq_len, input_size),
token ids (1, seq_len), vectors (1, in_features). FLOPs come from torch.utils.flop_counter (a multiply-add counts as 2).
A model that cannot take the shape is listed with the first line of the reason.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.errors import ConfigError, DlxError


@dataclass
class Row:
    """One line of the table."""

    name: str
    kind: str  # "classify" unless the YAML says `# kind: ...` (e.g. generative)
    params: int | None = None
    flops: int | None = None
    output: str = ""
    problem: str | None = None  # why it does not build or run at this shape; None = fine


# ---- the registry: conf/model/*.yaml -------------------------------------------------------------------
def model_files() -> dict[str, Path]:
    """name -> YAML file of every model config (the config group folder is the registry)."""
    from dlx.config import conf_dir

    return {p.stem: p for p in sorted((conf_dir() / "model").glob("*.yaml"))}


def model_kind(path: Path) -> str:
    """`# kind: <word>` from the YAML's leading comment block; "classify" when absent."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line.lstrip("# ").partition(":")
        if key.strip() == "kind" and value.strip():
            return value.strip().split()[0]
    return "classify"


def model_keys(path: Path) -> set[str]:
    """Top-level keys of a model YAML (for deciding which `model.*` overrides apply to it)."""
    from omegaconf import OmegaConf

    return {str(k) for k in OmegaConf.load(path).keys()}


def split_overrides(overrides: list[str], files: dict[str, Path]) -> tuple[list[str], list[str]]:
    """Separate `model=a[,b]` (which models to list) from the other overrides; check the names."""
    chosen: list[str] = []
    rest = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "model" and "." not in key:
            for name in value.split(","):
                if name not in files:
                    raise ConfigError("model", name, f"choose one of {', '.join(files)}")
                chosen.append(name)
        else:
            rest.append(o)
    return chosen or list(files), rest


def overrides_for(keys: set[str], overrides: list[str]) -> list[str]:
    """The overrides that apply to a model with top-level `keys`: `model.k=v` only where k exists."""
    out = []
    for o in overrides:
        key = o.partition("=")[0]
        if key.startswith("model.") and key.split(".")[1] not in keys:
            continue
        out.append(o)
    return out


# ---- measuring one model ------------------------------------------------------------------------------
def dummy_input(data: Any, device: Any) -> Any:
    """One sample shaped like the data, from its declarations (the data set itself is never loaded)."""
    import torch

    if "seq_len" in data and "vocab_size" in data:  # token ids (text)
        return torch.zeros((1, int(data.seq_len)), dtype=torch.long, device=device)  # (B, T)
    if "seq_len" in data and "input_size" in data:
        shape = (1, int(data.seq_len), int(data.input_size))  # (B, T, input_size)
    elif "channels" in data and "size" in data:
        shape = (1, int(data.channels), int(data.size), int(data.size))  # (B, C, H, W)
    elif "in_features" in data:
        shape = (1, int(data.in_features))  # (B, in_features)
    else:
        raise ConfigError("data", data.get("_target_"), "declares no channels/size, seq_len/input_size or in_features")
    return torch.zeros(shape, device=device)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def shapes_of(y: Any) -> str:
    """'(1, 10)' for a tensor; shapes joined by ', ' for tuples/lists/dicts of tensors."""
    import torch

    if isinstance(y, torch.Tensor):
        return str(tuple(y.shape))
    if isinstance(y, dict):
        y = list(y.values())
    if isinstance(y, list | tuple):
        return ", ".join(shapes_of(v) for v in y)
    return type(y).__name__


def build(cfg: Any, device: str) -> Any:
    """The model of a composed config, built with its parameters on `device` ("meta": no memory)."""
    import torch

    from dlx.build import create

    with torch.device(device):
        return create(cfg.model, "model")


def forward_flops(model: Any, x: Any) -> tuple[Any, int]:
    """Eval-mode forward pass of `x` under the FLOP counter: (output, FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    return y, counter.get_total_flops()


def measure(name: str, kind: str, cfg: Any) -> Row:
    """Build and run one model; any failure becomes the row's `problem` (first line of the error)."""
    row = Row(name, kind)
    try:
        y = _build_and_run(cfg, row)
    except Exception as e:  # noqa: BLE001 - the reason a model cannot take this shape is the table's content
        row.problem = row.problem or first_line(e)
        return row
    row.output = shapes_of(y)
    num_classes = cfg.data.get("num_classes")
    if kind == "classify" and num_classes is not None and row.output != str((1, num_classes)):
        row.problem = f"output {row.output} is not (1, num_classes={num_classes})"
    return row


def _build_and_run(cfg: Any, row: Row) -> Any:
    """Build on the meta device; fall back to the CPU where an op has no meta kernel (e.g. `.item()`)."""
    for device in ("meta", "cpu"):
        try:
            model = build(cfg, device)
        except Exception as e:
            row.problem = f"does not build: {first_line(e)}"
            raise
        row.params = sum(p.numel() for p in model.parameters())
        try:
            y, row.flops = forward_flops(model, dummy_input(cfg.data, device))
            return y
        except Exception as e:  # noqa: BLE001
            meta_only = device == "meta" and ("meta" in str(e).lower() or isinstance(e, NotImplementedError))
            if not meta_only:
                if row.kind != "classify":
                    row.problem = f"n/a ({row.kind}): forward on a data sample fails: {first_line(e)}"
                else:
                    row.problem = f"forward fails: {first_line(e)}"
                raise
    raise AssertionError("unreachable")


def rows(overrides: list[str]) -> tuple[list[Row], str]:
    """Measure every chosen model; also return a description of the input."""
    files = model_files()
    names, rest = split_overrides(overrides, files)
    keys = {n: model_keys(files[n]) for n in names}
    for o in rest:
        key = o.partition("=")[0].lstrip("+~")
        if key.startswith("model.") and not any(key.split(".")[1] in k for k in keys.values()):
            raise ConfigError(key, o.partition("=")[2], f"no listed model has the key '{key.split('.')[1]}'")
    data = base_config(rest).data  # a mistake in the data or trainer overrides stops here, in one line
    described = f"{data._target_.rsplit('.', 1)[-1]} input {tuple(dummy_input(data, 'meta').shape)}"
    from dlx import term

    out = []
    for name in term.progress(names, len(names), "dlx models: measuring", label=str):
        try:
            cfg = composed([f"model={name}", *overrides_for(keys[name], rest)])
        except DlxError as e:  # e.g. the model interpolates ${data.channels} and the data is a sequence
            out.append(Row(name, model_kind(files[name]), problem=not_composed(e, data)))
            continue
        out.append(measure(name, model_kind(files[name]), cfg))
    return out, described


def not_composed(e: DlxError, data: Any) -> str:
    """Why a model does not compose with the data: usually a shape the data does not declare."""
    import re

    m = re.search(r"Interpolation key 'data\.(\w+)' not found", str(e))
    if m:
        return f"needs data.{m.group(1)}, which {data._target_.rsplit('.', 1)[-1]} does not declare"
    return f"does not compose: {e}"


def base_config(overrides: list[str]) -> Any:
    """The config without any model-specific override, to check the others and read the data's shape."""
    return composed([o for o in overrides if not o.partition("=")[0].lstrip("+~").startswith("model.")], check=False)


def composed(overrides: list[str], check: bool = True) -> Any:
    """Compose as `dlx train` does and (with `check`) run its pre-checks, `_target_` allowlist included."""
    from dlx.config import check_config, compose, explain

    try:
        cfg = compose(overrides)
        if check:
            check_config(cfg)
        return cfg
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf errors (unknown data set, bad key), in one line
        raise explain(e) from None


# ---- output -------------------------------------------------------------------------------------------
def human(n: int | None) -> str:
    """1234567 -> '1.23 M'."""
    if n is None:
        return ""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def print_table(table_rows: list[Row], described: str) -> None:
    """One line per model; why a model does not build at this shape is a numbered note under the table, so the
    table fits a terminal and no row spreads over several lines."""
    from rich.markup import escape
    from rich.table import Table

    from dlx import term

    table = Table(title=f"{len(table_rows)} models at {described}", pad_edge=False,
                  caption="FLOPs: one forward pass of one sample in eval mode (a multiply-add counts 2)")
    table.add_column("model", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("FLOPs", justify="right", no_wrap=True)
    table.add_column("output", no_wrap=True)
    table.add_column("builds", no_wrap=True)
    notes = []
    for r in table_rows:
        ok = "[green]yes[/]"
        if r.problem is not None:
            notes.append(f"({len(notes) + 1}) {r.name}: {escape(r.problem)}")
            word = "[yellow]n/a[/]" if r.problem.startswith("n/a") else "[red]no[/]"
            ok = f"{word} ({len(notes)})"
        # Shapes without spaces, and no padding at the table's edges: an 80-column terminal holds a row in a line.
        table.add_row(r.name, r.kind.replace("language_model", "language"),
                      f"{r.params:,}" if r.params is not None else "", human(r.flops), r.output.replace(" ", ""), ok)
    out = term.console()
    out.print(table)
    for note in notes:
        out.print(note, soft_wrap=True, highlight=False)  # a long reason wraps where the terminal wraps it


def print_names(overrides: list[str]) -> None:
    """Every module of one model: dotted name, type, parameters (with children), output shape."""
    from rich.table import Table

    from dlx import term

    files = model_files()
    names, rest = split_overrides(overrides, files)
    cfg = composed([f"model={names[0]}", *rest] if len(names) == 1 else rest)
    model = build(cfg, "meta")
    outputs: dict[str, str] = {}

    def record(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, y: Any) -> None:  # returns None: the output stays as it is
            outputs.setdefault(name, shapes_of(y))

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        forward_flops(model, dummy_input(cfg.data, "meta"))
    except Exception as e:  # noqa: BLE001 - names are useful even when the forward pass fails
        outputs["(forward)"] = f"fails: {first_line(e)}"
    finally:
        for h in hooks:
            h.remove()
    table = Table(title=f"modules of {cfg.model._target_} (names for freeze=[...], decay=[...] and dlx viz --layer)")
    for col in ("name", "type", "params", "output"):
        table.add_column(col, justify="right" if col == "params" else "left", no_wrap=col != "output")
    for n, m in model.named_modules():
        if n:
            params = sum(p.numel() for p in m.parameters())
            table.add_row(n, type(m).__name__, f"{params:,}" if params else "", outputs.get(n, ""))
    out = term.console()
    out.print(table)
    if "(forward)" in outputs:
        out.print(f"[red]forward pass {outputs['(forward)']}[/]")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx models",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=cifar10 model.depth=56")
    parser.add_argument("--names", action="store_true", help="list the module names of one model (model=NAME)")
    args = parser.parse_intermixed_args(argv)
    if args.names:
        files = model_files()
        names, _ = split_overrides(args.overrides, files)
        if len(names) > 1 and any(o.partition("=")[0] == "model" for o in args.overrides):
            raise ConfigError("model", ",".join(names), "--names lists one model at a time")
        print_names(args.overrides)
        return 0
    table_rows, described = rows(args.overrides)
    print_table(table_rows, described)
    return 0
