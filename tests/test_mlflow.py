"""`logger=mlflow` against a real MLflow tracking server on loopback, read back through MLflow's client API.

One server per module (its start-up takes seconds): `mlflow server` with a SQLite backend and an artifact
folder in a temporary directory, on 127.0.0.1 and a free port, stopped at the end.
"""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DLX, metrics_lines, run_dirs, run_dlx, summary

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (make test installs it)")
from mlflow.tracking import MlflowClient  # noqa: E402

TINY = ["trainer.max_steps=20", "trainer.val_every=10", "trainer.log_every=5", "trainer.progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - the tracking URI
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    with open(root / "server.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def test_sweep_runs_land_in_one_experiment_with_params_metrics_artifacts_and_status(server: str, workdir: Path):
    done = run_dlx("train", "-m", "logger=mlflow", f"logger.tracking_uri={server}", "sweep.name=mlf_sweep",
                   "optimizer=sgd", "model.batch_norm=false", "optimizer.lr=0.05,1e30", "+logger.tags.team=vision",
                   "tags=[baseline]", *TINY, cwd=workdir)
    assert done.returncode == 4, done.stderr  # the second job diverges; the sweep goes on and reports it
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("mlf_sweep")
    assert experiment is not None
    runs = {r.data.params["optimizer.lr"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"0.05", "1e+30"}
    folders = {summary(d)["status"]: d for d in run_dirs(workdir / "experiments")}
    good, bad = runs["0.05"], runs["1e+30"]
    # The run folder and MLflow agree: status, id, params of the flattened config, tags.
    assert good.info.status == "FINISHED" and good.data.tags["dlx.status"] == "completed"
    assert bad.info.status == "FAILED" and bad.data.tags["dlx.status"] == "diverged"
    assert json.loads((folders["completed"] / "mlflow.json").read_text())["run_id"] == good.info.run_id
    assert good.data.tags["dlx.run_dir"] == str(folders["completed"].absolute())
    assert good.data.tags["team"] == "vision" and good.data.tags["baseline"] == "true"
    assert good.data.params["model"] == "dlx.models.mlp.MLP" and good.data.params["trainer.max_steps"] == "20"
    assert not any(k.startswith("logger") for k in good.data.params)
    # Metrics at the log steps, the same values as metrics.jsonl.
    local = [m for m in metrics_lines(folders["completed"]) if "train/loss" in m]
    history = client.get_metric_history(good.info.run_id, "train/loss")
    assert [(m.step, pytest.approx(m.value)) for m in history] == [(m["step"], m["train/loss"]) for m in local]
    assert [m.step for m in history] == [5, 10, 15, 20]
    assert good.data.metrics["test/acc"] == pytest.approx(summary(folders["completed"])["metrics"]["final"]["test/acc"])
    # Artifacts: summary.json as written at the end, the config and the tested weights.
    paths = {a.path for a in client.list_artifacts(good.info.run_id)}
    assert {"summary.json", "config.yaml", "train.log", "checkpoints"} <= paths
    assert [a.path for a in client.list_artifacts(good.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    got = Path(client.download_artifacts(good.info.run_id, "summary.json", str(workdir)))
    assert json.loads(got.read_text())["status"] == "completed"


def test_interrupted_run_is_killed_then_resume_continues_the_same_mlflow_run(server: str, workdir: Path):
    args = ["logger=mlflow", f"logger.tracking_uri={server}", "name=mlf_resume", "trainer.max_steps=100000",
            "trainer.ckpt_every=5", "trainer.val_every=1000", "trainer.log_every=5", "trainer.progress=false"]
    proc = subprocess.Popen([DLX, "train", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not list((workdir / "experiments").rglob("checkpoints/last.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3
    (run_dir,) = run_dirs(workdir / "experiments")
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(server)
    assert client.get_run(run_id).info.status == "KILLED"
    stopped = summary(run_dir)["step"]
    done = run_dlx("resume", str(run_dir), f"trainer.max_steps={stopped + 10}", cwd=workdir)
    assert done.returncode == 0, done.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no second MLflow run
    assert run.data.tags["dlx.resumed_with"] == f"trainer.max_steps={stopped + 10}"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] == stopped + 10  # every log step once, up to the end
    assert steps == [m["step"] for m in metrics_lines(run_dir) if "train/loss" in m]


def test_unreachable_server_is_one_line_before_training_or_local_only_on_request(workdir: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_dlx("train", "logger=mlflow", f"logger.tracking_uri={dead}", *TINY, cwd=workdir)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlx: error: MLflow tracking server") and dead in lines[0]
    assert "logger.on_unreachable=local" in lines[0]
    assert run_dirs(workdir / "experiments") == []  # nothing was trained, no half run left behind
    done = run_dlx("train", "logger=mlflow", f"logger.tracking_uri={dead}", "logger.on_unreachable=local", *TINY,
                   cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "dlx: warning: MLflow tracking server" in done.stderr and "logs locally only" in done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    assert summary(run_dir)["status"] == "completed" and not (run_dir / "mlflow.json").exists()


def test_bad_logger_setting_is_one_line(workdir: Path):
    done = run_dlx("train", "logger=mlflow", "logger.on_unreachable=maybe", *TINY, cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.strip() == ("dlx: error: logger.on_unreachable='maybe' is not allowed: must be one of "
                                   "fail, local")
