"""Do channels_last and bf16 autocast speed up training steps on this machine? (issue 3, `trainer.*: auto`)

    python benchmarks/bench_formats.py [--threads N] [--steps 20] [--batch-size 128]

For LeNet, ResNet-20 and the airbench net at digits (1x8x8) and CIFAR (3x32x32) shapes, times one
training step (forward, cross-entropy, backward, fused Adam) in four variants: fp32, channels_last,
bf16 autocast, both. Each variant's median over `--steps` steps after warm-up; process CPU time is
printed beside wall time because on a busy machine wall time mostly measures the other processes.
dlx's `auto` defaults (dlx/runtime.py) follow these numbers.
"""

import argparse
import os
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from dlx.models.airbench import Airbench
from dlx.models.lenet import LeNet
from dlx.models.resnet import ResNet

SHAPES = {"digits": (1, 8), "cifar": (3, 32)}
MODELS = {
    "lenet": lambda c, s: LeNet(in_channels=c, num_classes=10, image_size=s),
    "resnet20": lambda c, s: ResNet(in_channels=c, num_classes=10, image_size=s),
    "airbench": lambda c, s: Airbench(in_channels=c, num_classes=10, image_size=s),
}
VARIANTS = {"fp32": (False, False), "channels_last": (True, False), "bf16": (False, True), "both": (True, True)}


def time_steps(
    model_name: str, shape: str, channels_last: bool, bf16: bool, steps: int, batch: int
) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of one training step."""
    torch.manual_seed(0)
    c, s = SHAPES[shape]
    model = MODELS[model_name](c, s)
    x, y = torch.randn(batch, c, s, s), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), fused=True)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext

    def step() -> None:
        with cast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    walls, cpus = [], []
    for _ in range(steps):
        w, p = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - p)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, "
          f"CPU bf16 instructions: {'avx512_bf16' in flags or 'amx_bf16' in flags}, load {os.getloadavg()[0]:.2f}")
    print(f"{'model':<9} {'data':<7} " + " ".join(f"{v:>22}" for v in VARIANTS) + "   (ms per step: wall / CPU)")
    for model_name in MODELS:
        for shape in SHAPES:
            cells = []
            for cl, bf16 in VARIANTS.values():
                wall, cpu = time_steps(model_name, shape, cl, bf16, args.steps, args.batch_size)
                cells.append(f"{wall:>10.1f} / {cpu:>9.1f}")
            print(f"{model_name:<9} {shape:<7} " + " ".join(f"{c:>22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
