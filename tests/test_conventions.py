"""Hydra's conventions through the real `dlx` command: user config folders, nothing silently ignored, shell
completion, preset sweeps, and a console whose output survives logs."""

from pathlib import Path

import pytest

from tests.conftest import run_dirs, run_dlx, summary

TINY_MODEL = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """One hidden layer."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
'''


def user_config(root: Path) -> Path:
    """A user's project: mymodels.py and myconf/ with a model group option, a preset and a root config."""
    (root / "mymodels.py").write_text(TINY_MODEL)
    conf = root / "myconf"
    (conf / "model").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "model" / "tiny.yaml").write_text(
        "_target_: mymodels.Tiny\nin_features: ${data.in_features}\nnum_classes: ${data.num_classes}\nhidden: 8\n")
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny\nname: mine\nallowed_targets: [mymodels]\n"
        "trainer:\n  max_steps: 2\n  progress: false\n")
    (conf / "mine_root.yaml").write_text(
        "defaults:\n  - train\n  - override model: tiny\n  - _self_\nname: mine_root\nallowed_targets: [mymodels]\n"
        "trainer:\n  max_steps: 2\n  progress: false\n")
    return conf


def test_user_config_folder_trains_with_its_own_group_and_preset(workdir: Path) -> None:
    user_config(workdir)
    r = run_dlx("train", "--config-dir", "myconf", "experiment=mine", cwd=workdir)
    assert r.returncode == 0, r.stderr
    (run,) = run_dirs(workdir / "experiments" / "mine")
    assert summary(run)["status"] == "completed"
    assert "mymodels.Tiny" in (run / ".hydra" / "config.yaml").read_text()

    # The user's folder as the primary one with its own root config (-cp/-cn, '=' form): builds on dlx's train.
    r = run_dlx("train", "--config-path=myconf", "--config-name=mine_root", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert [summary(d)["status"] for d in run_dirs(workdir / "experiments" / "mine_root")] == ["completed"]


def test_user_config_folder_checks_know_the_users_options(workdir: Path) -> None:
    user_config(workdir)
    # The user's option is known to the checks; its target outside dlx needs allowed_targets, and the error says so.
    r = run_dlx("train", "-cd", "myconf", "model=tiny", cwd=workdir)
    assert r.returncode == 2
    assert "allowed_targets=[mymodels]" in r.stderr and "Traceback" not in r.stderr
    # hydra.searchpath finds the same folder; a typo among the user's options is suggested from them.
    r = run_dlx("train", "hydra.searchpath=[file://myconf]", "model=tinyy", cwd=workdir)
    assert r.returncode == 2 and "did you mean tiny?" in r.stderr, r.stderr
    r = run_dlx("train", "--config-dir", "nothere", cwd=workdir)
    assert r.returncode == 2 and "nothere" in r.stderr


@pytest.mark.parametrize(("override", "named"), [
    ("+trainer.epohcs=3", "trainer.epohcs"),  # a key no part of dlx reads: refused even with +
    ("+logger=csv", "logger"),  # not a group option: refused, not a silent default run
    ("+optimizer.foo=1", "optimizer.foo"),  # a partial target would only fail at its call
])
def test_nothing_is_silently_ignored(workdir: Path, override: str, named: str) -> None:
    r = run_dlx("train", override, "trainer.max_steps=1", cwd=workdir)
    assert r.returncode == 2, r.stdout
    assert f"{named}" in r.stderr and "Traceback" not in r.stderr
    assert not (workdir / "experiments").exists()


def test_typo_suggestions_are_ones_that_work(workdir: Path) -> None:
    r = run_dlx("train", "trainer.epohcs=3", cwd=workdir)
    assert r.returncode == 2
    assert "did you mean trainer.epochs?" in r.stderr and "+trainer.epohcs" not in r.stderr
    # A key the target really takes gets the + hint, and that command trains.
    r = run_dlx("train", "optimizer.amsgrad=true", cwd=workdir)
    assert r.returncode == 2 and "+optimizer.amsgrad=" in r.stderr, r.stderr
    r = run_dlx("train", "+optimizer.amsgrad=true", "trainer.max_steps=1", "trainer.progress=false", cwd=workdir)
    assert r.returncode == 0, r.stderr
