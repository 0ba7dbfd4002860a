"""Sweeps end to end with the real `dlx` command: joblib workers, resumable reruns, a killed sweep,
an Optuna search, the SLURM preset, and `dlx compare` over seeds.

The plugins come with the dev extra; without them the tests that need one are skipped.
"""

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_dirs, run_dlx, summary

FAST = ["trainer.progress=false", "trainer.val_every=10"]


def sweep_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("experiments/*/multirun-*"))


def jobs(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "jobs.jsonl").read_text().splitlines() if line]


def snapshot(root: Path) -> dict[str, int]:
    """Every file under experiments/ with its modification time: what a rerun must leave alone."""
    return {str(p): p.stat().st_mtime_ns for p in (root / "experiments").rglob("*")
            if p.is_file() and p.name not in ("jobs.jsonl", "multirun.yaml", "train.log") and ".hydra" not in p.parts}


# ---- a 2 x 2 sweep (2 learning rates x 2 seeds) on 2 joblib workers, shared by the tests below ---------
@pytest.fixture(scope="module")
def lr_seed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    root = tmp_path_factory.mktemp("sweep")
    out = run_dlx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.01,0.002",
                  "seed=0,1", "trainer.max_steps=20", *FAST, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def test_joblib_sweep_gives_one_sweep_folder_with_every_job(lr_seed_sweep: Path) -> None:
    (sweep,) = sweep_dirs(lr_seed_sweep)  # the workers' own ${uid:} did not split the sweep
    runs = run_dirs(sweep)
    assert len(runs) == 4 and all(r.parent == sweep for r in runs)
    assert all(summary(r)["status"] == "completed" for r in runs)
    assert sorted(j["action"] for j in jobs(sweep)) == ["trained"] * 4
    assert {j["num"] for j in jobs(sweep)} == {0, 1, 2, 3}
    assert all(len((r / "config.sha").read_text().strip()) == 16 for r in runs)


def test_rerunning_a_finished_sweep_trains_nothing(lr_seed_sweep: Path) -> None:
    before = snapshot(lr_seed_sweep)
    # Same overrides (the launcher is not part of the sweep's identity): the same sweep folder continues.
    out = run_dlx("train", "-m", "optimizer.lr=0.01,0.002", "seed=0,1", "trainer.max_steps=20", *FAST,
                  cwd=lr_seed_sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = sweep_dirs(lr_seed_sweep)
    assert "continuing sweep" in out.stdout and "4 skipped" in out.stdout
    assert [j["action"] for j in jobs(sweep)] == ["skipped"] * 4
    assert snapshot(lr_seed_sweep) == before  # no new folder, no file touched


def test_compare_groups_seeds_with_mean_and_std(lr_seed_sweep: Path) -> None:
    (sweep,) = sweep_dirs(lr_seed_sweep)
    out = run_dlx("compare", str(sweep), "--metrics", "test/acc,val/acc", cwd=lr_seed_sweep)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "optimizer.lr=" in line]
    assert len(rows) == 2 and all("│ 2 │" in row and "±" in row for row in rows)
    assert "4 runs in 2 groups" in out.stdout

    table = list(csv.DictReader(io.StringIO(run_dlx("compare", str(sweep), "--csv", cwd=lr_seed_sweep).stdout)))
    assert sorted(row["optimizer.lr"] for row in table) == ["0.002", "0.01"]
    for row in table:
        accs = [summary(r)["metrics"]["final"]["test/acc"] for r in run_dirs(sweep)
                if f"optimizer.lr={row['optimizer.lr']}," in r.name]
        assert row["n"] == "2" and len(accs) == 2
        assert float(row["test/acc_mean"]) == pytest.approx(sum(accs) / 2, abs=1e-5)
        assert float(row["test/acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5, abs=1e-5)
    best_first = [row["optimizer.lr"] for row in table]
    means = [float(row["test/acc_mean"]) for row in table]
    assert means == sorted(means, reverse=True), best_first

    pivot = run_dlx("compare", str(sweep), "--by", "optimizer.lr", "--markdown", cwd=lr_seed_sweep)
    assert pivot.returncode == 0 and "| optimizer.lr=0.002 | optimizer.lr=0.01 |" in pivot.stdout
    assert pivot.stdout.count("(n=2)") == 2

    png = lr_seed_sweep / "acc.png"
    plot = run_dlx("compare", str(sweep), "--plot", "val/acc", "--out", str(png), cwd=lr_seed_sweep)
    assert plot.returncode == 0, plot.stderr
    from PIL import Image

    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300
        assert len(img.convert("RGB").getcolors(1 << 16)) > 10  # lines, band, text: not a blank canvas

    # A typo in a metric name is refused instead of ranking by nothing or printing an empty column.
    for option in ("--metric", "--metrics"):
        typo = run_dlx("compare", str(sweep), option, "test/accuracy", cwd=lr_seed_sweep)
        assert typo.returncode == 2 and typo.stderr.startswith(f"dlx: error: {option} test/accuracy: no completed run")


def test_compare_without_runs_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    out = run_dlx("compare", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("dlx: error: no completed runs")


# ---- a sweep killed midway -------------------------------------------------------------------------------
def test_sweeping_presets_names_the_sweep_after_all_of_them(tmp_path: Path) -> None:
    out = run_dlx("train", "-m", "experiment=ce_vs_mse,vanishing_gradient", "trainer.max_steps=1", "data.limit=200",
                  "trainer.activation_histograms=false", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (sweep,) = sweep_dirs(tmp_path)
    assert sweep.parent.name == "ce_vs_mse+vanishing_gradient"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # Each preset brings its own sweep (ce_vs_mse: loss, vanishing_gradient: model.residual): 4 jobs, not 2.
    assert [p.name for p in jobs] == ["0-experiment=ce_vs_mse,loss=cross_entropy", "1-experiment=ce_vs_mse,loss=mse",
                                      "2-experiment=vanishing_gradient,model.residual=False",
                                      "3-experiment=vanishing_gradient,model.residual=True"]
    # Each run keeps its preset's name (dlx runs, dlx compare and TensorBoard show it), only the folder is shared.
    names = [json.loads((p / "summary.json").read_text())["name"] for p in jobs]
    assert names == ["ce_vs_mse"] * 2 + ["vanishing_gradient"] * 2


def test_a_sweep_name_must_be_a_folder_name(tmp_path: Path) -> None:
    out = run_dlx("train", "-m", "seed=0,1", "sweep.name=a/b", *FAST, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (
        "dlx: error: sweep.name='a/b' is not allowed: must be a folder name under experiments/ (no '/')")


@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_killed_sweep_rerun_completes_only_the_missing_jobs(tmp_path: Path) -> None:
    args = ["train", "-m", "trainer.max_steps=20,60,30", *FAST]
    # SIGKILL (whole process, no handler runs) right after step 40: job 0 (20 steps) has completed,
    # job 1 (60 steps) has its last.pt from the validation at step 30, job 2 has not started.
    killed = run_dlx(*args, cwd=tmp_path, env={"DLX_FAULT_KILL_AT_STEP": "40"})
    assert killed.returncode == -9
    (sweep,) = sweep_dirs(tmp_path)
    first = {d.name.split("-")[0]: d for d in sweep.iterdir() if d.is_dir()}
    assert summary(first["0"])["status"] == "completed" and summary(first["1"])["status"] == "running"
    assert "2" not in first
    done_before = (first["0"] / "summary.json").stat().st_mtime_ns

    out = run_dlx(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sweep_dirs(tmp_path) == [sweep]
    outcome = {j["num"]: j for j in jobs(sweep)}
    assert outcome[0]["action"] == "skipped"
    assert outcome[1]["action"] == "resumed" and "from step 30" in outcome[1]["reason"]
    assert outcome[2]["action"] == "trained"
    assert (first["0"] / "summary.json").stat().st_mtime_ns == done_before
    runs = run_dirs(sweep)
    assert len(runs) == 3 and all(summary(r)["status"] == "completed" for r in runs)
    resumed = [json.loads(line)["step"] for line in (first["1"] / "metrics.jsonl").read_text().splitlines()]
    assert max(resumed) == 60 and resumed == sorted(resumed)  # continued from 30, nothing logged twice past it


def test_failed_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    # init_from a folder without checkpoints fails inside job 0 only; job 1 still trains.
    (tmp_path / "not_a_run").mkdir()
    out = run_dlx("train", "-m", "init_from=not_a_run,null", "trainer.max_steps=5", *FAST, cwd=tmp_path)
    assert out.returncode != 0
    (sweep,) = sweep_dirs(tmp_path)
    outcome = {j["num"]: j for j in jobs(sweep)}
    assert outcome[0]["action"] == "failed" and outcome[1]["action"] == "trained"
    assert "init_from" in outcome[0]["reason"] and "1 failed, 1 trained" in out.stdout


# ---- Optuna ----------------------------------------------------------------------------------------------
@pytest.mark.slow  # make test-all: the fast suite keeps under 10 minutes on 2 cores
def test_optuna_search_reports_its_best_trial(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    out = run_dlx("train", "hparams_search=mlp_digits", "hydra.sweeper.n_trials=3", "trainer.max_steps=20",
                  *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    records = jobs(sweep)
    assert len(records) == 3 and all(j["action"] == "trained" for j in records)
    values = [j["value"] for j in records]
    assert result["best_value"] == pytest.approx(max(values))  # the objective is each run's best val/acc
    best = next(j for j in records if j["value"] == max(values))
    assert summary(Path(best["dir"]))["metrics"]["best"]["val/acc"] == pytest.approx(result["best_value"])
    assert "optuna best trial" in out.stdout
    assert f"run folder: {Path(best['dir']).relative_to(tmp_path)}" in out.stdout
    assert {o.split("=")[0] for o in best["overrides"]} >= {"optimizer.lr", "model.width", "model.depth"}


# ---- SLURM ------------------------------------------------------------------------------------------------
def test_slurm_preset_composes_and_prints_its_submission_parameters(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = run_dlx("train", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                  "--cfg", "hydra", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    launcher = yaml.safe_load(out.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1 and launcher["timeout_min"] > 0
    assert launcher["max_num_timeout"] > 0 and launcher["setup"]
    assert "deprecated" not in out.stderr and not (tmp_path / "experiments").exists()


def test_sweep_settings_are_typed(tmp_path: Path) -> None:
    out = run_dlx("train", "-m", "seed=0,1", "sweep.skip_done=maybe", cwd=tmp_path)
    assert out.returncode == 2 and "sweep.skip_done" in out.stderr
