"""`trainer.save_top_k`: the K best checkpoints by the monitored metric, pruned so that a kill never loses one."""

import json
import signal
from pathlib import Path

import torch

from tests.conftest import metrics_lines, run_dirs, run_dlx, summary

# val/loss falls at every validation of this run (steps 5, 10, ..., 30), so each one is a new best.
ARGS = ["trainer.max_steps=30", "trainer.val_every=5", "trainer.log_every=5", "trainer.save_top_k=2",
        "trainer.monitor=val/loss", "trainer.progress=false"]


def kept(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(("best-", ".best-")))


def test_kill_mid_save_loses_no_kept_checkpoint_and_resume_prunes_to_the_k_best(workdir: Path) -> None:
    # Saves per validation: best.pt, best-<step>.pt, last.pt. The 8th is best-15.pt, which prunes best-5.pt.
    done = run_dlx("train", *ARGS, cwd=workdir, env={"DLX_FAULT_KILL_IN_SAVE": "8"})
    assert done.returncode == -signal.SIGKILL, done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    files = kept(run_dir)
    assert files[1:] == ["best-10.pt", "best-5.pt"] and files[0].startswith(".best-15.pt.")  # + the torn temp file
    index = json.loads((run_dir / "checkpoints" / "top_k.json").read_text())
    assert [e["step"] for e in index["kept"]] == [10, 5]
    for name in ("best-5.pt", "best-10.pt"):  # whole and loadable, with the weights of their step
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert state["state"]["step"] == int(name[5:-3])
    done = run_dlx("resume", str(run_dir), cwd=workdir)
    assert done.returncode == 0, done.stderr
    losses = {m["step"]: m["val/loss"] for m in metrics_lines(run_dir) if "val/loss" in m}
    best_two = sorted(losses, key=losses.get)[:2]
    assert kept(run_dir) == sorted(f"best-{s}.pt" for s in best_two)  # the temp file and pruned ones are gone
    index = json.loads((run_dir / "checkpoints" / "top_k.json").read_text())
    assert [e["step"] for e in index["kept"]] == best_two and index["metric"] == "val/loss"
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["state"]["step"] == best_two[0] == summary(run_dir)["metrics"]["best"]["step"]
    # dlx eval can name any kept checkpoint.
    runner_up = f"best-{best_two[1]}.pt"
    done = run_dlx("eval", str(run_dir), "--checkpoint", runner_up, "--out", str(workdir / "ev"), cwd=workdir)
    assert done.returncode == 0, done.stderr
    report = json.loads((workdir / "ev" / "eval.json").read_text())
    assert report["step"] == best_two[1] and report["checkpoint"].endswith(runner_up)


def test_kept_checkpoints_are_ranked_by_the_metric_not_by_recency(workdir: Path) -> None:
    # monitor_mode=max on a falling val/loss: the first two validations are the "best" and stay.
    done = run_dlx("train", *ARGS, "trainer.max_steps=15", "trainer.monitor_mode=max", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(workdir / "experiments")
    assert kept(run_dir) == ["best-10.pt", "best-5.pt"]
    assert torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["state"]["step"] == 5
