"""Hostile input, table-driven: each case is a real `dlx` subprocess that must refuse in one line.

Every case asserts the exit code, one stderr line without a traceback, the offending key or file named in it,
and that nothing appeared outside a run folder: the current folder holds no new file and the sentinel path (a
file or folder a `_target_` would create, or a path outside the current folder a run would write to) does not
exist. Most cases fail before torch is imported; the data cases load real files in the MNIST (IDX) and CIFAR
(pickle) formats written by tests/data_files.py.

Placeholders in a case's arguments: SENT (the sentinel path, outside the current folder), RUN (a run folder
that exists already), DATA (the folder the case's `data` writer filled).
"""

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dlx.errors import EXIT_USER_ERROR
from tests.conftest import run_dlx
from tests.data_files import write_cifar10, write_image_folder, write_mnist


@dataclass
class Case:
    """One hostile command: `dlx <cmd> <args>`; `needle` must be in its one stderr line."""

    args: list[str]
    needle: str
    cmd: str = "train"
    code: int = EXIT_USER_ERROR
    data: Callable[[Path], None] | None = None  # writes files into DATA before the command
    env: dict[str, str] = field(default_factory=dict)


# ---- data writers: real formats, one defect each -----------------------------------------------------
def _patch(path: Path, fn: Callable[[bytes], bytes]) -> None:
    path.write_bytes(fn(path.read_bytes()))


def mnist_label_out_of_range(root: Path, split: str = "train") -> None:
    write_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    _patch(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", lambda b: b[:11] + bytes([200]) + b[12:])


def mnist_count_mismatch(root: Path) -> None:
    write_mnist(root)  # 60 training images; the label file keeps 50 labels, with a header that says so
    _patch(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", lambda b: bytes([0, 0, 8, 1]) + (50).to_bytes(4, "big")
           + b[8:58])


def mnist_truncated(root: Path) -> None:
    write_mnist(root)
    _patch(root / "MNIST" / "raw" / "train-images-idx3-ubyte", lambda b: b[: len(b) // 2])


def mnist_wrong_magic(root: Path) -> None:
    write_mnist(root)
    _patch(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", lambda b: b"\x89PNG" + b[4:])


def cifar_truncated(root: Path) -> None:
    write_cifar10(root)
    _patch(root / "cifar-10-batches-py" / "data_batch_2", lambda b: b[: len(b) // 3])


def cifar_count_mismatch(root: Path) -> None:
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / "data_batch_1"
    entry = pickle.loads(path.read_bytes(), encoding="latin1")
    entry["labels"] = entry["labels"][:-2]
    path.write_bytes(pickle.dumps(entry, protocol=2))


def image_folder_unreadable(root: Path) -> None:
    files = write_image_folder(root)
    files["train"][3].write_bytes(b"not an image at all")


# ---- damaged run folders, for the readers ---------------------------------------------------------------
def fake_run(folder: Path, summary: str = '{"status": "completed", "name": "x", "metrics": {"final": {}}}') -> Path:
    """A run folder as `dlx train` leaves it (no training needed to damage one)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"weights")
    (folder / "summary.json").write_text(summary)
    (folder / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n')
    return folder


def runs_with(*summaries: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        for i, text in enumerate(summaries):
            fake_run(root / "experiments" / "x" / f"run{i}", text)
    return write


def run_with_bad_config(root: Path) -> None:
    run = fake_run(root / "run")
    (run / ".hydra" / "config.yaml").write_text("trainer: [unclosed\n  : :\n")


def run_without_checkpoint(root: Path) -> None:
    run = fake_run(root / "run")
    (run / "checkpoints" / "last.pt").unlink()


T = "_target_"
CASES: dict[str, Case] = {
    # 1. nothing runs that the allowlist refuses; nothing is built for a key its target does not take
    "target in a list": Case([f"+model.foo=[{{{T}:os.makedirs,name:SENT}}]"], "model.foo[0]._target_"),
    "target in nested lists": Case([f"+task.x=[[{{{T}:subprocess.run,args:[touch,SENT]}}]]"], "task.x[0][0]._target_"),
    "target in _args_": Case([f"+model._args_=[{{{T}:os.system,_args_:['touch SENT']}}]"], "model._args_[0]._target_"),
    "torch.save nested": Case([f"+model.foo.{T}=torch.save", "+model.foo.obj=1", "+model.foo.f=SENT"],
                              "model.foo._target_"),
    "torch.save as the model": Case(["~model", f"+model.{T}=torch.save", "+model.obj=1", "+model.f=SENT"],
                                    "model._target_"),
    "torch.hub.load": Case([f"loss.{T}=torch.hub.load"], "loss._target_"),
    "torch.load as init": Case([f"init.{T}=torch.load", "~init.scheme", "~init.std", "+init.f=SENT"],
                               "init._target_"),
    "dlx.checkpoint.save": Case([f"model.{T}=dlx.checkpoint.save"], "model._target_"),
    "dlx.loop.run": Case([f"scheduler.{T}=dlx.loop.run"], "scheduler._target_"),
    "torchvision.datasets": Case([f"data.{T}=torchvision.datasets.MNIST"], "data._target_"),
    "builtins.exec": Case([f"optimizer.{T}=builtins.exec"], "optimizer._target_"),
    "target from env": Case([f"model.{T}=${{oc.env:HOSTILE_TARGET}}"], "model._target_",
                            env={"HOSTILE_TARGET": "os.system"}),
    "target not a string": Case([f"model.{T}=[1,2]"], "model._target_"),
    "allowlisted object for an int": Case([f"model.width={{{T}:torch.nn.Linear,in_features:1,out_features:1}}"],
                                          "model.width"),
    "allowlisted object, key not taken": Case([f"+optimizer.foo={{{T}:torch.nn.Linear,in_features:1,out_features:1}}"],
                                              "optimizer.foo"),
    "trusted prefix, keys not taken": Case(["allowed_targets=[os]", f"model.{T}=os.makedirs", "+model.name=SENT"],
                                           "takes no such argument"),
    "interpolated node": Case(["+model.foo=${optimizer}"], "model.foo"),
    "unknown hydra key": Case(["+model._foo_=1"], "model._foo_"),
    "function outside factories": Case([f"model.{T}=torch.nn.functional.relu"], "model._target_"),
    # 2. nothing escapes the run folder or overwrites a run
    "name ../../x": Case(["name=../../x"], "name"),
    "name absolute": Case(["name=/tmp/hostile-abs"], "name"),
    "name dot": Case(["name=."], "name"),
    "name empty": Case(["name="], "name"),
    "name too long": Case(["name=" + "n" * 300], "name"),
    "sweep.name escapes": Case(["-m", "seed=0,1", "sweep.name=../../x"], "sweep.name"),
    "run.dir onto a run": Case(["hydra.run.dir=DATA/run"], "hydra.run.dir", data=lambda d: [fake_run(d / "run")]
                               and None),
    "output_subdir escapes": Case(["hydra.output_subdir=../../escaped"], "hydra.output_subdir"),
    "output_subdir absolute": Case(["hydra.output_subdir=SENT"], "hydra.output_subdir"),
    "log file outside": Case(["hydra.job_logging.handlers.file.filename=SENT"], "hydra.job_logging.handlers.file"),
    "sweep subdir escapes": Case(["-m", "seed=0,1", "hydra.sweep.subdir=../../x"], "hydra.sweep.subdir"),
    # 3. every config error names its key
    "mul of a string": Case(["optimizer.lr=${mul:abc,2}"], "optimizer.lr"),
    "missing env var": Case(["optimizer.lr=${oc.env:HOSTILE_NOPE}"], "optimizer.lr"),
    "self reference": Case(["optimizer.lr=${optimizer.lr}"], "optimizer.lr"),
    "missing interpolation key": Case(["optimizer.lr=${nosuch.key}"], "optimizer.lr"),
    "huge seed": Case(["seed=99999999999999999999999"], "seed"),
    "seed beyond numpy": Case(["seed=4294967296"], "seed"),
    "negative seed": Case(["seed=-1"], "seed"),
    "huge width": Case(["model.width=99999999999999999999999"], "model.width"),
    "infinite lr": Case(["optimizer.lr=1e999"], "optimizer.lr"),
    "nan lr": Case(["optimizer.lr=nan"], "optimizer.lr"),
    "loss of another task": Case(["loss=recon_mse"], "loss"),
    "gan without its loss": Case(["task=gan"], "loss"),
    "regress with cross entropy": Case(["task=regress", "loss=cross_entropy"], "loss"),
    "negative warmup": Case(["scheduler=cosine", "scheduler.warmup_steps=-3"], "scheduler.warmup_steps"),
    "unparsable override": Case(["optimizer.lr=[1,2"], "optimizer.lr=[1,2"),
    "unparsable interpolation": Case(["optimizer.lr=${oops"], "optimizer.lr"),
    "list without -m": Case(["trainer.max_steps=1,2"], "trainer.max_steps"),
    "null group": Case(["~model"], "model"),
    "--cfg job checks values": Case(["--cfg", "job", "optimizer.lr=-1"], "optimizer.lr"),
    "--cfg job checks targets": Case(["--cfg", "job", f"+model.foo=[{{{T}:os.makedirs,name:SENT}}]"],
                                     "model.foo[0]._target_"),
    "monitor typo": Case(["trainer.monitor=val/acuracy", "trainer.max_steps=2"], "trainer.monitor"),
    "limit 1 with BatchNorm": Case(["data.limit=1", "trainer.max_steps=2"], "data.limit"),
    # 4. bad data is named, not crashed on
    "labels out of range": Case(["data=mnist", "paths.data=DATA"], "train-labels-idx1-ubyte",
                                data=mnist_label_out_of_range),
    "test labels out of range": Case(["data=mnist", "paths.data=DATA"], "t10k-labels-idx1-ubyte",
                                     data=lambda d: mnist_label_out_of_range(d, "test")),
    "label count mismatch": Case(["data=mnist", "paths.data=DATA"], "train-labels-idx1-ubyte",
                                 data=mnist_count_mismatch),
    "truncated IDX": Case(["data=mnist", "paths.data=DATA"], "train-images-idx3-ubyte", data=mnist_truncated),
    "wrong IDX magic": Case(["data=mnist", "paths.data=DATA"], "t10k-images-idx3-ubyte", data=mnist_wrong_magic),
    "truncated CIFAR batch": Case(["data=cifar10", "data.verify=false", "paths.data=DATA"], "data_batch_2",
                                  data=cifar_truncated),
    "CIFAR count mismatch": Case(["data=cifar10", "data.verify=false", "paths.data=DATA"], "data_batch_1",
                                 data=cifar_count_mismatch),
    "unreadable image": Case(["data=image_folder", "data.root=DATA", "data.num_classes=3", "data.image_size=16"],
                             "cat/003.png", data=image_folder_unreadable),
    # 5. damaged run folders: readers name them and count them
    "runs: summary []": Case([], "1 run unreadable", cmd="runs", code=0, data=runs_with("[]")),
    "runs: half-written": Case([], "not valid JSON", cmd="runs", code=0, data=runs_with('{"status": "compl')),
    "runs: wrong types": Case([], "'metrics' is str", cmd="runs", code=0,
                              data=runs_with('{"status": "completed", "metrics": "high"}')),
    "runs: counted": Case([], "3 runs unreadable", cmd="runs", code=0,
                          data=runs_with("[]", "7", '{"status": 3}', '{"status": "completed", "name": "ok"}')),
    "compare: damaged": Case(["experiments"], "run1/summary.json", cmd="compare", code=EXIT_USER_ERROR,
                             data=runs_with('{"status": "failed"}', "[1, 2]")),
    "resume: bad config": Case(["DATA/run"], "config.yaml", cmd="resume", data=run_with_bad_config),
    "resume: no checkpoint": Case(["DATA/run"], "last.pt", cmd="resume", data=run_without_checkpoint),
}


def test_at_least_sixty_hostile_cases() -> None:
    assert len(CASES) >= 60


def files_below(root: Path) -> dict[str, str]:
    """relative path -> content hash of every file below `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    cwd, data, sentinel = tmp_path / "cwd", tmp_path / "data", tmp_path / "SENT"
    cwd.mkdir()
    data.mkdir()
    if case.data:
        case.data(cwd if case.cmd in ("runs", "compare") else data)
    before_cwd, before_data = files_below(cwd), files_below(data)
    args = [a.replace("SENT", str(sentinel)).replace("DATA", str(data)) for a in case.args]
    if case.cmd == "train" and "--cfg" not in args:
        args.append("trainer.progress=false")
    done = run_dlx(case.cmd, *args, cwd=cwd, env=case.env, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == case.code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(("dlx: error: ", "dlx: warning: ")), lines[0]
    assert case.needle in lines[0], lines[0]
    # Nothing escaped, nothing was created by a refused target, no run folder was left, nothing was overwritten.
    assert not sentinel.exists(), f"{sentinel} was created"
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert files_below(cwd) == before_cwd, "files appeared or changed in the current folder"
    assert files_below(data) == before_data, "files appeared or changed in the data folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "data"]


def test_a_sweep_with_overrides_too_long_for_a_folder_name_runs(tmp_path: Path) -> None:
    """Job folders named by a long override would exceed the file-name limit: they are numbered instead."""
    widths = "[" + ",".join(["4"] * 150) + "]"
    done = run_dlx("train", "-m", f"model.widths={widths},[4]", "model.batch_norm=false", "trainer.max_steps=1",
                   "trainer.val_every=1", "trainer.progress=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep,) = (tmp_path / "experiments").glob("*/multirun-*")
    jobs = [json.loads(line) for line in (sweep / "jobs.jsonl").read_text().splitlines()]
    assert [j["action"] for j in jobs] == ["trained", "trained"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]


# ---- checkpoints of the wrong shape or structure, for every command that loads one --------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("trained")
    done = run_dlx("train", "trainer.max_steps=4", "trainer.val_every=2", "model.width=16", "trainer.progress=false",
                   cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = [p.parent.parent for p in (cwd / "experiments").rglob("checkpoints/best.pt")]
    return run


def _damage(path: Path, how: str) -> None:
    import torch

    state = torch.load(path, weights_only=True)
    weights = state["task"]
    first = next(k for k, v in weights.items() if v.is_floating_point())
    if how == "resized":
        weights[first] = torch.zeros(3, 3)
    elif how == "extra key":
        weights["model.surplus.weight"] = torch.zeros(2)
    elif how == "missing key":
        del weights[first]
    elif how == "nan":
        weights[first] = torch.full_like(weights[first], float("nan"))
    elif how == "not a state dict":
        state["task"] = [1, 2, 3]
    elif how == "no optimizers":
        del state["optimizers"]
    torch.save(state, path)


CHECKPOINT_CASES = {
    # (command, damaged file, damage, text the one line must contain)
    "eval, resized tensor": ("eval", "best.pt", "resized", "does not fit"),
    "eval, extra key": ("eval", "best.pt", "extra key", "does not fit"),
    "eval, missing key": ("eval", "best.pt", "missing key", "does not fit"),
    "eval, NaN weights": ("eval", "best.pt", "nan", "non-finite"),
    "predict, resized tensor": ("predict", "best.pt", "resized", "does not fit"),
    "predict, not a state dict": ("predict", "best.pt", "not a state dict", "state dict"),
    "init_from, not a state dict": ("init_from", "best.pt", "not a state dict", "init_from"),
    "init_from, NaN weights": ("init_from", "best.pt", "nan", "init_from"),
    "resume, missing key": ("resume", "last.pt", "missing key", "last.pt"),
    "resume, no optimizers": ("resume", "last.pt", "no optimizers", "last.pt"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_damaged_checkpoint(name: str, trained: Path, tmp_path: Path) -> None:
    import shutil

    command, file, how, needle = CHECKPOINT_CASES[name]
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _damage(run / "checkpoints" / file, how)
    if command == "resume":  # a run that stopped midway, so that there is something to resume
        record = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**record, "status": "interrupted"}))
    before = files_below(run)
    args = {"eval": ["eval", str(run)], "predict": ["predict", str(run), str(tmp_path / "x.png")],
            "resume": ["resume", str(run), "trainer.max_steps=6"],
            "init_from": ["train", f"init_from={run}", "trainer.max_steps=2", "trainer.progress=false"]}[command]
    if command == "predict":  # a real image, so that only the checkpoint is wrong
        from PIL import Image

        Image.new("L", (8, 8), 128).save(tmp_path / "x.png")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = run_dlx(*args, cwd=cwd, timeout=120)
    assert done.returncode == EXIT_USER_ERROR, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert needle in lines[0], lines[0]
    if command != "resume":
        assert files_below(run) == before, "a refused load changed the run folder"
    assert not list(cwd.iterdir()), "a refused command left files behind"
