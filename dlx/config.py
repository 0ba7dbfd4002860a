"""Where the configs live, their schema, and the checks that run before any work.

Hydra's struct mode already rejects unknown keys given on the command line. This module adds the
types of the run-level and trainer keys (a structured schema that Hydra merges under conf/train.yaml)
and the value checks a type cannot express (ranges, allowed choices), each failing with one line that
names the key, the value and what is allowed.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlx.errors import ConfigError, DlxError

PRECISIONS = ("auto", "32", "bf16", "16")
DEVICES = ("auto", "cpu", "cuda", "mps")
ON_NONFINITE = ("stop", "skip")
AUTO_BOOL = ("auto", "true", "false")
GROUPS = ("task", "model", "data", "loss", "optimizer", "scheduler")  # each builds one object; init may be null


def conf_dir() -> Path:
    """The conf/ folder: next to the package in a checkout or editable install, inside it in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"dlx cannot find its conf/ folder next to {here}")


@dataclass
class TrainerSchema:
    """Types of `trainer.*` (defaults live in conf/trainer/default.yaml)."""

    epochs: int = 10
    max_steps: int | None = None
    val_every: int | None = None
    log_every: int = 25
    ckpt_every: int | None = None
    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    grad_clip: float | None = None
    accumulate: int = 1
    ema: float | None = None
    early_stop: int | None = None
    stop_grad_norm: float | None = None
    monitor: str | None = None
    monitor_mode: str | None = None
    save_top_k: int = 0
    deterministic: bool = False
    on_nonfinite: str = "stop"
    log_grad_norms: bool = False
    histograms: bool = False
    activation_histograms: bool = False
    overfit_batches: int = 0
    detect_anomaly: bool = False
    progress: bool = True
    print_config: bool = True
    devices: int = 1
    threads: int | None = None


@dataclass
class PathsSchema:
    experiments: str = "experiments"
    data: str = "data"


@dataclass
class SweepSchema:
    """Types of `sweep.*` (defaults in conf/sweep/default.yaml)."""

    skip_done: bool = True  # rerunning a sweep skips completed jobs and resumes interrupted ones
    name: str = "${name}"  # the folder under experiments/ that holds the sweep; the run's name by default


@dataclass
class RootSchema:
    """Types of the run-level keys. Groups (model, data, ...) vary by choice and are checked at build."""

    task: Any = None
    model: Any = None
    data: Any = None
    loss: Any = None
    optimizer: Any = None
    scheduler: Any = None
    init: Any = None
    logger: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    name: str = "run"
    seed: int = 0
    allowed_targets: list[str] = field(default_factory=list)
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    decay: list[str] = field(default_factory=list)  # model prefixes that get optimizer.weight_decay; [] = all
    tags: list[str] = field(default_factory=list)
    sweep: SweepSchema = field(default_factory=SweepSchema)
    claim: Any = None  # a preset's lecture claim and its criterion, read by `dlx claims` (dlx/claims.py)


def add_later_trainer_keys(cfg: DictConfig) -> None:
    """Give a run's saved config the trainer keys dlx gained after the run was trained (e.g. `threads`), at their
    defaults, so that it resumes as before instead of failing on a key it never set."""
    if not isinstance(cfg.get("trainer"), DictConfig):  # a damaged config: check_config names what is missing
        return
    defaults = OmegaConf.structured(TrainerSchema)
    for key in defaults:
        if key not in cfg.trainer:
            cfg.trainer[key] = defaults[key]


def register_schema() -> None:
    """Put the schema in Hydra's ConfigStore as `dlx_schema` (the first entry of train.yaml's defaults)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="dlx_schema", node=RootSchema)


# ---- value checks -------------------------------------------------------------------------------
def _positive(key: str, value: Any, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0) \
        and math.isfinite(value)
    if not ok:
        raise ConfigError(key, value, "must be a finite number >= 0" if allow_zero else "must be a finite number > 0")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if str(value).lower() not in choices:
        raise ConfigError(key, value, f"choose one of {', '.join(choices)}")


def validate(cfg: DictConfig) -> None:
    """Check values before any work: raise ConfigError naming the first bad key."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "???", "is required: set it on the command line, e.g. " + f"{missing[0]}=...")
    for group in GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(group, OmegaConf.to_container(node) if isinstance(node, DictConfig) else node,
                              f"must be one of the choices in conf/{group}/ (dlx train --help lists them)")
    folder_name("name", cfg.name)
    check_integers(cfg)
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError("seed", cfg.seed, f"must be an integer in [0, {SEED_MAX}]")
    t = cfg.trainer
    for key in ("epochs", "log_every", "accumulate", "devices"):
        if t[key] < 1:
            raise ConfigError(f"trainer.{key}", t[key], "must be an integer >= 1")
    if t.save_top_k < 0:
        raise ConfigError("trainer.save_top_k", t.save_top_k, "must be an integer >= 0 (0 keeps best.pt only)")
    for key in ("max_steps", "val_every", "ckpt_every", "early_stop", "threads"):
        if t[key] is not None and t[key] < 1:
            raise ConfigError(f"trainer.{key}", t[key], "must be an integer >= 1 or null")
    _positive("trainer.grad_clip", t.grad_clip)
    _positive("trainer.stop_grad_norm", t.stop_grad_norm)
    if t.ema is not None and not 0 < t.ema < 1:
        raise ConfigError("trainer.ema", t.ema, "must be a decay in (0, 1), e.g. 0.999, or null")
    if t.overfit_batches < 0:
        raise ConfigError("trainer.overfit_batches", t.overfit_batches, "must be >= 0")
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("trainer.on_nonfinite", t.on_nonfinite, ON_NONFINITE)
    _choice("trainer.channels_last", t.channels_last, AUTO_BOOL)
    if str(t.device).split(":")[0] not in DEVICES:
        raise ConfigError("trainer.device", t.device, f"choose one of {', '.join(DEVICES)} (or cuda:N)")
    if t.monitor_mode is not None:
        _choice("trainer.monitor_mode", t.monitor_mode, ("min", "max"))


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def folder_name(key: str, value: Any) -> None:
    """A value that becomes one folder under experiments/: no separators, no '..', not too long."""
    name = str(value)
    if not name.strip() or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise ConfigError(key, value, "must be a folder name under experiments/ (no '/', not '.' or '..')")
    if len(name.encode()) > NAME_MAX:
        raise ConfigError(key, f"{name[:40]}...", f"is {len(name.encode())} bytes; a folder name may have at most "
                          f"{NAME_MAX}")


def check_hydra(hydra: DictConfig) -> None:
    """The Hydra settings that decide where a run's files go: every file of a run stays inside its folder,
    and a new run never lands in a folder that holds a run already (it would overwrite its checkpoints and
    mix two runs in one metrics.jsonl)."""
    subdir = hydra.get("output_subdir")
    if subdir is not None and (Path(str(subdir)).is_absolute() or ".." in Path(str(subdir)).parts):
        raise ConfigError("hydra.output_subdir", subdir, "must be a folder inside the run folder (.hydra) or null")
    sweep_subdir = OmegaConf.to_container(hydra.sweep, resolve=False).get("subdir")
    if sweep_subdir is not None and (str(sweep_subdir).startswith("/") or ".." in str(sweep_subdir).split("/")):
        raise ConfigError("hydra.sweep.subdir", sweep_subdir, "must be a folder inside the sweep folder")
    handlers = OmegaConf.to_container(hydra.job_logging, resolve=False).get("handlers") or {}
    for name, handler in handlers.items():
        filename = handler.get("filename") if isinstance(handler, dict) else None
        if filename is None:
            continue
        inside = str(filename).startswith("${hydra.runtime.output_dir}/") and ".." not in str(filename).split("/")
        if not inside:
            raise ConfigError(f"hydra.job_logging.handlers.{name}.filename", filename,
                              "must be a file inside the run folder: ${hydra.runtime.output_dir}/<file>")
    try:
        run_dir = Path(str(hydra.run.dir))
    except Exception:  # noqa: BLE001 - resolvers only Hydra's run provides: checked again when the job starts
        return
    check_new_run_dir(run_dir, "hydra.run.dir")


def check_writable(key: str, folder: Path) -> None:
    """The folder runs go to can be written (created where missing): a read-only or foreign folder is one line
    before any work, not a traceback from inside Hydra. Nothing is left behind by the check."""
    import tempfile

    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, str(folder), f"{existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(key, str(folder), f"cannot write in {existing} ({e.strerror})") from None


RUN_FILES = ("summary.json", "metrics.jsonl", "checkpoints", ".hydra")


def check_new_run_dir(run_dir: Path, key: str) -> None:
    """Refuse a folder that holds a run already: `dlx resume` continues one, a new run never overwrites it."""
    held = [name for name in RUN_FILES if (Path(run_dir) / name).exists()]
    if held:
        raise ConfigError(key, str(run_dir), f"holds a run already ({', '.join(held)}); continue it with "
                          f"`dlx resume {run_dir}` or choose a new folder")


# The loss families (modules of dlx/losses/) each dlx task can train with; a task not listed takes any loss.
TASK_LOSSES = {
    "dlx.tasks.classify.": "dlx.losses.classification.", "dlx.tasks.segment.": "dlx.losses.classification.",
    "dlx.tasks.autoregress.": "dlx.losses.classification.", "dlx.tasks.reconstruct.": "dlx.losses.reconstruction.",
    "dlx.tasks.stacked.": "dlx.losses.reconstruction.", "dlx.tasks.vae.": "dlx.losses.reconstruction.",
    "dlx.tasks.gan.": "dlx.losses.gan.", "dlx.tasks.regress.": "dlx.losses.regression.",
}
SEED_MAX = 2**32 - 1  # numpy's seed range; torch's is wider
INT_MAX = 2**63 - 1  # what a config integer may be: torch and numpy take 64-bit integers


def check_loss_fits_task(cfg: DictConfig) -> None:
    """A loss of another family than the task's (loss=recon_mse with task=classify) fails before any work."""
    task, loss = str(cfg.task._target_), str(cfg.loss._target_)
    family = next((f for t, f in TASK_LOSSES.items() if task.startswith(t)), None)
    if family is None or not loss.startswith("dlx.losses.") or loss.startswith(family):
        return
    fitting = []
    for path in sorted((conf_dir() / "loss").glob("*.yaml")):
        target = (OmegaConf.load(path) or {}).get("_target_", "")
        if str(target).startswith(family):
            fitting.append(path.stem)
    raise ConfigError("loss", loss, f"does not fit {task.rsplit('.', 1)[-1]}: this task trains with a "
                      f"{family.split('.')[-2]} loss: loss={'|'.join(fitting)}")


def check_integers(node: Any, path: str = "") -> None:
    """No integer beyond 64 bits anywhere (seed=99999999999999999999999 overflowed deep in torch)."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                check_integers(child, f"{path}.{key}" if path else str(key))
            elif not child._is_interpolation() and not child._is_missing():
                value = child._value()
                if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_MAX:
                    raise ConfigError(f"{path}.{key}" if path else str(key), value, "is too large: at most 2**63-1")
    elif isinstance(node, ListConfig) and not node._is_none() and not node._is_interpolation():
        for i in range(len(node)):
            check_integers(node._get_node(i), f"{path}[{i}]")


def _validate_groups(cfg: DictConfig) -> None:
    """Ranges of the group keys that every choice of the group shares."""
    check_loss_fits_task(cfg)
    sched = cfg.scheduler
    for key in ("warmup_steps", "step_size", "total_steps"):
        if key in sched and sched[key] is not None and (not isinstance(sched[key], int) or sched[key] < 0):
            raise ConfigError(f"scheduler.{key}", sched[key], "must be an integer >= 0")
    for key in ("gamma", "factor"):
        if key in sched and sched[key] is not None:
            _positive(f"scheduler.{key}", sched[key])
    opt = cfg.optimizer
    if "lr" in opt:
        _positive("optimizer.lr", opt.lr)
    if "weight_decay" in opt:
        _positive("optimizer.weight_decay", opt.weight_decay, allow_zero=True)
    if "momentum" in opt and _is_number(opt.momentum) and not 0 <= opt.momentum < 1:
        raise ConfigError("optimizer.momentum", opt.momentum, "must be in [0, 1)")
    data = cfg.data
    for key in ("batch_size", "eval_batch_size"):
        if key in data and (not isinstance(data[key], int) or data[key] < 1):
            raise ConfigError(f"data.{key}", data[key], "must be an integer >= 1")
    if "val_fraction" in data and _is_number(data.val_fraction) and not 0 <= data.val_fraction < 1:
        raise ConfigError("data.val_fraction", data.val_fraction,
                          "must be in [0, 1) (0: train on every training image, validate on the test split)")
    if "limit" in data and _is_number(data.limit) and data.limit < 1:
        raise ConfigError("data.limit", data.limit, "must be an integer >= 1 or null")
    if "dropout" in cfg.model and _is_number(cfg.model.dropout) and not 0 <= cfg.model.dropout < 1:
        raise ConfigError("model.dropout", cfg.model.dropout, "must be in [0, 1)")
    if "label_smoothing" in cfg.loss and _is_number(cfg.loss.label_smoothing) \
            and not 0 <= cfg.loss.label_smoothing < 1:
        raise ConfigError("loss.label_smoothing", cfg.loss.label_smoothing, "must be in [0, 1)")


def _is_number(value: Any) -> bool:
    """Range checks judge numbers only; a value of another type is named with its type by dlx.arguments."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/train.yaml with overrides, as `dlx train` does, without running (tests, tools)."""
    return compose_with_choices(overrides)[0]


def compose_with_choices(
    overrides: list[str] | tuple[str, ...] = (), check_paths: bool = False
) -> tuple[DictConfig, dict[str, str]]:
    """The composed config and the group choices Hydra recorded (e.g. {"model": "resnet", ...}).

    The `${hydra:...}` resolver is not available outside a Hydra run, so a default `name` is
    filled in from the choices (see `default_name`). `check_paths` checks where the run's files would go
    (`check_hydra`), as `dlx train` does before Hydra writes anything.
    """
    from hydra.types import RunMode

    from dlx import resolvers, searchpath

    resolvers.register()
    register_schema()
    source = searchpath.current()  # dlx's conf/, or the user's folders of `dlx train --config-dir ...`
    with searchpath.initialized(source) as hydra:
        cfg = hydra.compose_config(source.config_name, overrides=source.with_searchpath(list(overrides)),
                                   run_mode=RunMode.RUN, with_log_configuration=False)
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if "/" not in k and v is not None}
    with _open(cfg):
        if has_default_name(cfg):
            cfg.name = default_name([choices])
        if check_paths:
            check_hydra(cfg.hydra)
        del cfg["hydra"]
    return cfg, choices


def has_default_name(cfg: DictConfig) -> bool:
    """True when `name` is still train.yaml's `<task>-<model>-<data>` interpolation (no preset set it)."""
    return "${hydra:" in str(OmegaConf.to_container(cfg, resolve=False).get("name", ""))


def default_name(jobs: list[dict[str, str]]) -> str:
    """`<task>-<model>-<data>`; a group swept over several choices shows them all: `classify-mlp+lenet-digits`."""
    parts = []
    for group in ("task", "model", "data"):
        seen = list(dict.fromkeys(job.get(group, "?") for job in jobs))
        parts.append("+".join(seen))
    return "-".join(parts)


class _open:
    """Context manager: lift struct/readonly flags on a config for a controlled edit."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def __enter__(self) -> DictConfig:
        OmegaConf.set_struct(self.cfg, False)
        return self.cfg

    def __exit__(self, *exc: object) -> None:
        OmegaConf.set_struct(self.cfg, True)


# ---- turning Hydra's and OmegaConf's errors into one line -------------------------------------------
def explain(e: BaseException, cfg: DictConfig | None = None) -> DlxError:
    """Translate a composition error into a one-line DlxError naming the key, the value and the choices
    (`cfg`, when given, is searched for the key whose interpolation failed)."""
    import difflib
    import re

    from hydra.errors import MissingConfigException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        GrammarParseError,
        InterpolationResolutionError,
        OmegaConfBaseException,
        ValidationError,
    )


    text = str(e)
    if type(e).__module__.startswith("yaml"):  # malformed YAML: name the file, line and problem
        m = re.search(r'in "([^"]+)", line (\d+), column (\d+)', text)
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("in ")]
        where = f"{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else "a YAML file"
        return DlxError(f"{where}: malformed YAML: {'; '.join(lines)}")
    if isinstance(e, MissingConfigException) and e.options is not None:
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        group, choice = (m.group(1), m.group(2)) if m else ("config", e.missing_cfg_file)
        near = difflib.get_close_matches(str(choice), list(e.options), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return ConfigError(group, choice, f"choose one of {', '.join(sorted(e.options))}{hint}")
    cause = e.__cause__ or e.__context__
    if isinstance(cause, OmegaConfBaseException):
        e, text = cause, str(cause)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    key = getattr(e, "full_key", None) or _full_key(text)
    if isinstance(e, InterpolationResolutionError | GrammarParseError):
        reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", first).strip().strip('"')
        found = broken_interpolation(cfg) if cfg is not None else None
        if found:
            culprit = _blame(cfg, *found, reason)
            if culprit:
                return DlxError(f"{culprit[0]}={culprit[1]!r}: {reason} (in {found[0]}={found[1]})")
            return DlxError(f"{found[0]}={found[1]}: cannot resolve the interpolation: {reason}")
        return DlxError(f"{key or 'a config value'}: cannot resolve the interpolation: {reason}")
    if isinstance(e, ConfigKeyError | ConfigAttributeError) or re.search(r"Key '[^']+' (is )?not in", text):
        parent, _, leaf = (key or "").rpartition(".")
        return DlxError(f"{key}: no such key{_suggest(parent, leaf)}{_plus_hint(parent, leaf)}")
    if isinstance(e, ValidationError):
        return DlxError(f"{key}: {first}")
    m = re.search(r"Multiple values for ([\w/.]+)\. To override a value use 'override [\w/.]+: ([^']+)'", text)
    if m:  # `+logger=mlflow` where the defaults already choose a logger: `+` adds, it does not replace
        return DlxError(f"+{m.group(1)}={m.group(2)}: {m.group(1)} already has a choice; choose another one with "
                        f"{m.group(1)}={m.group(2)} (without +)")
    if "Could not override" in text:
        k = re.search(r"Could not override '([^']+)'", text)
        return DlxError(f"{k.group(1) if k else key}: {_last_reason(text)}")
    if "Error parsing override" in text or "mismatched input" in text or "no viable alternative" in text:
        return DlxError(f"cannot parse the override: {first}")
    return DlxError(first)


def _full_key(text: str) -> str | None:
    import re

    m = re.search(r"full_key: (\S+)", text)
    return m.group(1) if m else None


def _last_reason(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if not line.startswith(("Could not override", "To append", "full_key", "object_type", "reference_type")):
            return line
    return lines[-1] if lines else "invalid override"


def _suggest(parent: str, leaf: str) -> str:
    """'did you mean' from the keys that exist under `parent` in the default composition."""
    import difflib

    try:
        node = OmegaConf.select(_default_keys(), parent) if parent else _default_keys()
        options = list(node.keys()) if isinstance(node, DictConfig) else []
    except Exception:  # noqa: BLE001 - a suggestion is optional
        options = []
    near = difflib.get_close_matches(leaf, [str(o) for o in options], n=1)
    return f" (did you mean {parent + '.' if parent else ''}{near[0]}?)" if near else ""


def _plus_hint(parent: str, leaf: str) -> str:
    """The `+key=...` hint, only where it would work: the group's target takes such an argument. A key that no
    part of dlx reads (trainer.*, run-level keys) is refused even with `+` (see `check_known_keys`)."""
    from dlx.arguments import takes_argument

    try:
        node = OmegaConf.select(_default_keys(), parent) if parent else None
        ok = isinstance(node, DictConfig) and "_target_" in node and takes_argument(_default_keys(), node, leaf)
    except Exception:  # noqa: BLE001 - a hint is optional
        ok = False
    key = f"{parent}.{leaf}" if parent else leaf
    return f"; {node._target_} takes it: add it with +{key}=..." if ok else ""


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse a key added with `+` under a typed node (the run-level keys, trainer, paths, sweep) that no part of
    dlx reads, so that `+trainer.epohcs=3` or `+logger=csv` (without such a group) fails instead of training a
    default run. Group nodes with a `_target_` are checked against their target's signature (dlx.arguments)."""
    import dataclasses
    import difflib

    def walk(node: DictConfig, path: str) -> None:
        schema = OmegaConf.get_type(node)
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return
        known = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            name = f"{path}.{key}" if path else str(key)
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {path + '.' if path else ''}{near[0]}?)" if near else ""
                raise DlxError(f"{name}: no such key{hint}; nothing in dlx reads it, so it is refused, not ignored")
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                walk(child, name)

    walk(cfg, "")


_DEFAULTS: dict[str, DictConfig] = {}


def _default_keys() -> DictConfig:
    if "cfg" not in _DEFAULTS:
        _DEFAULTS["cfg"] = compose([])
    return _DEFAULTS["cfg"]


def check_config(cfg: DictConfig) -> None:
    """Everything that must hold before a run starts: root and trainer values, the `_target_` allowlist,
    then the group arguments' types (from their targets' signatures) and ranges."""
    from dlx.arguments import check_arguments, check_targets

    check_known_keys(cfg)
    validate(cfg)  # these three import nothing heavy: a typo, a range or a target fails in a blink
    check_targets(cfg)  # before check_arguments imports any target (and torch with it)
    _validate_groups(cfg)
    check_arguments(cfg)


def check(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """Compose with `overrides` and check the result; any failure becomes one DlxError line."""

    try:
        cfg, choices = compose_with_choices(overrides, check_paths=True)
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf composition errors, translated
        raise explain(e) from None
    try:
        check_config(cfg)
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. interpolation to a missing key
        raise explain(e, cfg) from None
    return cfg, choices


def _blame(cfg: DictConfig, key: str, text: str, reason: str, depth: int = 0) -> tuple[str, Any] | None:
    """The plain value, referenced by the failing interpolation `text` of `key` (or by a failing interpolation it
    references), that the error message quotes: `data.length='long'` behind `${mul:${.length},2}`."""
    import re

    if depth > 8:
        return None
    parent = key.rpartition(".")[0]
    for ref in re.findall(r"\$\{(\.*[\w.]+)\}", text):
        dots = len(ref) - len(ref.lstrip("."))
        base = parent.split(".") if parent else []
        full = ".".join([*base[: len(base) - (dots - 1)], ref.lstrip(".")]) if dots else ref
        node = OmegaConf.select(cfg, full, throw_on_resolution_failure=False, default=None)
        raw = _raw(cfg, full)
        if isinstance(raw, str) and "${" in raw:
            found = _blame(cfg, full, raw, reason, depth + 1)
            if found:
                return found
        elif node is not None and repr(node) in reason:
            return full, node
    return None


def _raw(cfg: DictConfig, key: str) -> Any:
    try:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
        child = node._get_node(leaf) if isinstance(node, DictConfig) else None
        return child._value() if child is not None else None
    except Exception:  # noqa: BLE001 - a key that does not exist blames nothing
        return None


def broken_interpolation(node: Any, path: str = "") -> tuple[str, str] | None:
    """(key, its text) of the first value whose interpolation cannot be resolved, None when all resolve."""
    if isinstance(node, DictConfig | ListConfig):
        if node._is_none() or node._is_missing():
            return None
        if node._is_interpolation():
            try:
                node._dereference_node()
            except Exception:  # noqa: BLE001 - any resolution failure marks the key
                return path, str(node._value())
            return None
        items = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in items:
            child = node._get_node(key)
            found = broken_interpolation(child, (f"{path}.{key}" if path else str(key)) if isinstance(key, str)
                                         else f"{path}[{key}]")
            if found:
                return found
        return None
    if node is not None and node._is_interpolation():
        try:
            node._dereference_node()
        except Exception:  # noqa: BLE001
            return path, str(node._value())
    return None
