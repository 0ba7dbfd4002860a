"""Data-parallel training with real processes on CPU (gloo): `trainer.devices=2`, torchrun, resume.

Digits, an MLP without batch norm (so 2 ranks x 32 samples compute exactly the gradient of 1 x 64),
40 steps: the two-process run must land where the one-process run with the same global batch lands.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import metrics_lines, run_dirs, run_dlx, summary

COMMON = ["trainer.max_steps=40", "trainer.val_every=10", "trainer.device=cpu", "model.batch_norm=false",
          "trainer.progress=false"]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same training as 1 process x batch 64 and as 2 processes x batch 32 (same global batch)."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    out = run_dlx("train", "data.batch_size=64", *COMMON, cwd=one)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_dlx("train", "trainer.devices=2", "data.batch_size=32", *COMMON, cwd=two)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_one,), (run_two,) = run_dirs(one), run_dirs(two)  # exactly one folder each: ranks > 0 write nothing
    return run_one, run_two


def test_two_processes_train_like_one_with_the_same_global_batch(one_and_two: tuple[Path, Path]) -> None:
    one, two = one_and_two
    s1, s2 = summary(one), summary(two)
    assert s2["status"] == "completed" and s2["world_size"] == 2 and s2["step"] == 40
    f1, f2 = s1["metrics"]["final"], s2["metrics"]["final"]
    assert f2["test/acc"] == pytest.approx(f1["test/acc"], abs=0.01)
    assert f2["test/loss"] == pytest.approx(f1["test/loss"], rel=0.02)
    # Training metrics are all-reduced over the ranks before logging: the mean over the global batch.
    train1 = {m["step"]: m["train/loss"] for m in metrics_lines(one) if "train/loss" in m}
    train2 = {m["step"]: m["train/loss"] for m in metrics_lines(two) if "train/loss" in m}
    assert train1.keys() == train2.keys() and all(train2[k] == pytest.approx(train1[k], rel=0.02) for k in train1)


def test_only_rank_zero_writes_and_checkpoints_keep_plain_keys(one_and_two: tuple[Path, Path]) -> None:
    one, two = one_and_two
    steps = [(m["step"], tuple(sorted(k for k in m if "/" in k))) for m in metrics_lines(two)]
    assert len(steps) == len(set(steps))  # every record once: one writer
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    w1 = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["task"]
    w2 = torch.load(two / "checkpoints" / "last.pt", weights_only=True)["task"]
    assert list(w1) == list(w2)  # no "module." prefix: a DDP run's weights load anywhere
    assert all(torch.allclose(w1[k], w2[k], atol=5e-3) for k in w1)


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_killed_ddp_run_resumes_in_its_folder(tmp_path: Path, one_and_two: tuple[Path, Path]) -> None:
    args = ["train", "trainer.devices=2", "data.batch_size=32", *COMMON]
    killed = run_dlx(*args, cwd=tmp_path, env={"DLX_FAULT_KILL_AT_STEP": "30"})  # both ranks die after step 30
    assert killed.returncode != 0
    (run,) = run_dirs(tmp_path)
    assert summary(run)["status"] == "running" and summary(run)["step"] == 20

    out = run_dlx("resume", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert run_dirs(tmp_path) == [run]
    s = summary(run)
    assert s["status"] == "completed" and s["step"] == 40 and s["world_size"] == 2
    steps = [m["step"] for m in metrics_lines(run) if "val/acc" in m]
    assert steps == [10, 20, 30, 40]
    # No dropout or augmentation: the resumed run ends where the uninterrupted one did.
    reference = summary(one_and_two[1])["metrics"]["final"]
    assert s["metrics"]["final"]["test/acc"] == pytest.approx(reference["test/acc"], abs=1e-6)


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_torchrun_sweep_gives_one_folder_per_job(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "dlx.cli", "train", "-m",
           "optimizer.lr=0.01,0.003", "trainer.max_steps=20", "trainer.val_every=10", "trainer.progress=false"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = run_dirs(tmp_path)
    assert len(runs) == 2 and runs[0].parent == runs[1].parent  # one sweep folder, one run folder per job
    assert runs[0].name.startswith("0-optimizer.lr=0.01") and runs[1].name.startswith("1-optimizer.lr=0.003")
    assert all(summary(r)["status"] == "completed" and summary(r)["world_size"] == 2 for r in runs)
    jobs = [json.loads(line) for line in (runs[0].parent / "jobs.jsonl").read_text().splitlines()]
    assert [j["action"] for j in jobs] == ["trained", "trained"]


def test_devices_beyond_the_machine_is_one_line_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only refusal of a CUDA device index")
    out = run_dlx("train", "trainer.devices=2", "trainer.device=cuda:1", "trainer.progress=false", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("dlx: error: trainer.device")


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_each_rank_resumes_with_its_own_rng_state(tmp_path: Path) -> None:
    # Dropout draws from each rank's own generator (seed + rank): a resumed run is bitwise the same as an
    # uninterrupted one only if every rank gets its own RNG state back, not rank 0's.
    args = ["train", "trainer.devices=2", "data.batch_size=32", "model.dropout=0.3", "trainer.deterministic=true",
            *COMMON]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    assert run_dlx(*args, cwd=whole).returncode == 0
    killed = run_dlx(*args, cwd=parts, env={"DLX_FAULT_KILL_AT_STEP": "30"})
    assert killed.returncode != 0
    (run,) = run_dirs(parts)
    ranks = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    out = run_dlx("resume", str(run), cwd=parts)
    assert out.returncode == 0, out.stderr[-3000:]
    (reference,) = run_dirs(whole)
    w1 = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["task"]
    w2 = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


# ---- models and tasks beyond one optimizer and a fixed graph -----------------------------------------------
@pytest.mark.parametrize("args", [
    # A GAN steps two optimizers in turn on each batch: gradients are averaged over the ranks by hand.
    ["task=gan", "model=mlp_gan", "loss=gan_nonsat", "data.normalize=false", "task.judge_steps=20",
     "task.fid_samples=200"],
    # Stochastic depth and drop-path leave different weights without gradients on each step.
    ["model=resnet", "model.depth=8", "model.stochastic_depth=0.5"],
    ["model=fractalnet", "model.width=8", "model.columns=2", "model.blocks=2"],
    # Tasks that call encode/decode rather than forward, and one that trains its layers in phases.
    ["experiment=vae_mnist", "data=digits"],
    ["experiment=stacked_ae", "data=digits"],
], ids=["gan", "stochastic_depth", "drop_path", "vae", "stacked_ae"])
def test_two_processes_train_every_kind_of_task(args: list[str], tmp_path: Path) -> None:
    out = run_dlx("train", *args, "trainer.devices=2", "trainer.max_steps=6", "trainer.progress=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    s = summary(run)
    assert s["status"] == "completed" and s["world_size"] == 2 and s["step"] == 6


def _average_on_rank(rank: int, init_file: str) -> None:
    import torch.distributed as dist

    from dlx.distributed import average_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    a, b, c = (torch.nn.Parameter(torch.zeros(shape)) for shape in ((3,), (2, 2), (4,)))
    a.grad = torch.full((3,), float(rank + 1))  # rank 0: 1, rank 1: 2
    if rank == 1:
        b.grad = torch.full((2, 2), 4.0)  # rank 0 has none: it counts as zeros
    average_gradients([a, b, c])
    assert torch.equal(a.grad, torch.full((3,), 1.5)) and torch.equal(b.grad, torch.full((2, 2), 2.0))
    assert c.grad is None  # no rank has one: the optimizer skips it, as in one process
    dist.destroy_process_group()


def test_average_gradients_is_the_mean_over_ranks(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_average_on_rank, args=(str(tmp_path / "init"),), nprocs=2)
