"""Resumable sweeps: the same `dlx train -m ...` again finishes what is missing and trains nothing twice.

Two keys make it work:

- **The sweep key**: a hash of the sweep's command-line overrides. Before Hydra starts, the parent
  process picks the sweep folder itself: the newest `multirun-*` folder of the same experiment whose
  `sweep.json` holds the same key (when every job folder in it still holds the config that job would
  train now), else a new folder. It passes that folder to Hydra as a literal `hydra.sweep.dir`, so a
  rerun continues in the same folder, and launchers that run jobs in other processes (joblib, SLURM)
  need no per-process resolver (`${uid:}`) to find it.
- **The job's config hash** (`config.sha` in every run folder): the resolved config minus keys that do
  not change what is trained (paths, the progress bar, these sweep settings). A job whose hash belongs to
  a completed (or diverged) run anywhere under `experiments/<name>/` is skipped; one with an
  interrupted run (a `checkpoints/last.pt` and no live process) resumes in that run's folder; the rest
  train. A job that runs elsewhere leaves `same_as.json` in its own folder, pointing there.

Each job appends one line to `<sweep>/jobs.jsonl` (what it did, why, its objective), and the parent
prints the sweep's summary from those lines when Hydra returns, whatever launcher ran the jobs.
No torch import here: the parent of a sweep stays light.
"""

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from dlx import rundir
from dlx.config import SweepSchema
from dlx.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, ConfigError, DlxError

# Keys that do not change what a job trains: they stay out of its config hash.
VOLATILE = ("paths", "sweep", "hydra", "logger", "trainer.progress", "trainer.print_config", "tags", "data.root",
            "data.download")
# Statuses after which training the same config again would give the same result.
DONE = ("completed", "diverged")
# Files a fresh start in a job's own folder replaces (an earlier attempt that never reached a checkpoint).
STALE = ("metrics.jsonl", "summary.json", "error.txt", "same_as.json", "checkpoints")


def settings(cfg: DictConfig) -> SweepSchema:
    """The `sweep` block as a typed SweepSchema; a bad key or value is a ConfigError."""
    node = cfg.get("sweep") if isinstance(cfg, DictConfig) else None
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
    known = set(SweepSchema.__dataclass_fields__)
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"sweep.{key}", value, f"is not a sweep setting; known: {', '.join(sorted(known))}")
    if not isinstance(values.get("skip_done", True), bool):
        raise ConfigError("sweep.skip_done", values["skip_done"], "must be true or false")
    name = str(values.get("name", "sweep"))
    if not name.strip() or "/" in name or name in (".", ".."):
        raise ConfigError("sweep.name", name, "must be a folder name under experiments/ (no '/')")
    return SweepSchema(**values)


# ---- hashes -----------------------------------------------------------------------------------------
def config_sha(plain: dict[str, Any]) -> str:
    """Hash of a resolved config (a plain dict) minus VOLATILE keys: equal hashes train the same thing."""
    kept = json.loads(json.dumps(plain, default=str))
    for key in VOLATILE:
        parent, _, leaf = key.rpartition(".")
        node = kept.get(parent) if parent else kept
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def sweep_key(overrides: list[str]) -> str:
    """Hash of a sweep's overrides as typed, minus those that only move outputs or pick a launcher."""
    kept = sorted(o for o in overrides if not _volatile_override(o))
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def _volatile_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key.startswith(("hydra.", "hydra/", "paths.", "sweep.")) or key in (
        "trainer.progress", "trainer.print_config", "tags", "paths", "sweep")


def read_sha(run_dir: Path) -> str | None:
    try:
        return (Path(run_dir) / "config.sha").read_text().strip()
    except OSError:
        return None


# ---- which jobs: the presets' own sweeps ----------------------------------------------------------------
def expand_presets(jobs: list[list[str]], params_of: Any) -> list[list[str]]:
    """Each job of a sweep over config groups (`-m experiment=ce_vs_mse,vanishing_gradient`) times the sweep its
    choices bring along (`hydra.sweeper.params` of the preset: ce_vs_mse's `loss: cross_entropy,mse`).

    Args:
        jobs: the override lists of the command line's cartesian product.
        params_of: override list -> the `hydra.sweeper.params` that list composes to (called once per distinct
            choice of the swept groups).

    Returns:
        The jobs with the presets' own arms; a key the job already sets (the command line) keeps its value.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.split("=", 1)[0] for job in jobs for o in job]
    swept = {k for k in keys if "." not in k.lstrip("+~") and len({o for job in jobs for o in job
                                                                    if o.split("=", 1)[0] == k}) > 1}
    if not swept:
        return jobs
    parser = OverridesParser.create()
    cache: dict[tuple[str, ...], list[list[str]]] = {}
    out = []
    for job in jobs:
        choice = tuple(o for o in job if o.split("=", 1)[0] in swept)
        if choice not in cache:
            given = {o.split("=", 1)[0].lstrip("+~") for o in job}
            arms = []
            for key, values in params_of(job).items():
                if str(key) in given:
                    continue
                (o,) = parser.parse_overrides([f"{key}={values}"])
                arms.append([f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_discrete_sweep()
                            else [f"{key}={o.get_value_element_as_str()}"])
            cache[choice] = [list(a) for a in itertools.product(*arms)]
        out.extend([*job, *arm] for arm in cache[choice])
    return out


def preset_params(job: list[str]) -> dict[str, Any]:
    """`hydra.sweeper.params` of the config a job's overrides compose to (in the parent, before Hydra runs)."""
    from hydra.types import RunMode

    from dlx import resolvers, searchpath
    from dlx.config import explain, register_schema

    resolvers.register()
    register_schema()
    source = searchpath.current()
    try:
        with searchpath.initialized(source) as hydra:
            cfg = hydra.compose_config(source.config_name, source.with_searchpath(job), run_mode=RunMode.MULTIRUN,
                                       with_log_configuration=False)
    except Exception as e:  # noqa: BLE001 - composition errors, one line
        raise explain(e) from None
    return dict(cfg.hydra.sweeper.get("params") or {})


# ---- the parent: pick the sweep folder, report at the end -------------------------------------------
@dataclass
class Sweep:
    """What the parent process knows about the sweep it launches."""

    dir: Path
    reused: bool
    explicit: bool = False  # the command line set hydra.sweep.dir itself
    started: float = field(default_factory=time.time)
    basic: bool = True  # Hydra's basic sweeper would run it (not Optuna, not a user's sweeper)

    @property
    def hydra_overrides(self) -> list[str]:
        # dlx's sweeper is the basic one that also runs the sweeps of swept presets (hydra_plugins/dlx_sweeper).
        sweeper = ["hydra/sweeper=dlx"] if self.basic else []
        return sweeper + ([] if self.explicit else [f"hydra.sweep.dir={quote(str(self.dir))}"])


def quote(value: str) -> str:
    """A Hydra override value: quoted when it holds characters the override grammar reads."""
    if all(c.isalnum() or c in "/._-+@" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def prepare(overrides: list[str]) -> Sweep:
    """Choose the sweep folder (an earlier one of the same sweep when `sweep.skip_done`) and write sweep.json."""
    cfg, sweep_dir = master_config(overrides)
    options = settings(cfg)
    explicit = any(o.lstrip("+").startswith("hydra.sweep.dir=") for o in overrides)
    key = sweep_key(overrides)
    reused = None
    if options.skip_done and not explicit:
        reused = find_sweep(sweep_dir.parent, key)
    if reused is not None:
        print(f"dlx: continuing sweep {reused} (sweep.skip_done=false starts a new one)")
    basic = str(cfg.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")
    sweep = Sweep(dir=(reused or sweep_dir).absolute(), reused=reused is not None, explicit=explicit, basic=basic)
    sweep.dir.mkdir(parents=True, exist_ok=True)
    record = sweep.dir / "sweep.json"
    if not record.exists():
        rundir.write_json(record, {"key": key, "overrides": overrides, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (sweep.dir / "jobs.jsonl").write_text("")  # this invocation's outcomes; the run folders keep the rest
    return sweep


def master_config(overrides: list[str]) -> tuple[DictConfig, Path]:
    """The sweep's own config (Hydra's multirun composition, sweep values left out) and its resolved sweep dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from hydra.types import RunMode

    from dlx import resolvers, searchpath
    from dlx.config import explain, register_schema

    resolvers.register()
    register_schema()
    setup_globals()
    source = searchpath.current()
    try:
        with searchpath.initialized(source) as hydra:
            cfg = hydra.compose_config(source.config_name, source.with_searchpath(overrides),
                                       run_mode=RunMode.MULTIRUN)
            HydraConfig.instance().set_config(cfg)  # `${hydra:...}` in `name` resolves from here
            sweep_dir = Path(str(cfg.hydra.sweep.dir)).absolute()
            with open_dict(cfg):
                cfg.name = str(cfg.name)  # resolved while Hydra's choices are set
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - composition errors, one line
        raise explain(e) from None
    return cfg, sweep_dir


def find_sweep(experiment: Path, key: str) -> Path | None:
    """The newest sweep folder of `experiment` started with the same overrides whose jobs still match."""
    for record in sorted(experiment.glob("multirun-*/sweep.json"), reverse=True):
        try:
            if json.loads(record.read_text()).get("key") != key:
                continue
        except (OSError, json.JSONDecodeError):
            continue
        changed = changed_jobs(record.parent)
        if not changed:
            return record.parent
        print(f"dlx: not continuing {record.parent}: the config of {changed[0].name} changed since; "
              "starting a new sweep folder")
    return None


def changed_jobs(sweep_dir: Path) -> list[Path]:
    """Job folders whose config.sha differs from what their overrides compose to now (edited conf files)."""
    from dlx.config import compose

    changed = []
    for sha_file in sorted(sweep_dir.glob("*/config.sha")):
        job = sha_file.parent
        overrides_file = job / ".hydra" / "overrides.yaml"
        if not overrides_file.exists():
            continue
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        try:
            now = config_sha(OmegaConf.to_container(compose(overrides), resolve=True))
        except Exception:  # noqa: BLE001 - a job that no longer composes has changed
            now = None
        if now != sha_file.read_text().strip():
            changed.append(job)
    return changed


def report(sweep: Sweep) -> int:
    """Print what each job of this invocation did; return the worst exit code among them."""
    from rich.table import Table

    from dlx import term

    jobs = read_jobs(sweep.dir)
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["action"]] = counts.get(j["action"], 0) + 1
    table = Table()
    for col in ("job", "overrides", "outcome", "objective", "run folder"):
        table.add_column(col, justify="right" if col in ("job", "objective") else "left", overflow="fold")
    varying = varying_overrides([j["overrides"] for j in jobs])
    for j, overrides in zip(jobs, varying, strict=True):
        value = j.get("value")
        shown = f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else ""
        outcome = j["action"] + (f": {j['reason']}" if j.get("reason") else "")
        folder = Path(j["dir"])
        where = folder.name if folder.parent == sweep.dir else _relative(j["dir"])
        table.add_row(str(j["num"]), " ".join(overrides), outcome, shown, where)
    console = term.console()
    done = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    console.print(f"[bold]sweep[/] {_relative(str(sweep.dir))}: {done}", soft_wrap=True)
    console.print(table)
    best = optuna_best(sweep.dir, jobs)
    if best:
        print(best)  # plain: a long run folder stays one line to copy
    return max([j.get("code", 0) for j in jobs], default=0)


def varying_overrides(lists: list[list[str]]) -> list[list[str]]:
    """Each job's overrides without those every job shares (what the sweep varies)."""
    if len(lists) < 2:
        return lists
    shared = set.intersection(*(set(o) for o in lists))
    return [[o for o in overrides if o not in shared] for overrides in lists]


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / "jobs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda j: j["num"])


def optuna_best(sweep_dir: Path, jobs: list[dict[str, Any]]) -> str | None:
    """The study's best trial (optimization_results.yaml, written by the Optuna sweeper) and its run folder."""
    path = Path(sweep_dir) / "optimization_results.yaml"
    if not path.exists():
        return None
    result = OmegaConf.to_container(OmegaConf.load(path))
    params = result.get("best_params")
    if params is None:
        return f"optuna: {result}"
    wanted = {f"{k}={v}" for k, v in params.items()}
    match = next((j for j in jobs if wanted <= set(j["overrides"])), None)
    if match is None:
        match = next((j for j in jobs if j.get("value") == result.get("best_value")), None)
    where = _relative(match["dir"]) if match else "(run folder not found)"
    shown = " ".join(sorted(wanted))
    return f"optuna best trial: {result.get('best_value')} with {shown}\n  run folder: {where}"


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- a job: skip, resume or train -------------------------------------------------------------------
@dataclass
class Plan:
    """What a job does: "train" in `dir`, "resume" the run in `dir`, or "skip" because `dir` has it."""

    action: str
    dir: Path
    reason: str = ""


def plan(cfg: DictConfig, job_dir: Path, skip_done: bool) -> tuple[Plan, str]:
    """Decide what a sweep job does, from its config hash and the run folders of its experiment."""
    sha = config_sha(OmegaConf.to_container(cfg, resolve=True))
    own = read_sha(job_dir)
    if own is not None and own != sha:
        raise DlxError(f"{job_dir} holds a run of another config (config.sha {own}, this job {sha}); "
                       "rerun with sweep.skip_done=false to start a new sweep folder")
    if not skip_done:
        return Plan("train", job_dir), sha
    candidates = ([job_dir] if own == sha else []) + [
        d for d in runs_with_sha(Path(cfg.paths.experiments) / str(cfg.name), sha) if d != job_dir
    ]
    for d in candidates:
        if is_locked(d):
            return Plan("skip", d, f"running in another process ({_relative(str(d))})"), sha
        status = read_status(d)
        if status in DONE:
            where = "" if d == job_dir else f" in {d.name if d.parent == job_dir.parent else _relative(str(d))}"
            return Plan("skip", d, f"{status}{where}"), sha
    for d in candidates:
        if (d / "checkpoints" / "last.pt").is_file():
            return Plan("resume", d, f"from step {read_step(d)} ({read_status(d) or 'no summary'})"), sha
    if own == sha:
        clear_stale(job_dir)
    return Plan("train", job_dir), sha


def runs_with_sha(experiment: Path, sha: str) -> list[Path]:
    """Run folders below `experiment` whose config.sha is `sha`, newest first."""
    found = [p.parent for p in experiment.rglob("config.sha") if p.read_text().strip() == sha]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json, {} when it has none or it is unreadable (the job is then trained again)."""
    try:
        return rundir.read_summary(run_dir)
    except rundir.Unreadable:
        return {}


def read_status(run_dir: Path) -> str | None:
    return read_summary(run_dir).get("status")


def read_step(run_dir: Path) -> int | None:
    return read_summary(run_dir).get("step")


def is_locked(run_dir: Path) -> bool:
    """A live process holds the run's lock (dlx.lock.RunLock): it is training right now."""
    import fcntl

    path = Path(run_dir) / ".lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor also drops the probe's lock
    return False


def clear_stale(job_dir: Path) -> None:
    """An earlier attempt of this job that died before its first checkpoint: start over in its folder."""
    import shutil

    for name in STALE:
        path = job_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for events in job_dir.glob("events.out.tfevents.*"):
        events.unlink()


def objective(run_dir: Path) -> float:
    """The job's value for a sweeper (Optuna): the best monitored metric of a completed run, else NaN.

    NaN makes Optuna record a failed trial and go on, where an exception would stop the study.
    """
    summary = read_summary(run_dir)
    if summary.get("status") != "completed":
        return math.nan
    monitor = summary.get("monitor", {}).get("metric")
    value = summary.get("metrics", {}).get("best", {}).get(monitor)
    return float(value) if isinstance(value, int | float) else math.nan


def record(sweep_dir: Path, num: int, overrides: list[str], job_dir: Path, p: Plan, code: int,
           value: float, error: str | None = None) -> None:
    """One line in `<sweep>/jobs.jsonl` (O_APPEND: parallel jobs do not interleave lines)."""
    action = {"train": "trained", "resume": "resumed", "skip": "skipped"}[p.action]
    if code != 0:
        action = {EXIT_INTERRUPTED: "interrupted", EXIT_DIVERGED: "diverged"}.get(code, "failed")
    reason = error or p.reason or ("" if code == 0 else f"exit code {code}")
    line = {"num": num, "overrides": overrides, "dir": str(p.dir), "job_dir": str(job_dir), "action": action,
            "reason": reason, "status": read_status(p.dir), "code": code,
            "value": value if math.isfinite(value) else None, "time": time.time()}
    path = Path(sweep_dir) / "jobs.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def write_pointer(job_dir: Path, p: Plan) -> None:
    """`same_as.json` in a job folder whose run lives elsewhere, so `dlx compare` finds it from the sweep."""
    if p.dir != job_dir:
        rundir.write_json(job_dir / "same_as.json", {"run_dir": str(p.dir), "action": p.action, "reason": p.reason})


# ---- the job function's side (called from dlx.cli.run_job) --------------------------------------------
class SweepInterrupted(KeyboardInterrupt):
    """A job of the sweep was stopped by SIGINT/SIGTERM: stop the sweep too (its rerun resumes it)."""


_CURRENT: dict[str, Any] = {}


def mark(cfg: DictConfig, run_dir: Path) -> None:
    """config.sha in a single run's folder, so later sweeps find it; a failed start leaves no trace."""
    if (run_dir / "summary.json").exists():
        (run_dir / "config.sha").write_text(config_sha(OmegaConf.to_container(cfg, resolve=True)) + "\n")


def execute(cfg: DictConfig, job_dir: Path) -> int:
    """Run one job of a sweep: skip, resume or train it (see `plan`)."""
    from hydra.core.hydra_config import HydraConfig

    from dlx import distributed

    hc = HydraConfig.get()
    _CURRENT.clear()
    _CURRENT.update(job_dir=job_dir, plan=Plan("train", job_dir))
    try:
        p, sha = plan(cfg, job_dir, settings(cfg).skip_done)
        _CURRENT["plan"] = p
        write_pointer(job_dir, p)
        if p.action == "skip":
            print(f"dlx: job {hc.job.num} skipped: {p.reason}")
            return 0
        (p.dir / "config.sha").write_text(sha + "\n")
        if p.action == "resume":
            print(f"dlx: job {hc.job.num} resumes {p.dir} {p.reason}")
        return distributed.run(cfg, p.dir, resume=p.action == "resume", job_num=hc.job.num)
    except BaseException as e:
        _CURRENT["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        raise


def finish(code: int) -> float | int:
    """What the job function returns to Hydra: the exit code of a single run; in a sweep, the job's objective
    (what Optuna optimizes) after its line in jobs.jsonl. An interrupted job stops the sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or "job_dir" not in _CURRENT:
        return code
    p: Plan = _CURRENT["plan"]
    value = objective(p.dir)
    error = _CURRENT.get("error") or (read_summary(p.dir).get("error") if code not in (0, EXIT_INTERRUPTED) else None)
    record(Path(hc.sweep.dir), hc.job.num, list(hc.overrides.task), _CURRENT["job_dir"], p, code, value, error)
    if code == EXIT_INTERRUPTED:
        raise SweepInterrupted(f"job {hc.job.num} was interrupted")
    return value
