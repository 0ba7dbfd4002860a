"""`trainer.monitor` on a metric that only a task's `on_validation_end` returns (lm's val/ppl, a GAN judge's scores):
accepted before training because the task declares it (TaskSpec.end_metrics), and it picks best.pt."""

import math
from pathlib import Path

from tests.conftest import metrics_lines, run_dirs, run_dlx, summary

LM = ["task=lm", "data=text", "model=char_gru", "data.length=16", "data.batch_size=16", "data.limit=200",
      "data.val_fraction=0.05", "data.test_fraction=0.05", "trainer.max_steps=6", "trainer.val_every=2",
      "trainer.log_every=2", "trainer.progress=false", "task.sample_length=0", "optimizer.lr=3e-2"]
GAN = ["experiment=dcgan_mnist", "data=digits", "data.limit=256", "trainer.max_steps=4", "trainer.val_every=2",
       "task.judge_steps=5", "task.fid_samples=32", "model.width=8", "data.batch_size=32", "trainer.progress=false"]
ENV = {"OMP_NUM_THREADS": "1"}


def best_by(run: Path, key: str, mode: str) -> tuple[int, float]:
    vals = [(m["step"], m[key]) for m in metrics_lines(run) if key in m]
    return (min if mode == "min" else max)(vals, key=lambda sv: sv[1])  # the first of equal values, as the loop


def test_lm_monitor_on_perplexity_trains_and_picks_best_by_it(workdir: Path):
    done = run_dlx("train", *LM, "trainer.monitor=val/ppl", "name=ppl", cwd=workdir, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir / "experiments")
    s = summary(run)
    assert s["monitor"]["metric"] == "val/ppl"
    step, value = best_by(run, "val/ppl", "min")
    assert len([m for m in metrics_lines(run) if "val/ppl" in m]) == 3
    assert s["metrics"]["best"] == {"step": step, "val/ppl": value}
    # A monitor on a validation_step metric is checked on one validation batch; lm sums its NLL over the split
    # until on_validation_end, so that probe must not leave its batch in the first validation's perplexity.
    probed = run_dlx("train", *LM, "trainer.max_steps=2", "name=probed", "trainer.monitor=val/acc",
                     "trainer.monitor_mode=max", cwd=workdir, env=ENV)
    assert probed.returncode == 0, probed.stderr[-2000:]
    (other,) = run_dirs(workdir / "experiments" / "probed")
    first = [next(m for m in metrics_lines(r) if "val/ppl" in m) for r in (run, other)]
    assert first[0]["step"] == first[1]["step"] == 2
    assert math.isclose(first[0]["val/ppl"], math.exp(first[0]["val/nll"]), rel_tol=1e-5)
    assert first[1]["val/ppl"] == first[0]["val/ppl"]


def test_gan_monitor_on_a_judge_score(workdir: Path):
    done = run_dlx("train", *GAN, "trainer.monitor=val/judge_conf", "trainer.monitor_mode=max", cwd=workdir, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(workdir / "experiments")
    s = summary(run)
    step, value = best_by(run, "val/judge_conf", "max")
    assert s["monitor"]["metric"] == "val/judge_conf"
    assert s["metrics"]["best"] == {"step": step, "val/judge_conf": value}


def test_a_monitor_the_task_does_not_log_is_refused_before_training(workdir: Path):
    """Without a judge (fid_samples=0) a GAN declares no judge scores: val/fid is refused in one line."""
    done = run_dlx("train", *GAN, "task.fid_samples=0", "trainer.monitor=val/fid", cwd=workdir, env=ENV)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()
    assert len(line) == 1 and "trainer.monitor" in line[0] and "val/g_loss" in line[0], done.stderr
    assert "judge_conf" not in line[0]
    done = run_dlx("train", *LM, "trainer.monitor=val/pp", cwd=workdir, env=ENV)
    assert done.returncode == 2 and "trainer.monitor" in done.stderr and "val/ppl" in done.stderr, done.stderr
    assert not list((workdir / "experiments").rglob("metrics.jsonl"))
