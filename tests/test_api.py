"""The Python API end to end, as a notebook would use it, and `dlx export` of the run it trained."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_dlx

NOTEBOOK = textwrap.dedent('''
    import json, sys
    import dlx
    assert "torch" not in sys.modules, "import dlx loaded torch"

    # A user error raises instead of exiting.
    try:
        dlx.train("model=resnett")
        raise AssertionError("no error")
    except dlx.DlxError as e:
        bad = str(e)

    result = dlx.train(["model=lenet", "trainer.max_steps=20", "trainer.val_every=10", "trainer.log_every=5",
                        "trainer.progress=false"])
    again = dlx.train("trainer.max_steps=5 trainer.progress=false 'name=second run'")  # a second call

    run = dlx.load_run(result.run_dir, device="cpu")
    x, y = next(iter(run.data.batches("test")))[:2]
    acc = float((run.model(x).argmax(-1) == y).float().mean())
    print(json.dumps({"error": bad, "status": result.status, "run_dir": str(result.run_dir),
                      "metrics": result.metrics, "best": result.best, "exit_code": result.exit_code,
                      "second": [again.status, again.run_dir.parent.name], "training": run.model.training,
                      "device": str(run.device), "history_steps": [h["step"] for h in run.history],
                      "model": type(run.model).__name__, "acc": acc, "n": len(y)}))
''')


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cwd = tmp_path_factory.mktemp("notebook")
    (cwd / "notebook.py").write_text(NOTEBOOK)
    done = subprocess.run([sys.executable, "notebook.py"], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"cwd": cwd}


def test_notebook_trains_loads_and_predicts(notebook: dict) -> None:
    assert notebook["error"].startswith("model='resnett' is not allowed")
    assert notebook["status"] == "completed" and notebook["exit_code"] == 0
    summary = json.loads((Path(notebook["run_dir"]) / "summary.json").read_text())
    assert notebook["metrics"] == summary["metrics"]["final"] and "test/acc" in notebook["metrics"]
    assert notebook["best"]["step"] in (10, 20)
    assert notebook["second"] == ["completed", "second run"]
    assert notebook["model"] == "LeNet" and notebook["training"] is False and notebook["device"] == "cpu"
    assert notebook["history_steps"][:4] == [5, 10, 10, 15]  # train rows at log steps, val rows at validations
    assert 0 < notebook["acc"] <= 1


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_runs_with_a_dynamic_batch_and_matches_pytorch(notebook: dict, fmt: str) -> None:
    import torch

    import dlx

    run_dir, cwd = Path(notebook["run_dir"]), notebook["cwd"]
    out = cwd / f"model.{fmt}"
    done = run_dlx("export", str(run_dir), "--format", fmt, "--out", str(out), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"{out}  ({fmt}, input ['batch', 1, 8, 8]")
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert record["check"]["max_abs_diff"] <= record["check"]["atol"] + 1e-3 and record["check"]["samples"] == 7
    run = dlx.load_run(run_dir, device="cpu")
    x = next(iter(run.data.batches("test")))[0][:13]  # a batch size the export never saw
    with torch.no_grad():
        expected = run.model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    else:
        got = torch.export.load(str(out)).module()(x).detach().numpy()
    assert got.shape == expected.shape == (13, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_that_is_not_there_is_one_line_naming_those_that_are(notebook: dict) -> None:
    run_dir, cwd = notebook["run_dir"], notebook["cwd"]
    done = run_dlx("export", run_dir, "--format", "pt2", "--checkpoint", "best-3.pt", cwd=cwd)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--checkpoint best-3.pt: no such file" in done.stderr and "best.pt, last.pt" in done.stderr
