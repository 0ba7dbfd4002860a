"""`dlx models`: every conf/model config listed with its size at a data set's shape, and `--names`.

The table is read back from the real command's output (a wide terminal so rows do not wrap).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlx import models_table
from dlx.config import conf_dir
from dlx.errors import DlxError

DLX = str(Path(sys.executable).parent / "dlx")
MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


def table(*overrides: str) -> dict[str, dict[str, str]]:
    """Run `dlx models` and parse its rows: model -> {kind, params, flops, output, builds}."""
    env = {**os.environ, "COLUMNS": "400"}
    out = subprocess.run([DLX, "models", *overrides], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows: dict[str, dict[str, str]] = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[0]:
            rows[cells[0]] = dict(zip(("kind", "params", "flops", "output", "builds"), cells[1:], strict=True))
    return rows


def uses(model: str, declaration: str) -> bool:
    return f"data.{declaration}" in (conf_dir() / "model" / f"{model}.yaml").read_text()


def rows_in_process(*overrides: str) -> dict[str, dict[str, str]]:
    """The same rows from `dlx.models_table.rows` (no second interpreter start-up), formatted as printed."""
    rows, _ = models_table.rows(list(overrides))
    return {r.name: {"kind": r.kind, "params": "" if r.params is None else f"{r.params:,}",
                     "flops": models_table.human(r.flops), "output": r.output,
                     "builds": builds(r.problem)} for r in rows}


def builds(problem: str | None) -> str:
    return "yes" if problem is None else problem if problem.startswith("n/a") else f"no: {problem}"


@pytest.mark.parametrize("data, read", [("digits", table), ("cifar10", rows_in_process)])
def test_every_model_is_listed_with_its_parameter_count(data: str, read) -> None:  # noqa: ANN001 - a reader
    rows = read(f"data={data}")
    assert sorted(rows) == MODELS
    for name, row in rows.items():
        needs = next((k for k in ("input_size", "vocab_size") if uses(name, k)), None)
        if needs:  # sequence models need sequences, language models text: listed with the reason
            # (the printed table points to a note under it: "no (1)"; the rows carry the reason itself)
            assert row["builds"].startswith("no" if read is table else f"no: needs data.{needs}"), (name, row)
            continue
        assert row["builds"] in ("yes",) or row["builds"].startswith("n/a"), (name, row)
        assert int(row["params"].replace(",", "")) > 0, (name, row)
        assert re.fullmatch(r"[\d.]+ ?[KMG]?", row["flops"]), (name, row)
        if row["kind"] == "classify":
            assert row["output"].replace(" ", "") == "(1,10)", (name, row)  # the printed table drops spaces


def test_sizes_follow_the_data_shape_and_overrides() -> None:
    rows, described = models_table.rows(["data=cifar10", "model=resnet,plain,mlp", "model.depth=56"])
    by = {r.name: r for r in rows}
    assert "(1, 3, 32, 32)" in described
    # CIFAR ResNet-56 (He et al. 2015): about 0.85 M parameters; the plain net (option A) has exactly as many.
    assert 0.84e6 < by["resnet"].params < 0.86e6
    assert by["plain"].params == by["resnet"].params
    # Forward FLOPs of ResNet-56 at 32x32: about 125 M multiply-adds, i.e. about 250 M FLOPs.
    assert 2.3e8 < by["resnet"].flops < 2.7e8
    # model.depth applies to the MLP too (it has the key): 56 hidden layers of 256 units.
    assert by["mlp"].params > 56 * 256 * 256


def test_sequence_models_build_on_sequence_data() -> None:
    rows, described = models_table.rows(["data=parity", "data.length=16", "model=rnn,lstm,gru,resnet"])
    by = {r.name: r for r in rows}
    assert "(1, 16, 2)" in described
    for name in ("rnn", "lstm", "gru"):
        assert by[name].problem is None and by[name].output == "(1, 2)", by[name]
    # An LSTM has 4 gates where the RNN has 1: four times the recurrent weights.
    assert by["lstm"].params > 3 * by["rnn"].params
    assert by["resnet"].problem == "needs data.channels, which Parity does not declare"


def test_language_models_build_on_text() -> None:
    rows, described = models_table.rows(["data=text", "data.length=64", "model=char_rnn,char_lstm,gpt"])
    by = {r.name: r for r in rows}
    assert "(1, 64)" in described
    for name in ("char_rnn", "char_lstm", "gpt"):
        assert by[name].problem is None and by[name].output == "(1, 64, 98)", by[name]  # next-character logits
    assert by["char_lstm"].params > 3 * by["char_rnn"].params  # four gates for one


def test_names_lists_every_module_with_its_output_shape(capsys: pytest.CaptureFixture) -> None:
    from dlx.build import create
    from dlx.config import compose

    assert models_table.main(["model=mlp", "--names", "model.depth=3"]) == 0
    out = capsys.readouterr().out
    model = create(compose(["model=mlp", "model.depth=3"]).model, "model")
    listed = {line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")}
    assert listed == {name for name, _ in model.named_modules() if name}
    assert re.search(r"│ features\.1\.0\s+│ Linear\s+│\s+16,384 │ \(1, 256\)", out)


@pytest.mark.parametrize("args, needle", [
    (["model=resnt"], "model='resnt' is not allowed: choose one of"),
    (["model.dept=3"], "no listed model has the key 'dept'"),
    (["data=cifar11"], "data='cifar11' is not allowed"),
    (["model=resnet,mlp", "--names"], "--names lists one model at a time"),
])
def test_bad_overrides_are_user_errors(args: list[str], needle: str) -> None:
    with pytest.raises(DlxError, match=re.escape(needle)):
        models_table.main(args)
