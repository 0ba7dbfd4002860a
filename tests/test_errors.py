"""Every mistake a user can make is one line on stderr, exit code 2, no traceback, the culprit named."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from dlx.errors import EXIT_USER_ERROR
from tests.conftest import run_dirs, run_dlx

# (arguments of `dlx train`, text the one-line message must contain)
BAD_TRAIN = [
    # typos in keys and choices
    (["trainer.epohcs=3"], "trainer.epochs"),
    (["model.dpeth=3"], "model.depth"),
    (["foo=bar"], "foo"),
    (["model=resnett"], "resnet"),
    (["optimizer=sgdd"], "sgd"),
    (["data=mnistt"], "mnist"),
    (["scheduler=cosin"], "cosine"),
    (["init=xavier"], "xavier_normal"),
    (["task=clasify"], "classify"),
    (["trainer=fast"], "trainer"),
    (["+model.foo=1"], "model.foo"),
    # wrong types
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["seed=1.5"], "seed"),
    (["trainer.deterministic=maybe"], "trainer.deterministic"),
    (["trainer.grad_clip=big"], "trainer.grad_clip"),
    (["optimizer.lr=fast"], "optimizer.lr"),
    (["data.batch_size=many"], "data.batch_size"),
    # group arguments, typed by their targets' signatures (dlx.arguments)
    (["model.width=abc"], "model.width='abc' is not allowed: must be an integer"),
    (["model.dropout=abc"], "model.dropout='abc' is not allowed: must be a number"),
    (["model.batch_norm=3"], "model.batch_norm=3 is not allowed: must be true or false"),
    (["model.widths=[64,wide]"], "model.widths"),
    (["data.flip=yes"], "data.flip"),
    (["data=parity", "data.length=long"], "data.length='long'"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is not allowed: must be a list of 2 numbers"),
    (["scheduler=cosine", "scheduler.warmup_steps=soon"], "scheduler.warmup_steps"),
    # out of range / not allowed
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["data.batch_size=0"], "data.batch_size"),
    (["trainer.epochs=0"], "trainer.epochs"),
    (["trainer.max_steps=-5"], "trainer.max_steps"),
    (["trainer.precision=fp8"], "trainer.precision"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.device=cuda"], "trainer.device"),
    (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite"),
    (["trainer.ema=1.5"], "trainer.ema"),
    (["trainer.accumulate=0"], "trainer.accumulate"),
    (["trainer.monitor_mode=up"], "trainer.monitor_mode"),
    (["trainer.monitor=val/nope", "trainer.max_steps=2"], "trainer.monitor"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["model.dropout=1.0"], "model.dropout"),
    (["optimizer=sgd", "optimizer.momentum=2"], "optimizer.momentum"),
    (["loss.label_smoothing=-0.1"], "loss.label_smoothing"),
    (["model.activation=swish"], "model.activation"),
    (["init.scheme=orthogonal"], "init.scheme"),
    (["data.channels=3"], "data.channels"),
    (["model.depth=21", "model=resnet"], "model.depth"),
    # disallowed targets: nothing outside dlx., torch., torchvision. (+ allowed_targets) is instantiated
    (["model._target_=os.system"], "model._target_"),
    (["optimizer._target_=builtins.eval"], "optimizer._target_"),
    (["loss._target_=subprocess.run"], "loss._target_"),
    # syntax and missing data
    (["trainer.epochs=[1"], "override"),
    (["data=mnist"], "data.download=true"),
    (["data=cifar10"], "data.download=true"),
    (["init_from=/nonexistent/run"], "init_from"),
    (["freeze=[nosuchlayer]"], "freeze"),
]


def assert_one_line_error(done, needle: str) -> None:  # noqa: ANN001 - CompletedProcess
    assert done.returncode == EXIT_USER_ERROR, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dlx: error: ") and "Traceback" not in done.stderr
    assert needle in lines[0], lines[0]


def test_at_least_thirty_bad_inputs_are_covered() -> None:
    assert len(BAD_TRAIN) >= 30


@pytest.mark.parametrize(("args", "needle"), BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input(args: list[str], needle: str, workdir: Path) -> None:
    done = run_dlx("train", *args, "trainer.progress=false", cwd=workdir)
    assert_one_line_error(done, needle)
    if "monitor" not in needle:  # the monitor is known to be wrong only at the first validation
        assert not run_dirs(workdir / "experiments"), "a run that failed before training leaves no folder"


def test_malformed_yaml_in_a_user_config_folder(workdir: Path) -> None:
    (workdir / "mine" / "experiment").mkdir(parents=True)
    (workdir / "mine" / "experiment" / "broken.yaml").write_text("trainer:\n  epochs: [1\n  bad: : :\n")
    done = run_dlx("train", f"hydra.searchpath=[file://{workdir / 'mine'}]", "+experiment=broken", cwd=workdir)
    assert_one_line_error(done, "broken")


def test_allowed_targets_lets_a_user_trust_a_prefix(workdir: Path) -> None:
    done = run_dlx("train", "loss._target_=mylosses.Focal", "allowed_targets=[mylosses]", cwd=workdir)
    # Now allowed, so it gets as far as importing it, which fails: still one line naming the key.
    assert_one_line_error(done, "loss")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("trained")
    done = run_dlx("train", "trainer.max_steps=3", "trainer.progress=false", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return run_dirs(cwd / "experiments")[0]


class Exploit:
    """A pickle that would run code on load (the CVE-2025-32434 class of checkpoint)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pwned"))


def _bad_checkpoints(run_dir: Path, marker: Path) -> dict[str, bytes]:
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": b"not a checkpoint at all" * 10,
        "pickle": pickle.dumps({"task": Exploit(marker)}),
        "torch_pickle": b"",  # filled below: torch.save of an arbitrary object
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "pickle", "torch_pickle", "other_model"])
def test_bad_checkpoints_are_refused_and_never_executed(kind: str, trained: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    marker = tmp_path / "pwned.txt"
    last = run_dir / "checkpoints" / "last.pt"
    if kind == "torch_pickle":
        torch.save({"task": Exploit(marker)}, last)
    elif kind == "other_model":
        # A complete, valid checkpoint, but of another model: resume must refuse it, not crash.
        state = torch.load(last, weights_only=True)
        state["task"] = {"model.features.1.weight": torch.zeros(3, 3)}
        torch.save(state, last)
    else:
        last.write_bytes(_bad_checkpoints(run_dir, marker)[kind])
    done = run_dlx("resume", str(run_dir), "trainer.max_steps=5", cwd=tmp_path)  # a completed run is not loaded
    assert_one_line_error(done, "checkpoint" if kind != "other_model" else "")
    assert str(last) in done.stderr or kind == "other_model"
    assert not marker.exists(), "nothing from a checkpoint may ever run"


def test_init_from_a_run_with_a_broken_checkpoint(trained: Path, tmp_path: Path, workdir: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    for name in ("best.pt", "last.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"\x00" * 100)
    done = run_dlx("train", f"init_from={run_dir}", "trainer.max_steps=2", cwd=workdir)
    assert_one_line_error(done, "best.pt")


@pytest.mark.parametrize("args", [[], ["--sort", "test/acc"], ["/no/such/folder"]])
def test_runs_without_an_experiments_folder_fails_cleanly(args: list[str], workdir: Path) -> None:
    assert_one_line_error(run_dlx("runs", *args, cwd=workdir), "does not exist")


def test_runs_sorts_best_first_and_refuses_bad_options(workdir: Path) -> None:
    for name, acc, loss in (("a", 0.5, 0.9), ("b", 0.9, 0.2), ("c", 0.7, 0.4)):
        run = workdir / "experiments" / name / "2026-01-01_00-00-00-000000"
        run.mkdir(parents=True)
        metrics = {"final": {"test/acc": acc, "test/loss": loss}}
        (run / "summary.json").write_text(json.dumps({"name": name, "status": "completed", "metrics": metrics}))

    def order(*args: str) -> list[str]:
        done = run_dlx("runs", "--json", *args, cwd=workdir)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["name"] for line in done.stdout.splitlines()]

    assert order("--sort", "test/acc") == ["b", "c", "a"]  # highest accuracy first
    assert order("--sort", "test/loss") == ["b", "c", "a"]  # lowest loss first
    assert order("--sort", "test/acc", "--limit", "2") == ["b", "c"]
    assert_one_line_error(run_dlx("runs", "--sort", "test/acc2", cwd=workdir), "--sort test/acc2: no run has it")
    assert_one_line_error(run_dlx("runs", "--limit", "-1", cwd=workdir), "--limit -1")


def test_unknown_command_and_bad_resume_folder(workdir: Path) -> None:
    assert_one_line_error(run_dlx("trian", cwd=workdir), "trian")
    assert_one_line_error(run_dlx("resume", str(workdir), cwd=workdir), "not a dlx run folder")


def test_debug_env_shows_the_traceback(workdir: Path) -> None:
    done = run_dlx("train", "data=mnist", cwd=workdir, env={"DLX_DEBUG": "1"})
    assert done.returncode == EXIT_USER_ERROR and "Traceback" in done.stderr
