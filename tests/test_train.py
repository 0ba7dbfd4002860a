"""End to end: the real `dlx train` on real data (digits, and MNIST/CIFAR files in their real formats)."""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from tests.conftest import events, metrics_lines, run_dirs, run_dlx, summary

RUN_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-[0-9a-f]{6}$")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dlx train` with every default (MLP on digits), as `make train` runs it."""
    cwd = tmp_path_factory.mktemp("default")
    done = run_dlx("train", "trainer.progress=false", cwd=cwd)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(cwd / "experiments")
    return run_dir


def test_default_run_learns_digits(default_run: Path) -> None:
    s = summary(default_run)
    assert s["status"] == "completed"
    assert s["metrics"]["final"]["test/acc"] >= 0.95
    assert s["params"] == sum(p.numel() for p in torch.nn.Linear(1, 1).parameters()) * 0 + s["trainable_params"]
    assert s["flops"] > 0 and s["device"] == "cpu" and s["command"].startswith("dlx train")
    assert s["metrics"]["best"]["val/acc"] == max(m["val/acc"] for m in metrics_lines(default_run) if "val/acc" in m)


def test_run_folder_layout(default_run: Path) -> None:
    assert default_run.parent.name == "classify-mlp-digits"
    assert RUN_DIR.match(default_run.name)
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl", "train.log",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (default_run / name).is_file(), name
    assert list(default_run.glob("events.out.tfevents.*"))
    assert "test/acc" in (default_run / "train.log").read_text()


def test_metrics_jsonl_has_one_record_per_logged_step(default_run: Path) -> None:
    lines = metrics_lines(default_run)
    train = [m["step"] for m in lines if "train/loss" in m]
    assert train == sorted(set(train)) and train[-1] == summary(default_run)["step"]
    assert any("val/acc" in m for m in lines) and any("test/acc" in m for m in lines)


def test_checkpoints_load_with_weights_only(default_run: Path) -> None:
    last = torch.load(default_run / "checkpoints/last.pt", weights_only=True)
    assert {"task", "optimizers", "schedulers", "rng", "state", "config"} <= set(last)
    assert last["state"]["step"] == 200 and last["config"]["model"]["_target_"] == "dlx.models.mlp.MLP"
    best = torch.load(default_run / "checkpoints/best.pt", weights_only=True)
    assert best["metrics"]["val/acc"] == summary(default_run)["metrics"]["best"]["val/acc"]


def test_tensorboard_events_hold_scalars_and_hparams(default_run: Path) -> None:
    acc = events(default_run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "lr"} <= scalars
    val_acc = acc.Scalars("val/acc")
    assert len(val_acc) == 10 and val_acc[-1].value > 0.9
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams and "_hparams_/session_end_info" in hparams
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["optimizer.lr"].number_value == pytest.approx(0.001)
    assert start.session_start_info.hparams["model"].string_value == "dlx.models.mlp.MLP"


def test_sweep_gives_one_folder_per_job_and_runs_lists_them(workdir: Path) -> None:
    done = run_dlx("train", "-m", "optimizer.lr=0.01,0.003", "trainer.max_steps=6", "trainer.progress=false",
                   cwd=workdir)
    assert done.returncode == 0, done.stderr
    dirs = run_dirs(workdir / "experiments")
    assert len(dirs) == 2 and dirs[0].parent == dirs[1].parent
    assert dirs[0].parent.name.startswith("multirun-")
    assert {d.name for d in dirs} == {"0-optimizer.lr=0.01", "1-optimizer.lr=0.003"}
    listed = run_dlx("runs", "--json", cwd=workdir)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    table = run_dlx("runs", cwd=workdir)
    assert table.returncode == 0 and table.stdout.count("completed") == 2


def test_two_runs_started_together_get_two_folders(workdir: Path) -> None:
    args = ["trainer.max_steps=2", "trainer.progress=false"]
    from tests.conftest import DLX

    procs = [subprocess.Popen([DLX, "train", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert len(run_dirs(workdir / "experiments")) == 2


def test_mnist_and_cifar_files_train_end_to_end(workdir: Path) -> None:
    from tests.data_files import write_cifar10, write_mnist

    write_mnist(workdir / "data", n_train=96, n_test=32)
    write_cifar10(workdir / "data", n_train=96, n_test=32)
    # data.verify=false: the test's files are in the official format but not the official bytes (md5).
    for data, model, extra in (("mnist", "lenet", []), ("cifar10", "resnet", ["data.verify=false"])):
        done = run_dlx("train", f"data={data}", f"model={model}", "trainer.max_steps=3", "data.batch_size=16",
                       "trainer.progress=false", *extra, cwd=workdir)
        assert done.returncode == 0, done.stderr
    names = sorted(d.parent.name for d in run_dirs(workdir / "experiments"))
    assert names == ["classify-lenet-mnist", "classify-resnet-cifar10"]


def test_help_lists_groups_and_choices(workdir: Path) -> None:
    done = run_dlx("train", "--help", cwd=workdir)
    assert done.returncode == 0
    for text in ("model:", "mlp", "resnet", "optimizer:", "sgd", "scheduler:", "cosine", "trainer:"):
        assert text in done.stdout, text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_server_serves_runs_scalars_and_hparams(workdir: Path) -> None:
    done = run_dlx("train", "-m", "optimizer.lr=0.01,0.003", "trainer.max_steps=8", "trainer.val_every=4",
                   "trainer.progress=false", cwd=workdir)
    assert done.returncode == 0, done.stderr
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", "experiments", "--host", "127.0.0.1",
         "--port", str(port), "--load_fast=false"], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        runs: list = []
        for _ in range(120):  # the server loads event files in the background
            try:
                runs = _get(f"{base}/data/runs")
                if len(runs) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert len(runs) == 2, runs
        run = next(r for r in runs if r.endswith("0-optimizer.lr=0.01"))
        points = _get(f"{base}/data/plugin/scalars/scalars?run={urllib.parse.quote(run)}&tag=val/acc")
        assert len(points) == 2 and 0 <= points[-1][2] <= 1
        experiment = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert "optimizer.lr" in names
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert "val/acc" in metric_tags and "test/acc" in metric_tags
        groups = _get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 10})
        assert groups["totalSize"] == 2
        values = [v for g in groups["sessionGroups"] for v in g["metricValues"]]
        assert any(v["name"]["tag"] == "test/acc" for v in values)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    """`pip install .` (a regular wheel) must carry conf/ inside the package."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("dlx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"dlx/conf/{p.relative_to(root / 'conf')}" for p in (root / "conf").rglob("*.yaml")}
    modules = {str(p.relative_to(root)) for folder in ("dlx", "hydra_plugins") for p in (root / folder).rglob("*.py")}
    assert "dlx/conf/train.yaml" in configs and "dlx/cli.py" in modules
    assert configs <= names, sorted(configs - names)
    assert modules <= names, sorted(modules - names)
