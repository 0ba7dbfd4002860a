"""`dlx predict RUN_DIR FILE... [--top-k 3] [--mc-samples N]`: class probabilities for image files.

Each file is read with PIL, converted to the run's channels (grey or RGB), resized to the run's image
size and normalized with the statistics of the run's own training data, exactly as its batches were.
One JSON line per file on stdout: the top-k classes (names and probabilities) and the entropy of the
prediction; with `--mc-samples T` the MC-dropout predictive mean, its entropy, the mutual information
(epistemic uncertainty) and the variation ratio.
"""

import argparse
import json
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx predict", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a run folder of an image classifier")
    p.add_argument("files", type=Path, nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--mc-samples", type=int, default=None, metavar="T", help="MC-dropout passes (e.g. 50)")
    p.add_argument("--invert", action="store_true",
                   help="invert grey levels first (dark ink on white paper -> the white-on-black of MNIST/digits)")
    p.add_argument("--checkpoint", default="best",
                   help="best, last, or a checkpoint file (best-<step>.pt of trainer.save_top_k)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the dropout masks")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from dlx.errors import ConfigError, DlxError

    if args.top_k < 1:
        raise ConfigError("--top-k", args.top_k, "an integer >= 1")
    if args.mc_samples is not None and args.mc_samples < 2:
        raise ConfigError("--mc-samples", args.mc_samples, "MC-dropout needs at least 2 passes (e.g. 50)")
    for f in args.files:
        if not f.is_file():
            raise DlxError(f"image file {f} does not exist")

    import torch

    from dlx.analysis import uncertainty as u
    from dlx.analysis.loading import load_image, load_run, normalize, require_images
    from dlx.tasks.classify import Classify

    run = load_run(args.run_dir, args.device, args.checkpoint)
    if not isinstance(run.task, Classify):
        raise DlxError(f"dlx predict gives class probabilities; {run.run_dir} is a {type(run.task).__name__} run")
    require_images(run, "dlx predict")
    if args.mc_samples:
        u.require_dropout(run.model, str(run.run_dir))
    facts = run.data.facts()
    channels, size = facts["channels"], facts["size"]
    classes = run.data.classes or [str(i) for i in range(facts["num_classes"])]
    pixels = torch.cat([load_image(f, channels, size) for f in args.files]).to(run.device)  # (N, C, H, W)
    if args.invert:
        pixels = 1 - pixels
    x = normalize(run.data, pixels)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if args.mc_samples:
            with u.mc_dropout(run.model):
                probs = u.mc_probs(run.model, x, args.mc_samples).cpu()  # (T, N, K)
        else:
            probs = run.model(x).float().softmax(-1).cpu()[None]  # (1, N, K)
    mean = probs.mean(0)
    k = min(args.top_k, mean.shape[-1])
    top_p, top_i = mean.topk(k, dim=-1)
    entropy = u.predictive_entropy(probs)
    for n, f in enumerate(args.files):
        line = {"file": str(f),
                "top": [{"class": classes[i], "index": int(i), "prob": round(float(p), 6)}
                        for p, i in zip(top_p[n].tolist(), top_i[n].tolist(), strict=True)],
                "entropy": round(float(entropy[n]), 6)}
        if args.mc_samples:
            line["mutual_information"] = round(float(u.mutual_information(probs[:, n : n + 1])[0]), 6)
            line["variation_ratio"] = round(float(u.variation_ratio(probs[:, n : n + 1])[0]), 6)
            line["mc_samples"] = args.mc_samples
        print(json.dumps(line))
    return 0
