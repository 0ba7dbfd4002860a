"""Whole-process wall time of `dlx train model=mlp data=mnist trainer.epochs=1` against Lightning + Hydra.

    make bench-lightning                              # installs lightning + torchmetrics, then runs this
    python benchmarks/bench_lightning.py [--mnist DIR] [--repeats 3] [--threads 1]

Both processes train the 784-64-128-64-10 BatchNorm MLP for one epoch of MNIST-format data (batch 128,
Adam lr 1e-3), validate, and test; both start from nothing (Python, imports, config composition) and end
when the process exits, which is what a user waits for. The Lightning side is benchmarks/lightning_mnist.py,
a program in the shape of lightning-hydra-template's default run (its docstring says what it does). The
target (issue 3) is dlx at most 1/3 of the Lightning process's time. Runs are interleaved; the best of
`--repeats` is kept for each. Without `--mnist`, the IDX files are made from digits as in bench_train.py.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DLX, machine, mnist_root, run_measured  # noqa: E402 - the sibling script

LIGHTNING_PROGRAM = Path(__file__).resolve().parent / "lightning_mnist.py"
DENSE_64_128_64 = "model.widths=[64,128,64]"  # dlx's mlp with SimpleDenseNet's hidden widths


def run_lightning(root: Path, work: Path) -> dict:
    out = work / f"lightning-{time.time_ns()}"
    cmd = [sys.executable, str(LIGHTNING_PROGRAM), f"+data_dir={root}", "+max_epochs=1", f"+out_dir={out}",
           f"hydra.run.dir={out}/hydra"]
    _, wall, rss, stdout = run_measured(cmd, cwd=work)
    acc = next(float(line.split()[1]) for line in stdout.splitlines() if line.startswith("TEST_ACC"))
    return {"process_s": wall, "rss_mib": rss, "test_acc": acc}


def run_dlx(root: Path, work: Path) -> dict:
    exp, name = work / "experiments", f"bench-mlp-{time.time_ns()}"
    cmd = [str(DLX), "train", "model=mlp", DENSE_64_128_64, "data=mnist", f"data.root={root}", "trainer.epochs=1",
           f"paths.experiments={exp}", f"name={name}"]
    _, wall, rss, _ = run_measured(cmd, cwd=work)
    summary = json.loads(next((exp / name).iterdir()).joinpath("summary.json").read_text())
    return {"process_s": wall, "rss_mib": rss, "test_acc": summary["metrics"]["final"].get("test/acc")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", help="folder with the MNIST IDX files (or their MNIST/raw/); default: made from digits")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; the fastest is reported")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both processes (default: torch's)")
    args = p.parse_args()
    missing = [m for m in ("lightning", "torchmetrics") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"bench_lightning: needs {' and '.join(missing)}: pip install lightning torchmetrics "
                 "(or: make bench-lightning)")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="dlx-bench-lightning-") as tmp:
        work = Path(tmp)
        root, source = mnist_root(args.mnist, work)
        runs: dict[str, list[dict]] = {"lightning": [], "dlx": []}
        for _ in range(args.repeats):
            runs["lightning"].append(run_lightning(root, work))
            runs["dlx"].append(run_dlx(root, work))
    best = {k: min(v, key=lambda r: r["process_s"]) for k, v in runs.items()}
    print(f"machine: {machine()}  load average: {os.getloadavg()}")
    print(f"data: {source}; best of {args.repeats} interleaved runs; threads: {args.threads or 'torch default'}")
    print(f"{'program':<10} {'process s':>10} {'peak RSS MiB':>13} {'test acc':>9}   all runs (s)")
    for k, r in best.items():
        all_runs = ", ".join(f"{x['process_s']:.2f}" for x in runs[k])
        print(f"{k:<10} {r['process_s']:>10.2f} {r['rss_mib']:>13} {r['test_acc']:>9.4f}   {all_runs}")
    ratio = best["dlx"]["process_s"] / best["lightning"]["process_s"]
    print(f"dlx/lightning wall time: {ratio:.2f}x (target <= 0.33)")


if __name__ == "__main__":
    main()
