"""`dlx claims`: a preset's claim block is checked on real runs and the table row is written from them."""

import json
import math
import statistics
from pathlib import Path

import pytest

from dlx import claims
from dlx.errors import ConfigError
from tests.conftest import metrics_lines, run_dirs, run_dlx, summary

STEPS = ["trainer.max_steps=70", "trainer.val_every=70"]  # the preset's checks read train/acc at steps 30 and 70


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dlx claims ce_vs_mse` end to end, 2 seeds, cut to 70 steps; README with the table markers."""
    root = tmp_path_factory.mktemp("claims")
    (root / "README.md").write_text(f"intro\n{claims.BEGIN}\nold table\n{claims.END}\nafter\n")
    r = run_dlx("claims", "ce_vs_mse", "--seeds", "2", *STEPS, cwd=root, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def acc_at(run_dir: Path, step: int) -> float:
    return next(line["train/acc"] for line in metrics_lines(run_dir) if line["step"] == step and "train/acc" in line)


def test_claims_row_is_written_from_the_runs(measured: Path):
    runs = run_dirs(measured / "experiments" / "claims")
    assert len(runs) == 4 and all(summary(r)["status"] == "completed" for r in runs)  # 2 losses x 2 seeds
    by_loss = {"cross_entropy": [], "mse": []}
    for r in runs:
        by_loss[summary(r)["run_dir"].split("loss=")[1].split(",")[0]].append(r)
    stored = json.loads((measured / "docs" / "claims.json").read_text())["ce_vs_mse"]
    for check, step in zip(stored["checks"], (30, 70), strict=True):
        ce = [acc_at(r, step) for r in by_loss["cross_entropy"]]
        mse = [acc_at(r, step) for r in by_loss["mse"]]
        assert check["left"]["mean"] == pytest.approx(statistics.fmean(ce))
        assert check["left"]["std"] == pytest.approx(statistics.stdev(ce))
        assert check["right"]["mean"] == pytest.approx(statistics.fmean(mse))
        assert check["holds"] == (statistics.fmean(ce) > statistics.fmean(mse))
    assert stored["holds"] == all(c["holds"] for c in stored["checks"])
    assert stored["command"] == "dlx train -m experiment=ce_vs_mse seed=0,1 " + " ".join(STEPS)
    report = (measured / "docs" / "claims.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| **ce_vs_mse**"))
    assert f"{claims._num(stored['checks'][0]['left']['mean'])} ± " in row
    assert ("**holds**" if stored["holds"] else "**fails**") in row and stored["machine"] in row
    assert (measured / "docs" / "claims" / "ce_vs_mse.png").stat().st_size > 1000
    # Rows never measured say so instead of carrying numbers.
    assert "| **plain_vs_residual**:" in report and "| no measurement yet | not measured |" in report
    # README's table is the report's table, between the markers, the rest kept.
    readme = (measured / "README.md").read_text()
    table = report.split("\n\n")[2]
    assert readme.startswith("intro\n") and readme.endswith("after\n") and "old table" not in readme
    assert table in readme


def test_a_claim_that_does_not_hold_says_so(measured: Path):
    runs = next((measured / "experiments" / "claims").iterdir())
    reversed_claim = claims.parse_claim("x", {"text": "squared error learns faster", "checks": [
        {"metric": "train/acc", "step": 30, "left": {"loss": "mse"}, "op": ">", "right": {"loss": "cross_entropy"}},
    ]})
    forward = claims.measure(claims.load_claims(["ce_vs_mse"])[0], runs)
    result = claims.measure(reversed_claim, runs)
    assert result["holds"] != forward["checks"][0]["holds"]
    absolute = claims.parse_claim("x", {"text": "t", "checks": [
        {"metric": "test/acc", "left": {"loss": "mse"}, "op": "<", "right": 2.0, "times": 0.5}]})
    check = claims.measure(absolute, runs)["checks"][0]
    assert check["holds"] == (check["left"]["mean"] < 1.0) and math.isfinite(check["left"]["mean"])


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"text": "t", "checks": [{"metric": "m", "left": {"a": 1}, "op": "~", "right": 1}]}, "checks[0].op"),
        ({"text": "t", "checks": [{"metric": "m", "left": {}, "op": ">", "right": 1}]}, "checks[0].left"),
        ({"text": "t", "checks": [{"metric": "m", "left": {"a": 1}, "op": ">", "right": 1, "by": 2}]}, "checks[0]"),
        ({"text": "t", "checks": []}, "claim (p.yaml)"),
    ],
)
def test_bad_claim_blocks_name_the_key(block: dict, key: str):
    with pytest.raises(ConfigError) as err:
        claims.parse_claim("p", block)
    assert err.value.key.endswith(key), err.value.key


def test_every_claim_block_parses():
    names = [c.name for c in claims.load_claims([])]
    assert {"plain_vs_residual", "stochastic_depth", "fractal_droppath", "vanishing_gradient"} <= set(names)


def test_selectors_match_hydras_spellings_of_swept_values():
    assert claims._same("False", "false") and claims._same("0.50", "0.5") and claims._same("1e-4", "0.0001")
    assert not claims._same("plain", "Plain") and not claims._same("true", "0")


def test_readme_and_docs_tables_are_the_ones_rendered_from_claims_json():
    """The committed claims table is generated (`dlx claims --render`), never typed: rows follow docs/claims.json."""
    root = Path(__file__).resolve().parents[1]
    store = json.loads((root / "docs" / "claims.json").read_text())
    rows = [line for line in claims.table(store).splitlines() if line.startswith("|")]
    for path in (root / "README.md", root / "docs" / "claims.md"):
        committed = [line for line in path.read_text().split(claims.END)[0].splitlines() if line.startswith("| **")]
        assert committed == rows[2:], f"{path.name}: run `dlx claims --render`"


def test_a_log_plot_band_stays_above_zero_where_one_seed_is_far_above_the_others() -> None:
    from dlx.compare import mean_band

    values = [2.0, 0.001, 0.002]  # mean 0.67, std 1.15: mean - std < 0, which a log axis cannot draw
    mean, low, high = mean_band(values, log=True)
    assert low == 0.001 and high == pytest.approx(mean + statistics.stdev(values))
    assert mean_band(values, log=False)[1] == pytest.approx(mean - statistics.stdev(values))
    assert mean_band([0.5], log=True) == (0.5, 0.5, 0.5)


def test_the_commit_is_dirty_for_changed_code_not_for_the_reports_own_files(tmp_path: Path, monkeypatch):
    """`dlx claims` rewrites docs/claims.json and the README after each claim: later claims' runs see them changed,
    yet ran the committed code. summary.json names the changed files, and only others make the row '+dirty'."""
    import subprocess

    from dlx.tracking import run_metadata

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "docs").mkdir()
    for name in ("docs/claims.json", "README.md", "train.py"):
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    monkeypatch.chdir(tmp_path)
    clean = run_metadata()["git"]
    assert clean["changed"] == [] and not clean["dirty"]
    own = claims.report_files(Path("docs/claims.md"), Path("README.md"))
    assert claims.commit_label(clean, own) == clean["commit"][:10]

    for name in ("docs/claims.json", "README.md"):
        (tmp_path / name).write_text("v2\n")
    reports = run_metadata()["git"]
    assert reports["dirty"] and sorted(Path(f).name for f in reports["changed"]) == ["README.md", "claims.json"]
    assert claims.commit_label(reports, own) == clean["commit"][:10]  # only the report changed

    (tmp_path / "train.py").write_text("v2\n")
    code = run_metadata()["git"]
    assert claims.commit_label(code, own) == clean["commit"][:10] + "+dirty"
    assert claims.commit_label({"commit": "a" * 40, "dirty": True}, own) == "a" * 10 + "+dirty"  # older runs
    assert claims.commit_label({}, own) == "unknown"


def test_a_check_whose_means_differ_by_less_than_one_std_says_so():
    """A verdict is the order of two means; where they differ by less than one std over seeds (the larger side's,
    after `times` and `plus`), the row says so, and so does a claim that holds only that way."""
    block = {"text": "t", "checks": [
        {"metric": "m", "left": {"a": 1}, "op": ">", "right": {"a": 0}},
        {"metric": "m", "left": {"a": 1}, "op": ">", "right": {"a": 0}, "times": 10},
    ]}
    claim = claims.parse_claim("p", block)
    side = {"n": 3}

    def stored(first: tuple[float, float, float, float], second: tuple[float, float, float, float]) -> dict:
        checks = [{"text": claims.describe(c), "holds": lm > rm * c.times,
                   "left": {**side, "mean": lm, "std": ls}, "right": {**side, "mean": rm, "std": rs}}
                  for c, (lm, ls, rm, rs) in zip(claim.checks, (first, second), strict=True)]
        return {"sha": claim.sha, "command": "c", "checks": checks, "holds": all(c["holds"] for c in checks),
                "runs": 6, "minutes": 1, "machine": "m", "date": "d", "commit": "x"}

    clear = claims.row("p", claim, stored((0.9, 0.01, 0.5, 0.02), (0.9, 0.01, 0.05, 0.001)))
    assert "within one std" not in clear[2] and clear[3] == "**holds**"
    close = claims.row("p", claim, stored((0.52, 0.05, 0.5, 0.02), (0.9, 0.01, 0.085, 0.003)))
    # 0.52 vs 0.5: 0.02 apart, std 0.05; 0.9 vs 10 x 0.085: 0.05 apart, std 10 x 0.003 = 0.03 (not within)
    assert close[2].count("within one std") == 1 and close[3] == "**holds** (1 of 2 checks within one std)"
