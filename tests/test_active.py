"""`dlx active`: MC-dropout active learning whose every round is a run of the shared training loop."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import events, run_dlx

DIGITS_TRAIN = 1293  # digits' training split after its 10% validation hold-out


def test_active_learning_rounds_run_through_the_loop_and_acquire_from_the_pool(tmp_path: Path) -> None:
    out = run_dlx("active", "model.dropout=0.3", "model.width=64", "trainer.device=cpu",
                  "--acquisition", "bald", "--rounds", "2", "--initial", "20", "--per-round", "10",
                  "--pool-subset", "200", "trainer.max_steps=12", "data.batch_size=10", "--mc-samples", "5",
                  "--weight-decay", "1", "--out", str(tmp_path / "active"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "active"
    report = json.loads((folder / "active.json").read_text())
    curves = {acq: by_seed["0"] for acq, by_seed in report["acquisitions"].items()}
    assert list(curves) == ["bald", "random"] and report["seeds"] == [0]
    for acq, c in curves.items():
        assert c["labels"] == [20, 30, 40] and len(c["test_acc"]) == 3
        labelled = set(c["initial"])
        assert len(labelled) == 20
        for new in c["acquired"]:
            # From the pool: training indices not labelled yet, no repeats.
            assert len(new) == len(set(new)) == 10 and all(0 <= i < DIGITS_TRAIN for i in new)
            assert not set(new) & labelled
            labelled |= set(new)
        # Each round is a run of the shared training loop on the labelled set only: 12 steps of batches of
        # 10 are 12 / (labels / 10) epochs; its weight decay is --weight-decay / labels.
        for n in c["labels"]:
            run = folder / "runs" / f"{acq}-seed0" / f"labels-{n}"
            s = json.loads((run / "summary.json").read_text())
            assert s["status"] == "completed" and s["step"] == 12 and s["epoch"] == pytest.approx(12 / (n // 10))
            assert "test/acc" in s["metrics"]["final"]
            cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
            assert cfg.optimizer.weight_decay == pytest.approx(1 / n) and cfg.trainer.max_steps == 12
            assert (run / "checkpoints" / "best.pt").is_file()
    assert curves["bald"]["initial"] == curves["random"]["initial"]
    assert curves["bald"]["test_acc"][0] == curves["random"]["test_acc"][0]  # same start, same weights
    assert set(curves["bald"]["acquired"][0]) != set(curves["random"]["acquired"][0])
    assert sum(report["summary"]["bald"]["acquired_per_class"]) == 20
    assert Image.open(folder / "active.png").width > 100
    assert {"active/bald/test_acc", "active/random/test_acc"} <= set(events(folder).Tags()["scalars"])
    assert "random" in out.stdout and "acquired per class" in out.stdout  # the printed table


def test_active_learning_composes_the_papers_preset() -> None:
    from dlx.config import check_config, compose

    cfg = compose(["experiment=active_mnist"])
    check_config(cfg)
    assert cfg.model._target_ == "dlx.models.bayesian_cnn.BayesianCNN" and cfg.model.dropout == 0.5
    assert cfg.model.dropout_conv == 0.25 and list(cfg.decay) == ["classifier.2.weight"]  # the paper's decay
    assert cfg.trainer.max_steps == 200 and cfg.data.batch_size == 128 and cfg.optimizer.lr == 1e-3
