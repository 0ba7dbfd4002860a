"""The one way in and out of a run folder: summary.json, metrics.jsonl, the composed config, atomic JSON.

No torch import: `dlx runs`, `dlx compare` and the sweep bookkeeping read run folders in a blink. Writers
leave nothing half-written (a temp file in the same folder, fsynced, renamed over the old one); readers
never crash on what a crash or a hand edit left behind:

- summary.json that is half-written, not a JSON object (`[]`) or has fields of the wrong type makes the run
  *unreadable*: `read_summary` raises `Unreadable` naming the file and the problem, and the listings
  (`dlx runs`, `dlx compare`) show such runs as unreadable and count them instead of crashing or dropping them.
- metrics.jsonl is appended one line per record; a process killed mid-write leaves a torn last line. Readers
  skip unparsable lines with one warning; a resumed run truncates the file to the records it keeps
  (`truncate_metrics`), the torn line included.
- `.tmp` files a kill left mid-save (`.<name>.<pid>.tmp`) are removed by `clean_stale_tmp` when a run starts
  or resumes.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from dlx.errors import DlxError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = Path(".hydra") / "config.yaml"
OVERRIDES = Path(".hydra") / "overrides.yaml"
TMP_SUFFIX = ".tmp"


class Unreadable(DlxError):
    """A run-folder file that exists but cannot be used (half-written, not the expected shape)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} is unreadable: {reason}")


# ---- atomic writes --------------------------------------------------------------------------------------
def tmp_path(path: Path) -> Path:
    """The temp file an atomic write of `path` uses: hidden, in the same folder (a rename never crosses disks),
    named by this process so two writers never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write `path` atomically through the yielded binary file: temp file, fsync, rename, fsync the folder.

    A kill or a full disk at any moment leaves the old file or the new one, never half of one, and no temp
    file when an error is raised.
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)  # make the rename itself durable


def write_bytes(path: Path, data: bytes) -> None:
    """Atomic write of `data` to `path` (atomic_writer)."""
    with atomic_writer(path) as f:
        f.write(data)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems refuse to open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (indented; values JSON cannot hold are written as their str)."""
    write_bytes(Path(path), json.dumps(obj, indent=2, default=str).encode())


def clean_stale_tmp(folder: Path) -> list[Path]:
    """Remove temp files of atomic writes whose writer is gone (killed mid-save), in `folder` and its
    checkpoints/ and .hydra/ folders; return what was removed. A live process's temp file is kept."""
    removed = []
    for sub in (Path(folder), Path(folder) / "checkpoints", Path(folder) / ".hydra"):
        if not sub.is_dir():
            continue
        for path in sub.glob(f".*{TMP_SUFFIX}"):
            pid = path.name[: -len(TMP_SUFFIX)].rpartition(".")[2]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- summary.json ---------------------------------------------------------------------------------------
# The fields a reader relies on, with the types they must have when present.
SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,), "name": (str,), "metrics": (dict,), "monitor": (dict,), "step": (int,),
    "duration_s": (int, float), "tags": (list,),
}


def summary_problem(obj: Any) -> str | None:
    """What makes a parsed summary.json unusable, or None when it is fine."""
    if not isinstance(obj, dict):
        return f"a JSON object was expected, found {type(obj).__name__}"
    for key, types in SUMMARY_FIELDS.items():
        if key in obj and obj[key] is not None and (not isinstance(obj[key], types) or isinstance(obj[key], bool)):
            return f"'{key}' is {type(obj[key]).__name__}, expected {' or '.join(t.__name__ for t in types)}"
    metrics = obj.get("metrics") or {}
    for part in ("final", "best"):
        if metrics.get(part) is not None and not isinstance(metrics[part], dict):
            return f"'metrics.{part}' is {type(metrics[part]).__name__}, expected dict"
    return None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json; `Unreadable` when it is missing, half-written or of the wrong shape."""
    path = Path(run_dir) / SUMMARY
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise Unreadable(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Unreadable(path, e.strerror if isinstance(e, OSError) and e.strerror else str(e)) from None
    except json.JSONDecodeError as e:
        raise Unreadable(path, f"not valid JSON, half-written? ({e.msg}, line {e.lineno})") from None
    problem = summary_problem(obj)
    if problem:
        raise Unreadable(path, problem)
    return obj


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(Path(run_dir) / SUMMARY, summary)


def read_status(run_dir: Path) -> str | None:
    """The run's status, None when it has no readable summary."""
    try:
        return read_summary(run_dir).get("status")
    except Unreadable:
        return None


# ---- metrics.jsonl --------------------------------------------------------------------------------------
def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One JSON object per line. A torn line from an earlier crash is ended first, so the record lands on a
    line of its own (the torn one stays unparsable and readers skip it)."""
    path = Path(run_dir) / METRICS
    with open(path, "ab") as f:
        if f.tell() and _last_byte(path) != b"\n":
            f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def parse_metrics(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(records, line numbers of the lines that are not a JSON object with an integer step)."""
    records, bad = [], []
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(n)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad.append(n)
    return records, bad


def read_metrics(run_dir: Path, warn: bool = True) -> list[dict[str, Any]]:
    """Every record of a run's metrics.jsonl; unparsable lines (a torn last line after a crash) are skipped,
    with one warning on stderr naming the file and the lines."""
    path = Path(run_dir) / METRICS
    records, bad = parse_metrics(path)
    if bad and warn:
        print(f"dlx: warning: {path}: skipped {len(bad)} unreadable line(s) ({_lines(bad)})", file=sys.stderr)
    return records


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:5])
    return f"line {shown}" + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Keep the records at or before `step` (a resume continues after its checkpoint's step); unparsable
    lines, the torn last line of a crash among them, go too. Atomic; returns how many lines were dropped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return 0
    records, bad = parse_metrics(path)
    keep = [r for r in records if r["step"] <= step]
    dropped = len(records) - len(keep) + len(bad)
    if dropped:
        write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())
    return dropped


# ---- the composed config --------------------------------------------------------------------------------
def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def is_run_dir(run_dir: Path) -> bool:
    return config_path(run_dir).is_file()


def read_config(run_dir: Path):  # noqa: ANN201 - DictConfig (omegaconf is imported lazily)
    """The run's composed config (.hydra/config.yaml); DlxError naming the file when it cannot be read."""
    from omegaconf import DictConfig, OmegaConf

    path = config_path(run_dir)
    if not path.is_file():
        raise DlxError(f"{run_dir} is not a dlx run folder (no {CONFIG})")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - YAML or OmegaConf errors: one line naming the file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unreadable(path, reason) from None
    if not isinstance(cfg, DictConfig):
        raise Unreadable(path, "a mapping of config keys was expected")
    return cfg


def write_config(run_dir: Path, cfg: Any) -> None:
    """Write the composed config (resolved) to .hydra/config.yaml atomically."""
    from omegaconf import OmegaConf

    path = config_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, OmegaConf.to_yaml(cfg, resolve=True).encode())


# ---- listing runs ---------------------------------------------------------------------------------------
def find_summaries(root: Path) -> tuple[list[dict[str, Any]], list[Unreadable]]:
    """Every run below `root` (a folder holding summary.json): (readable summaries, each with `_dir` set,
    unreadable ones). Folders that cannot be listed count as unreadable too."""
    runs, unreadable = [], []

    def onerror(e: OSError) -> None:
        unreadable.append(Unreadable(Path(e.filename or root), e.strerror or str(e)))

    for folder, dirs, files in os.walk(root, onerror=onerror):
        dirs.sort()
        if SUMMARY in files:
            try:
                summary = read_summary(Path(folder))
            except Unreadable as e:
                unreadable.append(e)
                continue
            summary["_dir"] = Path(folder)
            runs.append(summary)
    return runs, unreadable


def unreadable_note(unreadable: list[Unreadable], shown: int = 3) -> str:
    """'2 runs unreadable: a/summary.json (not valid JSON ...); ...' for the end of a listing."""
    if not unreadable:
        return ""
    head = "; ".join(f"{e.path} ({e.reason})" for e in unreadable[:shown])
    more = f"; and {len(unreadable) - shown} more" if len(unreadable) > shown else ""
    return f"{len(unreadable)} run{'s' if len(unreadable) != 1 else ''} unreadable: {head}{more}"
