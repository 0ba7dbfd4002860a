"""Training speed of `dlx train` against the loops people write by hand (issue 3), in one report.

    python benchmarks/bench_train.py                       # MNIST-format files made from digits
    python benchmarks/bench_train.py --mnist ~/data        # real MNIST: <DIR>/MNIST/raw/ or the IDX files in DIR
    python benchmarks/bench_train.py --repeats 3 --json out.json

For each model (the issue's 784-64-128-64-10 BatchNorm MLP, LeNet-5), three loops train one epoch,
batch 128, Adam, fp32, no augmentation, each in its own process:
  tutorial   torchvision's MNIST data set with per-sample ToTensor + Normalize and a DataLoader
             (the PyTorch tutorial's loop);
  preloaded  the whole training set as one normalized float tensor, batches by `randperm` indexing
             (the hand-tuned loop);
  dlx        the real `dlx train` command (a subprocess of the console script).
Every loop is timed the same way: wall-clock time stamps after step `--warmup` and after the last
step (dlx writes them into metrics.jsonl at its log steps), so "steady" samples/s leave out the first
steps (allocator and kernel warm-up); "epoch" samples/s count the whole epoch. Peak memory is each
process's maximum resident set size (`os.wait4`). Then: `dlx --help` and `dlx runs` wall time and
whether they import torch, and the time from `dlx train` (digits) starting to its first training step.

Without `--mnist`, MNIST-format IDX files are written from scikit-learn's digits (8x8 upsampled to
28x28, tiled to 60,000 + 10,000 images): the same shapes and file format, so the same work per step.
Timings are only comparable within one report: other processes on the machine skew them (the report
prints the load average; `--repeats N` keeps each loop's best of N interleaved runs). On a busy machine
two OpenMP threads per process spin against the other processes and everything gets several times
slower; `--threads 1` gives steadier numbers there.
"""

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DLX = Path(sys.executable).parent / "dlx"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MEAN, STD = 0.1307, 0.3081  # the tutorial's MNIST normalization constants

# The model of each benchmark as dlx overrides; the hand-written loops build the same module in plain torch.
MODELS = {
    # lightning-hydra-template's SimpleDenseNet (benchmarks/conf/model/dense_64_128_64.yaml)
    "mlp": ["model=dense_64_128_64"],
    "lenet": ["model=lenet"],
}


# ---- data -----------------------------------------------------------------------------------------
def mnist_root(given: str | None, work: Path) -> tuple[Path, str]:
    """A `data.root` holding MNIST/raw/<IDX files>: the user's files, or ones made from digits."""
    if given is None:
        return write_digits_as_mnist(work), "digits upsampled to 28x28 and tiled to 60000/10000 (MNIST IDX format)"
    given_dir = Path(given).expanduser().resolve()
    for raw in (given_dir / "MNIST" / "raw", given_dir / "raw", given_dir):
        if all((raw / f).exists() for f in MNIST_FILES):
            if raw == given_dir / "MNIST" / "raw":
                return given_dir, f"MNIST files in {raw}"
            break
        if all((raw / f"{f}.gz").exists() for f in MNIST_FILES):
            break
    else:
        sys.exit(f"bench_train: no MNIST IDX files ({', '.join(MNIST_FILES)}[.gz]) in {given_dir} or its MNIST/raw/")
    root = work / "mnist"
    dest = root / "MNIST" / "raw"
    dest.mkdir(parents=True)
    for f in MNIST_FILES:  # torchvision reads the uncompressed files from <root>/MNIST/raw/
        if (raw / f).exists():
            os.symlink(raw / f, dest / f)
        else:
            with gzip.open(raw / f"{f}.gz") as src, open(dest / f, "wb") as out:
                shutil.copyfileobj(src, out)
    return root, f"MNIST files in {raw}"


def write_digits_as_mnist(work: Path) -> Path:
    """scikit-learn's 8x8 digits, bilinearly upsampled to 28x28 and tiled to MNIST's 60000/10000 images."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] / 16  # (1797, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = x.mul(255).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()  # (1797, 28, 28)
    y = digits.target.astype(np.uint8)
    raw = work / "digits" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        i = np.arange(n) % len(y)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(np.ascontiguousarray(x[i])))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(y[i]))
    return work / "digits"


def _idx(array) -> bytes:  # noqa: ANN001 - a uint8 numpy array
    """IDX bytes: magic (0, 0, 0x08 = uint8, ndim), each dim as big-endian uint32, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


# ---- the hand-written loops (each runs in a child process: `--child tutorial|preloaded`) ----------
def dense_64_128_64():  # noqa: ANN201 - nn.Module
    """lightning-hydra-template's SimpleDenseNet, as benchmarks/conf/model/dense_64_128_64.yaml builds it."""
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def build_model(name: str):  # noqa: ANN201 - nn.Module
    if name == "mlp":
        return dense_64_128_64()
    from dlx.models.lenet import LeNet  # torch-only module: no Hydra in the hand-written loops

    return LeNet(in_channels=1, num_classes=10, image_size=28)


def tutorial_batches(root: Path, batch_size: int, workers: int):  # noqa: ANN201 - iterator
    """The PyTorch tutorial's input pipeline: per-sample PIL -> ToTensor -> Normalize, DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    train = datasets.MNIST(str(root), train=True, transform=transform)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers)
    return iter(loader), len(loader)


def preloaded_batches(root: Path, batch_size: int):  # noqa: ANN201 - iterator
    """The hand-tuned input pipeline: one normalized float tensor, batches by randperm indexing."""
    import torch
    from torchvision import datasets

    train = datasets.MNIST(str(root), train=True)
    x = train.data[:, None].float().div_(255).sub_(MEAN).div_(STD)  # (60000, 1, 28, 28), normalized once
    y = train.targets  # (60000,)
    steps = len(y) // batch_size

    def batches():  # noqa: ANN202
        perm = torch.randperm(len(y))
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            yield x[idx], y[idx]

    return batches(), steps


def child(loop: str, model_name: str, root: Path, batch_size: int, warmup: int, workers: int) -> dict:
    """One epoch of a hand-written loop; time stamps taken the way dlx's metrics.jsonl takes them."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if loop == "tutorial":
        batches, steps = tutorial_batches(root, batch_size, workers)
    else:
        batches, steps = preloaded_batches(root, batch_size)
    model.train()
    start = time.time()
    warm = None
    for step, (x, y) in enumerate(batches, 1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loop == "tutorial" and step % 100 == 0:
            loss.item()  # the tutorial prints the loss every 100 batches
        if step == warmup:
            warm = time.time()
    end = time.time()
    return {
        "steps": steps, "batch_size": batch_size, "start": start, "warm": warm, "end": end,
        "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# ---- running and measuring processes --------------------------------------------------------------
def run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, int, str]:
    """Run `cmd`; return (start time, wall seconds, peak RSS in MiB, stdout). Fails loudly on a non-zero exit."""
    start = time.time()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"bench_train: {' '.join(cmd)} failed with exit code {proc.returncode}:\n{stderr[-3000:]}")
    return start, wall, usage.ru_maxrss // 1024, stdout  # ru_maxrss is in KiB on Linux


def run_hand_written(loop: str, model: str, root: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", loop, "--model", model, "--root", str(root),
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--workers", str(args.workers)]
    _, wall, rss, stdout = run_measured(cmd)
    r = json.loads(stdout.strip().splitlines()[-1])
    return rates(r["steps"], r["batch_size"], r["start"], r["warm"], r["end"], args.warmup) | {
        "rss_mib": rss, "process_s": wall, "params": r["params"], "threads": r["threads"], "torch": r["torch"]}


def rates(steps: int, batch_size: int, start: float, warm: float, end: float, warmup: int) -> dict:
    return {
        "steps": steps,
        "epoch_sps": steps * batch_size / (end - start),
        "steady_sps": (steps - warmup) * batch_size / (end - warm),
        "train_s": end - start,
    }


def run_dlx(model: str, root: Path, work: Path, args: argparse.Namespace) -> dict:
    """`dlx train` on the same files; its time stamps come from metrics.jsonl, its first step from summary.json."""
    exp = work / "experiments"
    name = f"bench-{model}-{time.time_ns()}"
    cmd = [str(DLX), "train", *MODELS[model], "data=mnist", f"data.root={root}", f"data.batch_size={args.batch_size}",
           "optimizer=adam", "optimizer.lr=0.001", "trainer.epochs=1", "trainer.precision=32", "trainer.progress=false",
           f"trainer.log_every={args.warmup}", f"paths.experiments={exp}", f"name={name}",
           f"hydra.searchpath=[file://{HERE / 'conf'}]", *args.dlx_overrides]
    launched, wall, rss, _ = run_measured(cmd, cwd=work)
    run_dir = next((exp / name).iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if "perf/samples_per_sec" in r]
    warm, last = train[0], train[-1]
    out = rates(last["step"], args.batch_size, summary["train_start_time"], warm["time"], last["time"], warm["step"])
    out["epoch_sps"] = last["perf/samples_per_sec"]  # dlx's own number: all steps over the time since fit started
    return out | {"rss_mib": rss, "process_s": wall, "params": summary["params"],
                  "first_step_s": summary["train_start_time"] - launched,
                  "test_acc": summary["metrics"]["final"].get("test/acc")}


def cli_latency(args: argparse.Namespace, work: Path) -> dict:
    """Median wall time of `dlx --help` and `dlx runs`, and whether either imports torch."""
    out = {}
    for label, argv in (("dlx --help", ["--help"]), ("dlx runs", ["runs", str(work / "experiments")])):
        walls = sorted(run_measured([str(DLX), *argv], cwd=work)[1] for _ in range(5))
        probe = (f"import sys; sys.argv = ['dlx', *{argv!r}]\nfrom dlx.cli import main\ntry:\n    main()\n"
                 "except SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)")
        stdout = run_measured([sys.executable, "-c", probe], cwd=work)[3]
        out[label] = {"wall_s": walls[len(walls) // 2], "imports_torch": "TORCH True" in stdout}
    return out


def digits_first_step(work: Path, args: argparse.Namespace) -> dict:
    """`dlx train` with its defaults (mlp on digits): seconds from launch to the first training step."""
    exp = work / "experiments"
    best = None
    for _ in range(args.repeats):
        name = f"bench-start-{time.time_ns()}"
        launched, wall, rss, _ = run_measured(
            [str(DLX), "train", "trainer.max_steps=50", "trainer.progress=false", f"paths.experiments={exp}",
             f"name={name}"], cwd=work)
        summary = json.loads(next((exp / name).iterdir()).joinpath("summary.json").read_text())
        r = {"first_step_s": summary["train_start_time"] - launched, "process_s": wall, "rss_mib": rss}
        best = r if best is None or r["first_step_s"] < best["first_step_s"] else best
    # The floor under any PyTorch training script: import torch and build an optimizer (which imports
    # torch._dynamo in torch 2.14).
    floor = "import torch; torch.optim.Adam([torch.zeros(1, requires_grad=True)])"
    best["torch_floor_s"] = min(run_measured([sys.executable, "-c", floor])[1] for _ in range(args.repeats))
    return best


# ---- the report -----------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        bf16 = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    except OSError:
        bf16 = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_bf16": bf16, "python": platform.python_version(),
            "os": platform.platform()}


def best_of(runs: list[dict]) -> dict:
    """The run with the highest steady samples/s, with the largest peak memory seen across runs."""
    best = dict(max(runs, key=lambda r: r["steady_sps"]))
    best["rss_mib"] = max(r["rss_mib"] for r in runs)
    return best


def report(res: dict) -> str:
    lines = [f"machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, torch {res['torch']}, "
             f"{res['threads']} threads; data: {res['data']}",
             f"load average before/after: {res['load'][0]:.2f} / {res['load'][1]:.2f} (keep it below the core count)",
             ""]
    head = (f"{'model':<6} {'loop':<10} {'steady samples/s':>16} {'epoch samples/s':>15} {'train s':>8} "
            f"{'peak RSS MiB':>12} {'process s':>9}")
    lines += [head, "-" * len(head)]
    for model, loops in res["loops"].items():
        for loop, r in loops.items():
            lines.append(f"{model:<6} {loop:<10} {r['steady_sps']:>16,.0f} {r['epoch_sps']:>15,.0f} "
                         f"{r['train_s']:>8.2f} {r['rss_mib']:>12} {r['process_s']:>9.2f}")
    lines.append("")
    for model, loops in res["loops"].items():
        d, t, p = loops["dlx"], loops["tutorial"], loops["preloaded"]
        lines.append(f"{model}: dlx/tutorial {d['steady_sps'] / t['steady_sps']:.2f}x (target >= 3), "
                     f"dlx/preloaded {d['steady_sps'] / p['steady_sps']:.2f}x (target >= 0.95), "
                     f"peak RSS dlx/preloaded {d['rss_mib'] / p['rss_mib']:.2f}x (target <= 1.2); "
                     f"dlx test acc {d['test_acc']}")
    for label, r in res["cli"].items():
        lines.append(f"{label}: {r['wall_s']:.3f} s (target < 0.5), imports torch: {r['imports_torch']}")
    s = res["start"]
    lines.append(f"dlx train (mlp, digits): first training step {s['first_step_s']:.2f} s after launch (target < 3); "
                 f"whole process (50 steps, val, test) {s['process_s']:.2f} s, peak RSS {s['rss_mib']} MiB")
    lines.append(f"  floor of any torch script here (import torch, build an optimizer): {s['torch_floor_s']:.2f} s")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", help="folder with the MNIST IDX files (or their MNIST/raw/); default: made from digits")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=25, help="steps left out of the steady-state rate")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the tutorial loop")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs per loop; the best is reported")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every process (default: torch's, the cores)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--dlx-overrides", nargs="*", default=[], help="extra overrides for `dlx train`")
    p.add_argument("--child", choices=["tutorial", "preloaded"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, Path(args.root), args.batch_size, args.warmup, args.workers)))
        return
    if args.threads:  # inherited by every child process, the hand-written loops and dlx alike
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dlx-bench-") as tmp:
        work = Path(tmp)
        root, data = mnist_root(args.mnist, work)
        loops: dict[str, dict[str, dict]] = {}
        for model in args.models:
            runs: dict[str, list[dict]] = {"tutorial": [], "preloaded": [], "dlx": []}
            for _ in range(args.repeats):
                for loop in runs:
                    print(f"... {model} {loop}", file=sys.stderr, flush=True)
                    r = run_dlx(model, root, work, args) if loop == "dlx" else run_hand_written(loop, model, root, args)
                    runs[loop].append(r)
            loops[model] = {k: best_of(v) for k, v in runs.items()}
            params = {k: v["params"] for k, v in loops[model].items()}
            if len(set(params.values())) != 1:
                sys.exit(f"bench_train: the loops built different {model} models (parameters: {params})")
        print("... cli latency, digits start-up", file=sys.stderr, flush=True)
        res = {"machine": machine(), "data": data, "loops": loops, "cli": cli_latency(args, work),
               "start": digits_first_step(work, args)}
    first = loops[args.models[0]]["preloaded"]
    res.update(torch=first["torch"], threads=first["threads"], load=(load_before, os.getloadavg()[0]),
               batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
