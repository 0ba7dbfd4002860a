"""Issue 6's targets on real MNIST, checked with the presets themselves (not a timed test).

    python benchmarks/vae_mnist.py --data ~/data            # <DIR>/MNIST/raw/ with the IDX files
    python benchmarks/vae_mnist.py --data ~/data --only vae  # one of: vae, ae, dcgan
    python benchmarks/vae_mnist.py --data ~/data --device cuda

Targets:
  vae    `dlx train experiment=vae_mnist` (MLP 784-400-20, 10 epochs): test/neg_elbo <= 105 nats
  ae     `dlx train experiment=ae_mnist`: test/mse below test/pca_mse (PCA at the same code size)
  dcgan  `dlx train experiment=dcgan_mnist`: val/fid falls over training (last below first) and the
         self-trained judge assigns the final samples confidently (val/judge_conf >= 0.8)
Each check runs the real `dlx train` in a subprocess into a temporary experiments folder, reads the
run's summary.json and metrics.jsonl, prints one line per target and exits 1 if any target fails.
Without MNIST files it says where it looked and exits 2.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

DLX = str(Path(sys.executable).parent / "dlx")


def run(preset: str, data: Path, device: str, out: Path) -> Path:
    """Train a preset; return its run folder."""
    args = [DLX, "train", f"experiment={preset}", f"paths.data={data}", f"paths.experiments={out}",
            f"trainer.device={device}", "trainer.progress=false"]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{preset}: dlx train failed: {done.stderr.strip()[-500:]}")
    (summary,) = sorted(out.rglob("summary.json"))
    return summary.parent


def metrics(run_dir: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return summary["metrics"]["final"], lines


def check_vae(final: dict, lines: list[dict]) -> tuple[bool, str]:
    v = final["test/neg_elbo"]
    return v <= 105, f"vae_mnist test/neg_elbo {v:.2f} nats (target <= 105; recon {final['test/recon']:.2f}, " \
                     f"kl {final['test/kl']:.2f})"


def check_ae(final: dict, lines: list[dict]) -> tuple[bool, str]:
    ae, pca = final["test/mse"], final["test/pca_mse"]
    return ae < pca, f"ae_mnist test/mse {ae:.5f} vs PCA at the same code size {pca:.5f} (target: below)"


def check_dcgan(final: dict, lines: list[dict]) -> tuple[bool, str]:
    fids = [m["val/fid"] for m in lines if "val/fid" in m]
    conf = final["val/judge_conf"]
    ok = len(fids) >= 2 and fids[-1] < fids[0] and conf >= 0.8
    return ok, f"dcgan_mnist val/fid {' -> '.join(f'{f:.1f}' for f in fids)} (target: falls), " \
               f"judge_conf {conf:.3f} (target >= 0.8), judge_acc {final['val/judge_acc']:.4f}"


CHECKS = {"vae": ("vae_mnist", check_vae), "ae": ("ae_mnist", check_ae), "dcgan": ("dcgan_mnist", check_dcgan)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data"), help="folder holding MNIST/raw/ (paths.data)")
    p.add_argument("--only", choices=sorted(CHECKS), action="append", help="run only these checks")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    raw = args.data / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists() and not (raw / "train-images-idx3-ubyte.gz").exists():
        print(f"MNIST not found in {raw}: get it with `dlx train data=mnist data.download=true paths.data={args.data}`")
        return 2
    failed = 0
    for key in args.only or list(CHECKS):
        preset, check = CHECKS[key]
        with tempfile.TemporaryDirectory() as tmp:
            ok, line = check(*metrics(run(preset, args.data.resolve(), args.device, Path(tmp))))
        print(("PASS " if ok else "FAIL ") + line, flush=True)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
