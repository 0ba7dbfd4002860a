"""`dlx sample RUN_DIR`: images from a trained generative run (VAE, GAN, PixelCNN) as one PNG grid, or text
from a trained language model.

    dlx sample RUN_DIR [--n 64] [--out FILE.png] [--nrow 8] [--seed 0] [--device auto]
    dlx sample RUN_DIR --interpolate [--n 64] [--steps 8]    # walks between pairs of latent points (VAE, GAN)
    dlx sample RUN_DIR --class 3 [--n 64]                  # a class-conditional GAN (task.conditional=true)
    dlx sample LM_RUN_DIR [--prompt TEXT] [--length 500] [--temperature 0.8] [--n 1]   # task=lm: text

The run's task is rebuilt from the config in its checkpoint (shapes come from the config's data
declarations; no data is loaded) with the weights of `checkpoints/best.pt` (else `last.pt`); RUN_DIR may
also be a checkpoint file.
Samples come from the prior: z ~ N(0, I) decoded (VAE: the decoder's mean; GAN: the generator in eval
mode), or pixel by pixel (PixelCNN). A language model (task=lm) continues `--prompt` character by
character, free running (it reads only the prompt and what it drew itself), at `--temperature`; the
text is printed and written to RUN_DIR/samples.txt (or --out). A class-conditional GAN draws class
`--class` (default: one class per row of the grid, classes 0, 1, ... in turn).

`--interpolate` draws n / steps pairs (z0, z1) and decodes `steps` points along the great circle between
them (spherical interpolation, which keeps the points at the norm typical of a Gaussian; a straight line
passes through the unlikely region near 0).
"""

import argparse
from pathlib import Path

from dlx.errors import DlxError

GENERATIVE = "task=vae, task=gan, task=autoregress or task=lm"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx sample", description="images from a trained VAE, GAN or PixelCNN run")
    p.add_argument("run_dir", type=Path, help="a run folder (experiments/<name>/<run-id>)")
    p.add_argument("--n", type=int, default=None, help="number of images (default 64) or texts (default 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG (text: .txt) file to write (default RUN_DIR/samples.png or samples.txt)")
    p.add_argument("--nrow", type=int, default=8, help="images per row of the grid (default 8)")
    p.add_argument("--interpolate", action="store_true", help="walk between two latent points per row (VAE, GAN)")
    p.add_argument("--steps", type=int, default=8, help="images per interpolation (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    p.add_argument("--class", dest="label", type=int, default=None,
                   help="class-conditional GANs: the class to draw (default one class per row)")
    p.add_argument("--prompt", default="\n", help="language models: the text to continue (default a newline)")
    p.add_argument("--length", type=int, default=500, help="language models: characters to draw (default 500)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="language models: softmax temperature (default 0.8; 0 = most likely character)")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1 or args.steps < 2 or args.nrow < 1:
        p.error("--n and --nrow must be >= 1 and --steps >= 2")
    if args.length < 1 or args.temperature < 0 or not args.prompt:
        p.error("--length must be >= 1, --temperature >= 0 and --prompt not empty")
    return args


def load_task(run_dir: Path, device: str):  # noqa: ANN201 - the run's Task
    """The run's task with its best (else last) weights (dlx.analysis.loading.load_run), in eval mode."""
    from dlx.analysis.loading import load_run

    run = load_run(run_dir, device, with_data=False)
    if not hasattr(run.task, "sample") and not hasattr(run.task, "sample_text"):
        raise DlxError(f"{run_dir} is a {run.cfg.task._target_} run; dlx sample needs a generative run ({GENERATIVE})")
    return run.task


def slerp(z0, z1, t):  # noqa: ANN001, ANN201 - tensors
    """Spherical interpolation between rows of z0 and z1 (R, D) at fractions t (S,) -> (R, S, D)."""
    import torch

    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=1).clamp(-1 + 1e-6, 1 - 1e-6)  # (R,)
    omega = torch.acos(cos)[:, None, None]  # (R, 1, 1)
    t = t[None, :, None]  # (1, S, 1)
    return (torch.sin((1 - t) * omega) * z0[:, None] + torch.sin(t * omega) * z1[:, None]) / torch.sin(omega)


def main(argv: list[str]) -> int:
    args = parse(argv)
    import torch
    from torchvision.utils import save_image

    task = load_task(args.run_dir, args.device)
    if hasattr(task, "sample_text"):  # a language model: text, not images
        return sample_text(task, args)
    args.n = 64 if args.n is None else args.n
    if args.label is not None and not getattr(task, "conditional", False):
        raise DlxError(f"{args.run_dir} is not class-conditional: --class needs a run with task.conditional=true")
    device = next(task.buffers()).device
    g = torch.Generator(device=device).manual_seed(args.seed)
    nrow = args.nrow
    if args.interpolate:
        if not hasattr(task, "generate"):
            raise DlxError(f"{args.run_dir} has no latent space to walk: --interpolate needs task=vae or task=gan")
        rows = max(1, args.n // args.steps)
        z0, z1 = task.prior(rows, g), task.prior(rows, g)
        z = slerp(z0, z1, torch.linspace(0, 1, args.steps, device=device))  # (rows, steps, D)
        if getattr(task, "conditional", False):  # one class per walk: --class, or 0, 1, ... row by row
            images = task.generate(z.flatten(0, 1), task.class_labels(rows * args.steps, args.label, args.steps))
        else:
            images = task.generate(z.flatten(0, 1))
        nrow = args.steps
    elif getattr(task, "conditional", False):
        images = task.sample(args.n, g, label=args.label, per_row=nrow)
    else:
        images = task.sample(args.n, g)
    out = args.out or args.run_dir / ("interpolation.png" if args.interpolate else "samples.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().cpu(), out, nrow=nrow, padding=2)
    print(out)
    return 0


def sample_text(task, args: argparse.Namespace) -> int:  # noqa: ANN001 - a dlx.tasks.lm.LanguageModel
    """Print `--n` free-running continuations of `--prompt` and write them to RUN_DIR/samples.txt (or --out)."""
    import torch

    device = next(task.parameters()).device
    g = torch.Generator(device=device).manual_seed(args.seed)
    texts = task.sample_text(args.prompt, args.length, args.temperature, g, n=args.n or 1)
    out = args.out or args.run_dir / "samples.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(texts)
    out.write_text(text + "\n", encoding="utf-8")
    print(text)
    print(out)
    return 0
