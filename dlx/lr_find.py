"""`dlx lr-find [overrides]`: the learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3).

The run is built as `dlx train` would build it from the same overrides (its data, model with its initial
weights, loss, task and optimizer), then trained for `--steps` updates while the learning rate grows
exponentially from `--start` to `--end`: lr_i = start * (end / start) ** (i / (steps - 1)). The loss of each
step is smoothed with a bias-corrected exponential moving average (`--beta`, as fastai's finder does), the
test stops when the smoothed loss exceeds `--diverge` times its minimum (or turns non-finite), and it prints

- the suggested learning rate: where the smoothed loss falls fastest (the steepest negative slope against
  log lr), the choice of Smith's test and of fastai's `steep` suggestion;
- the divergence point: the learning rate at which the loss blew up.

Nothing is saved to a run: the weights are a throw-away copy and the config is not changed (pass the
suggestion yourself: `dlx train optimizer.lr=...`). Writes lr_find.png and lr_find.json (lr, raw and smoothed
loss) to <paths.experiments>/lr_find/<time>-<id>/ (or --out). Tasks with one optimizer: classification,
regression, segmentation and the reconstruction tasks (autoencoders, VAEs); a GAN's two optimizers are refused.
"""

import argparse
import math
import time
from pathlib import Path
from typing import Any

from dlx.errors import ConfigError, DlxError

SKIP_START, SKIP_END = 5, 3  # points left out of the suggestion: the EMA's start-up and the blow-up itself


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx lr-find", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("overrides", nargs="*", help="config overrides as for dlx train, e.g. model=lenet")
    p.add_argument("--steps", type=int, default=100, help="updates of the test (N)")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate")
    p.add_argument("--beta", type=float, default=0.98, help="smoothing of the loss (exponential moving average)")
    p.add_argument("--diverge", type=float, default=4.0, help="stop when the smoothed loss exceeds this x its minimum")
    p.add_argument("--out", default=None, help="output folder (default <paths.experiments>/lr_find/<time>-<id>)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.steps < SKIP_START + SKIP_END + 2:
        raise ConfigError("--steps", args.steps, f"an integer >= {SKIP_START + SKIP_END + 2}")
    if not 0 < args.start < args.end:
        raise ConfigError("--start", args.start, f"a number > 0 and below --end={args.end}")
    if not 0 <= args.beta < 1:
        raise ConfigError("--beta", args.beta, "a number in [0, 1)")
    if not args.diverge > 1:
        raise ConfigError("--diverge", args.diverge, "a number > 1")


def main(argv: list[str]) -> int:
    args = parse(argv)
    check_args(args)
    from omegaconf import OmegaConf

    from dlx import config

    cfg, _ = config.check(args.overrides)
    OmegaConf.resolve(cfg)
    result = lr_find(cfg, args.steps, args.start, args.end, args.beta, args.diverge)
    folder = Path(args.out) if args.out else default_folder(cfg)
    write(folder, result, cfg)
    print(f"suggested optimizer.lr={result['suggested_lr']:.3g} (steepest descent of the smoothed loss)")
    if result["divergence_lr"] is not None:
        print(f"the loss diverges at lr={result['divergence_lr']:.3g} (step {result['divergence_step']})")
    else:
        print(f"the loss did not diverge up to lr={result['lr'][-1]:.3g}")
    print(folder / "lr_find.png")
    print(folder / "lr_find.json")
    return 0


def lr_find(cfg: Any, steps: int, start: float, end: float, beta: float, diverge: float) -> dict[str, Any]:
    """Run the range test on a fresh build of `cfg`; the curve, the suggestion and the divergence point."""
    import torch

    from dlx import build, prepare, runtime
    from dlx.stepper import Diverged, Stepper

    t = cfg.trainer
    runtime.seed_everything(int(cfg.seed), bool(t.deterministic))
    device = runtime.pick_device(t.device)
    precision = runtime.pick_precision(t.precision, device)
    data = build.build_data(cfg, device)
    task = build.build_task(cfg)
    if cfg.init_from:
        from dlx.loop import load_pretrained

        load_pretrained(task, Path(cfg.init_from))
    if cfg.freeze:
        build.freeze(task, list(cfg.freeze))
    groups = task.param_groups()
    if len(groups) != 1:
        raise DlxError(f"dlx lr-find tests one optimizer; task {type(task).__name__} has {len(groups)} "
                       f"({', '.join(groups)})")
    task.to(device)
    task.on_fit_start(data)
    prepare.check_task(task, data, device, precision)
    optimizers = build.build_optimizers(cfg, task, device)
    (opt,) = optimizers.values()
    base = opt.param_groups[0]["lr"]
    # The exponential ramp as a scheduler the Stepper steps after each update; groups keep their lr ratios.
    ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: start * (end / start) ** (i / (steps - 1)) / base)
    scaler = runtime.grad_scaler(device, precision)
    stepper = Stepper(optimizers, {name: ramp for name in optimizers}, scaler=scaler, grad_clip=t.grad_clip,
                      device_type=device.type)
    lrs, losses, smoothed = [], [], []
    avg, best, diverged_at = 0.0, math.inf, None
    task.train()
    for i, batch in enumerate(batches(data, steps)):
        lr = opt.param_groups[0]["lr"]
        stepper.begin(i + 1)
        try:
            with runtime.autocast(device, precision):
                metrics = task.training_step(batch, stepper)
        except Diverged:
            diverged_at = i
            break
        loss = float(metrics["loss"])
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (i + 1))  # bias correction: the average starts at 0
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if not math.isfinite(value) or value > diverge * best:
            diverged_at = i
            break
    if len(lrs) < SKIP_START + SKIP_END + 2:
        raise DlxError(f"the loss diverged after {len(lrs)} steps at lr={lrs[-1] if lrs else start:.3g}: "
                       "start lower (--start)")
    suggested = steepest(lrs, smoothed)
    divergence = None if diverged_at is None else start * (end / start) ** (diverged_at / (steps - 1))
    return {"lr": lrs, "loss": losses, "smoothed_loss": smoothed, "suggested_lr": lrs[suggested],
            "suggested_step": suggested, "divergence_lr": divergence, "divergence_step": diverged_at,
            "steps": steps, "start": start, "end": end, "beta": beta, "diverge": diverge,
            "optimizer": str(cfg.optimizer._target_), "configured_lr": base}


def batches(data: Any, steps: int):  # noqa: ANN201 - iterator of training batches
    """`steps` training batches, epoch after epoch (each epoch in its own shuffle order)."""
    n, epoch = 0, 0
    while n < steps:
        for batch in data.batches("train", epoch):
            yield batch
            n += 1
            if n == steps:
                return
        epoch += 1


def steepest(lrs: list[float], smoothed: list[float]) -> int:
    """Index of the steepest descent of the smoothed loss against log10(lr), its first and last points aside."""
    import numpy as np

    slope = np.gradient(np.asarray(smoothed), np.log10(np.asarray(lrs)))
    lo, hi = SKIP_START, len(lrs) - SKIP_END
    return lo + int(np.argmin(slope[lo:hi]))


def default_folder(cfg: Any) -> Path:
    """<paths.experiments>/lr_find/<time>-<id>: unique even for two starts in the same second."""
    import secrets

    return Path(cfg.paths.experiments) / "lr_find" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{secrets.token_hex(3)}"


def write(folder: Path, result: dict[str, Any], cfg: Any) -> None:
    """lr_find.json (the curve and the findings) and lr_find.png (smoothed loss against log10 lr)."""
    import numpy as np
    from omegaconf import OmegaConf

    from dlx.analysis.plot import Figure
    from dlx.rundir import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "lr_find.json", {**result, "config": OmegaConf.to_container(cfg)})
    x = np.log10(result["lr"])
    lo, hi = math.floor(x.min()), math.ceil(x.max())
    finite = [v for v in result["loss"] if math.isfinite(v)]
    low, first = min(min(result["smoothed_loss"]), min(finite)), result["smoothed_loss"][0]
    top = min(max(result["smoothed_loss"]), low + 1.5 * (first - low)) if first > low else first
    pad = 0.05 * max(top - low, 1e-6)
    fig = Figure(f"LR range test ({cfg.name})", xlabel="learning rate", ylabel="loss (smoothed)",
                 xticks=[(k, f"1e{k}") for k in range(lo, hi + 1)], xlim=(lo, hi), ylim=(low - pad, top + pad),
                 legend="lower left")
    fig.line(x, result["loss"], label="loss", color="#c7c7c7")
    fig.line(x, result["smoothed_loss"], label="smoothed loss")
    s = result["suggested_step"]
    fig.scatter([x[s]], [result["smoothed_loss"][s]], label=f"suggested lr {result['suggested_lr']:.2g}",
                color="red")
    fig.save(folder / "lr_find.png")
