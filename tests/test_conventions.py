"""Hydra's conventions through the real `dlx` command: user config folders, nothing silently ignored, shell
completion, preset sweeps, and a console whose output survives logs."""

import json
import os
import subprocess
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
    ("+optimizer=sgd", "choose another one with optimizer=sgd (without +)"),  # + adds; a group already has one
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
    r = run_dlx("train", "+optimizer.amsgrad=true", "--cfg", "job", cwd=workdir)  # --cfg runs the same checks
    assert r.returncode == 0 and "amsgrad: true" in r.stdout, r.stderr


def test_shell_completion_scripts_and_a_query_without_torch(workdir: Path) -> None:
    r = run_dlx("train", "--shell-completion", cwd=workdir)  # bare: one line saying what it needs
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "install=SHELL" in r.stderr
    scripts = {}
    for shell in ("bash", "zsh", "fish"):
        r = run_dlx("train", "--shell-completion", f"install={shell}", cwd=workdir)
        assert r.returncode == 0, r.stderr
        scripts[shell] = r.stdout
    assert "compdef _dlx dlx" in scripts["zsh"] and "complete -c dlx" in scripts["fish"]
    # The bash script, sourced in a real bash, completes through a query that must not need torch: a `torch`
    # that cannot be imported comes first on the path.
    fake = workdir / "notorch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('completion must not import torch')\n")
    user_config(workdir)
    (workdir / "complete.bash").write_text(scripts["bash"])
    dlx = run_dlx.__globals__["DLX"]
    probe = f'''source complete.bash
complete_at() {{ COMP_LINE="$1"; COMP_POINT=${{#1}}; COMP_WORDS=("$@"); COMP_WORDS=("${{COMP_WORDS[@]:1}}")
  COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); _dlx_completion; echo "${{COMPREPLY[*]}}"; }}
complete_at "{dlx} train model=res" {dlx} train model = res
complete_at "{dlx} train trainer.epo" {dlx} train trainer.epo
complete_at "{dlx} train -cd myconf model=ti" {dlx} train -cd myconf model = ti
complete_at "{dlx} tr" {dlx} tr
'''
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(["bash", "-c", probe], cwd=workdir, capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.splitlines() == ["resnet", "trainer.epochs=", "tiny", "train"], out.stdout + out.stderr



def test_version(workdir: Path) -> None:
    from dlx import __version__

    r = run_dlx("--version", cwd=workdir)
    assert r.returncode == 0 and r.stdout.strip() == f"dlx {__version__}"


def test_models_table_in_a_log_keeps_one_line_per_model_and_shows_progress(workdir: Path) -> None:
    r = run_dlx("models", "model=mlp,lstm", cwd=workdir, env={"COLUMNS": "40"})  # not a terminal, narrow
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and "lstm" in rows[1] and "no (1)" in rows[1]
    assert "(1) lstm: needs data.input_size, which Digits does not declare" in r.stdout.splitlines()
    assert "dlx models: measuring 1/2 mlp" in r.stderr


LONG_NAME = "a_run_name_long_enough_that_its_folder_would_wrap_in_a_narrow_log"


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two seeds of a short run, trained as in a SLURM log: not a terminal, 40 columns. Early stopping with
    monitor val/loss in mode max stops at the second validation (step 20), since the loss falls."""
    cwd = tmp_path_factory.mktemp("seeds")
    r = run_dlx("train", "-m", "seed=0,1", "trainer.max_steps=300", "trainer.val_every=10", "trainer.early_stop=1",
                "trainer.monitor=val/loss", "trainer.monitor_mode=max", "tags=[baseline,fast]",
                "trainer.print_config=false", f"name={LONG_NAME}", cwd=cwd, env={"COLUMNS": "40"})
    assert r.returncode == 0, r.stderr
    return cwd, r


def test_compare_by_seed_after_a_seed_sweep(seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = seed_sweep
    r = run_dlx("compare", f"experiments/{LONG_NAME}", "--by", "seed", "--csv", cwd=cwd)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split(",")
    assert header[1:] == ["seed=0", "seed=1"], header
    r = run_dlx("compare", f"experiments/{LONG_NAME}", "--plot", "val/loss", "--log", "--out", "loss.png", cwd=cwd)
    assert r.returncode == 0 and (cwd / "loss.png").is_file(), r.stderr


def test_a_log_axis_within_a_decade_is_labelled_with_values_not_exponents() -> None:
    from dlx.analysis.plot import Figure

    fig = Figure("loss", logy=True).line([0, 1, 2], [1.0, 0.6, 0.35])  # as dlx compare --plot --log draws it
    labels = [label for _, label in fig._yticks(*fig._limits()[2:])]
    assert len(labels) >= 3 and all(float(label) > 0 for label in labels), labels


def test_eval_reliability_bars_match_their_bins_and_mistakes_are_drawn(
        seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    from PIL import Image

    from dlx.analysis import uncertainty

    cwd, _ = seed_sweep
    run = run_dirs(cwd / "experiments" / LONG_NAME)[0]
    r = run_dlx("eval", str(run), "--bins", "5", cwd=cwd)
    assert r.returncode == 0, r.stderr
    result = json.loads((run / "eval-test.json").read_text())
    cal = result["calibration"]
    img = Image.open(run / "eval" / "reliability-test.png").convert("RGB")
    fig = uncertainty.reliability_figure(cal, "probe")  # the same layout: maps data to pixels
    checked = 0
    for lo, hi, n, acc, conf in zip(cal["lower"], cal["upper"], cal["count"], cal["accuracy"], cal["confidence"],
                                    strict=True):
        if not n or lo < 0.35:  # low bins sit under the legend
            continue
        x_outer = lo + 0.1 * (hi - lo)
        for y, blue in ((acc / 2, True), (acc + (1 - acc) / 2, False)):  # inside the accuracy bar, above it
            if abs(y - x_outer) < 0.03 or (not blue and 1 - acc < 0.04):
                continue  # the diagonal, or no room above the bar
            r_, g, b = img.getpixel(tuple(int(v) for v in fig.pixel(x_outer, y)))
            assert (b > r_ + 40) == blue, (lo, hi, acc, y, (r_, g, b))
        if abs(conf - acc) > 0.04:  # the gap, coloured by its direction
            r_, g, b = img.getpixel(tuple(int(v) for v in fig.pixel((lo + hi) / 2, (acc + conf) / 2)))
            assert (r_ > g) == (conf > acc), (lo, hi, acc, conf, (r_, g, b))
        checked += 1
    assert checked >= 1
    assert (run / "eval" / "confusion_matrix-test.png").is_file()
    assert (run / "eval" / "confident_mistakes-test.png").is_file()
    matrix = result["mistakes"]["confusion_matrix"]
    assert sum(map(sum, matrix)) == sum(cal["count"])  # every test image counted once
    wrong = result["mistakes"]["confident_mistakes"]
    assert all(m["predicted"] != m["true"] for m in wrong)
    assert [m["confidence"] for m in wrong] == sorted((m["confidence"] for m in wrong), reverse=True)


def test_a_run_in_a_log_keeps_its_path_whole_and_says_why_it_stopped(
        seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, r = seed_sweep
    runs = run_dirs(cwd / "experiments" / LONG_NAME)
    assert len(runs) == 2
    lines = r.stdout.splitlines()
    for run in runs:  # 40 columns, not a terminal: the folder is still one line to copy
        assert any(str(run.resolve()) in line for line in lines), (run, r.stdout)
        s = summary(run)
        assert (s["status"], s["stop_reason"], s["step"]) == ("completed", "early_stop", 20), s
        assert s["tags"] == ["baseline", "fast"]
    assert "early stop at step 20" in r.stdout and "did not improve for 1 validation" in r.stdout
    assert "tta_flip" not in r.stdout  # trainer.print_config=false: no config tree


def test_runs_filter_by_tag_and_show_the_stop_reason(seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = seed_sweep
    r = run_dlx("runs", "--tag", "baseline", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and {row["stop_reason"] for row in rows} == {"early_stop"}
    assert all(row["tags"] == ["baseline", "fast"] for row in rows)
    r = run_dlx("runs", "--tag", "nope", cwd=cwd)
    assert r.returncode == 2 and "baseline, fast" in r.stderr


def test_end_of_run_figures_and_tags_reach_tensorboard(seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    from PIL import Image
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from tests.conftest import events

    cwd, _ = seed_sweep
    run = run_dirs(cwd / "experiments" / LONG_NAME)[0]
    acc = events(run)
    assert {"confusion_matrix", "confident_mistakes"} <= set(acc.Tags()["images"])
    for name in ("confusion_matrix", "confident_mistakes"):
        png = Image.open(run / f"{name}.png")
        logged = acc.Images(name)[-1]
        assert (logged.width, logged.height) == png.size
    numbers = json.loads((run / "figures.json").read_text())
    test_size = sum(map(sum, numbers["confusion_matrix"]))
    correct = sum(numbers["confusion_matrix"][i][i] for i in range(len(numbers["classes"])))
    assert correct / test_size == pytest.approx(summary(run)["metrics"]["final"]["test/acc"], abs=1e-6)
    start = [HParamsPluginData.FromString(c) for c in acc.PluginTagToContent("hparams").values()]
    tags = [p.session_start_info.hparams["tags"].string_value for p in start if p.HasField("session_start_info")]
    assert tags == ["baseline,fast"]


def test_init_from_says_what_it_loaded_and_verbose_shows_debug(
        seed_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    cwd, _ = seed_sweep
    source = run_dirs(cwd / "experiments" / LONG_NAME)[0] / "checkpoints" / "best.pt"  # a file, not a folder
    r = run_dlx("train", "trainer.max_steps=1", "model.width=32", f"init_from='{source}'", "hydra.verbose=true",
                "trainer.progress=false", "trainer.print_config=false", "paths.experiments=finetuned", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "loaded 3 of 14 tensors, 11 fresh" in r.stdout
    assert "model.classifier.weight (checkpoint (10, 256), this model (10, 32))" in r.stdout
    assert "[dlx DEBUG]" in r.stderr


def test_flags_and_overrides_in_any_order(workdir: Path) -> None:
    # dlx appends overrides (the run name) to the command line: a flag with a value last must not break that.
    r = run_dlx("train", "model=lenet", "--cfg", "job", "-p", "model", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "_target_: dlx.models.lenet.LeNet" in r.stdout
