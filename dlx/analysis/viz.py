"""`dlx viz KIND ...`: look inside a trained network. PNGs (and a JSON of the numbers) go to RUN_DIR/viz/
(or --out) and, as images, to a TensorBoard writer in the same folder; the paths are printed.

  cam RUN_DIR                  class activation maps of a GAP net for the true and the predicted class
                               (on `shapes`: share of the CAM mass inside the shape's mask)
  saliency RUN_DIR             gradient, deconvnet and guided-backpropagation projections of a class or of a
                               unit (--layer L --unit U) back to the input
  filters RUN_DIR [--layer L]  first conv layer's kernels; with --layer, L's feature maps for a test image
  embed RUN_DIR                penultimate features -> TensorBoard projector, t-SNE and PCA scatter plots
  eigen [--data digits]        eigen-images of a data set, reconstructions, explained variance, OOD detection
  gradflow RUN_DIR             per-layer gradient norms over training (runs with trainer.log_grad_norms=true)
  dream RUN_DIR --layer L      DeepDream: gradient ascent on an image to excite layer L
  invert RUN_DIR --layer L     reconstruct an image from its code at layer L (total-variation prior)
  style --content A --style B  Gatys style transfer (local VGG-19 weights, or a trained conv net: --run)
  regress RUN_DIR              1-D regression: data, predicted mean and +-2 sigma band
"""

import argparse
from pathlib import Path

KINDS = ("cam", "saliency", "filters", "embed", "eigen", "gradflow", "dream", "invert", "style", "regress")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx viz", description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    def command(name: str, help: str, run: bool = True) -> argparse.ArgumentParser:  # noqa: A002
        c = sub.add_parser(name, help=help, description=help)
        if run:
            c.add_argument("run_dir", type=Path, help="a run folder (experiments/<name>/<run-id>)")
            c.add_argument("--checkpoint", default="best",
                           help="best, last, or a checkpoint file (best-<step>.pt of trainer.save_top_k)")
        c.add_argument("--out", default=None, help="output folder (default RUN_DIR/viz)")
        c.add_argument("--device", default="auto")
        c.add_argument("--seed", type=int, default=0)
        return c

    c = command("cam", "class activation maps (Zhou et al. 2016) of a global-average-pooling net")
    c.add_argument("--n", type=int, default=8, help="test images to draw")
    c.add_argument("--max-images", type=int, default=None, help="test images for the mask statistics (all)")
    c = command("saliency", "gradient, deconvnet (Zeiler & Fergus) and guided backpropagation (Springenberg et al.) "
                "projections of a class logit or of a unit back to the input")
    c.add_argument("--n", type=int, default=6, help="test images to draw")
    c.add_argument("--class", dest="label", type=int, default=None, help="class whose logit to project (predicted)")
    c.add_argument("--layer", default=None, help="project a unit of this layer instead (module name, e.g. features.3)")
    c.add_argument("--unit", type=int, default=0, help="channel of --layer whose strongest activation to project")
    c = command("filters", "first conv layer's kernels; with --layer, feature maps of a test image")
    c.add_argument("--layer", default=None, help="module name, e.g. features.0 (feature maps)")
    c.add_argument("--index", type=int, default=0, help="which test image (with --layer)")
    c = command("embed", "penultimate features: TensorBoard projector, t-SNE and PCA scatter plots")
    c.add_argument("--n", type=int, default=1000, help="test samples to embed")
    c = command("eigen", "eigen-images (PCA) of a data set and distance-from-eigen-space OOD detection", run=False)
    c.add_argument("--data", default=None, help="data group, e.g. digits, mnist, olivetti_faces (default: digits)")
    c.add_argument("--k", type=int, default=16, help="number of components")
    c.add_argument("--ood", default="noise",
                   help="out-of-distribution images: noise (pixels shuffled across images), uniform, or a data group")
    c.add_argument("--max-train", type=int, default=10000, help="training images for the PCA")
    c.add_argument("--n", type=int, default=8, help="test images to reconstruct")
    c.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/data experiment=eigendigits")
    command("gradflow", "per-layer gradient norms over training (trainer.log_grad_norms=true)")
    c = command("dream", "DeepDream: gradient ascent on an image to excite a layer")
    c.add_argument("--layer", required=True, help="module name, e.g. features.3")
    c.add_argument("--image", type=Path, default=None, help="image file to dream on (default: a test image)")
    c.add_argument("--index", type=int, default=0, help="which test image")
    c.add_argument("--steps", type=int, default=40, help="ascent steps per octave")
    c.add_argument("--lr", type=float, default=0.05, help="step size of the normalized gradient")
    c.add_argument("--jitter", type=int, default=1, help="largest random shift in pixels")
    c.add_argument("--octaves", type=int, default=1)
    c.add_argument("--octave-scale", type=float, default=1.4)
    c.add_argument("--size", type=int, default=None, help="resize the image to this side first")
    c = command("invert", "reconstruct an image from its representation at a layer (Mahendran and Vedaldi)")
    c.add_argument("--layer", required=True, help="module name, e.g. features.3")
    c.add_argument("--image", type=Path, default=None, help="image file (default: a test image)")
    c.add_argument("--index", type=int, default=0, help="which test image")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--tv-weight", type=float, default=0.05, help="strength of the total-variation prior")
    c.add_argument("--beta", type=float, default=2.0, help="exponent of the total-variation prior")
    c = command("style", "neural style transfer (Gatys et al. 2016)", run=False)
    c.add_argument("--content", type=Path, required=True, help="content image file")
    c.add_argument("--style", type=Path, required=True, help="style image file")
    c.add_argument("--run", type=Path, default=None, help="a trained dlx conv net to take features from")
    c.add_argument("--backbone", default="auto", choices=("auto", "vgg", "run"),
                   help="auto: VGG-19 when its weights are in the torch hub cache, else --run")
    c.add_argument("--size", type=int, default=64, help="side of the output image")
    c.add_argument("--steps", type=int, default=200)
    c.add_argument("--lr", type=float, default=0.02)
    c.add_argument("--optimizer", default="adam", choices=("adam", "lbfgs"))
    c.add_argument("--style-weight", type=float, default=10.0)
    c.add_argument("--content-weight", type=float, default=1.0)
    c = command("regress", "1-D regression: data, predicted mean, +-2 sigma band")
    c.add_argument("--mc-samples", type=int, default=None, metavar="T", help="add MC-dropout epistemic variance")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    import torch

    torch.manual_seed(args.seed)
    return {"cam": cam, "saliency": saliency, "filters": filters, "embed": embed, "eigen": eigen, "gradflow": gradflow,
            "dream": dream, "invert": invert, "style": style, "regress": regress}[args.kind](args)


# ---- helpers ----------------------------------------------------------------------------------------
def _open(args: argparse.Namespace, images: bool = True):  # noqa: ANN202 - (LoadedRun, Outputs)
    from dlx.analysis.loading import Outputs, load_run, output_folder, require_images

    run = load_run(args.run_dir, args.device, args.checkpoint)
    if images:
        require_images(run, f"dlx viz {args.kind}")
    return run, Outputs(output_folder(args.out, run.run_dir, "viz"), step=run.step)


def _report(numbers: dict) -> None:
    """Print the scalar results, one `name: value` line each."""
    for k, v in numbers.items():
        if isinstance(v, float):
            print(f"{k}: {v:.4f}")
        elif isinstance(v, int | str):
            print(f"{k}: {v}")


def _check_positive(**values: float) -> None:
    from dlx.errors import ConfigError

    for key, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"--{key.replace('_', '-')}", value, "must be > 0")


def _input_pixels(run, args: argparse.Namespace):  # noqa: ANN001, ANN202 - pixels (1, C, H, W) in [0, 1]
    """The image to work on: --image FILE (in the run's channels and size) or test image --index."""
    import torch.nn.functional as F

    from dlx.analysis.loading import display, load_image, test_images
    from dlx.errors import ConfigError

    facts = run.data.facts()
    if args.image is not None:
        pixels = load_image(args.image, facts["channels"], getattr(args, "size", None) or facts["size"])
        return pixels.to(run.device)
    x = test_images(run, n=args.index + 1)[0]
    if args.index >= len(x) or args.index < 0:
        raise ConfigError("--index", args.index, f"the test split has {len(x)} images")
    pixels = display(run.data, x[args.index : args.index + 1])
    size = getattr(args, "size", None)
    if size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return pixels


# ---- commands ---------------------------------------------------------------------------------------
def cam(args: argparse.Namespace) -> int:
    from dlx.analysis import cam as C
    from dlx.analysis.loading import test_images

    _check_positive(n=args.n, max_images=args.max_images)
    run, out = _open(args)
    C.gap_linear(run.model)
    batch = test_images(run, n=args.n)
    out.image("cam", C.figure(run, batch[0], batch[1], args.n))
    numbers: dict = {"model": type(run.model).__name__}
    if len(batch) > 2 and batch[2].dim() == 3 and batch[2].shape[-2:] == batch[0].shape[-2:]:
        numbers.update(C.localization(run.model, run.data.batches("test"), args.max_images))
        numbers["mass_over_area"] = numbers["cam_mass_in_mask"] / max(numbers["mask_area"], 1e-12)
    _report(numbers)
    out.json("cam", numbers)
    out.close()
    return 0


def saliency(args: argparse.Namespace) -> int:
    import torch

    from dlx.analysis import saliency as S
    from dlx.analysis.layers import find_layer
    from dlx.analysis.loading import test_images
    from dlx.errors import ConfigError

    _check_positive(n=args.n)
    if args.layer is None and args.unit:
        raise ConfigError("--unit", args.unit, "needs --layer (the unit is a channel of that layer)")
    run, out = _open(args)
    x = test_images(run, n=args.n)[0]
    layer = find_layer(run.model, args.layer) if args.layer else None
    classes = None
    if args.label is not None and layer is None:
        with torch.no_grad():
            k = run.model(x[:1]).shape[-1]
        if not 0 <= args.label < k:
            raise ConfigError("--class", args.label, f"a class of this model: 0..{k - 1}")
        classes = torch.full((len(x),), args.label, device=x.device)
    maps, logits = {}, None
    for rule in S.RULES:
        maps[rule], logits = S.project(run.model, x, rule, classes, layer, args.unit)
    names = run.data.classes or [str(i) for i in range(logits.shape[-1])]
    probs = logits.float().softmax(-1)
    target = logits.argmax(-1) if classes is None else classes
    if layer is not None:
        captions = [f"{args.layer}[{args.unit}]" for _ in range(len(x))]
        stem = f"saliency-{args.layer}-{args.unit}"
    else:
        captions = [f"{names[t]} {float(probs[i, t]):.2f}" for i, t in enumerate(target.tolist())]
        stem = "saliency" if classes is None else f"saliency-class{args.label}"
    out.image(stem, S.figure(run, x, maps, captions))
    # How far each rule's map is from the plain gradient (cosine similarity per image, averaged), and the share of
    # positive values at the input: the numbers behind "deconvnet and guided backprop are not the gradient".
    flat = {k: v.flatten(1) for k, v in maps.items()}
    numbers: dict = {"model": type(run.model).__name__, "target": f"{args.layer}[{args.unit}]" if layer else
                     ("predicted class" if classes is None else f"class {args.label}"), "images": len(x)}
    for rule in ("deconvnet", "guided"):
        numbers[f"cosine_{rule}_vs_gradient"] = float(torch.cosine_similarity(flat[rule], flat["gradient"]).mean())
    for rule in S.RULES:
        numbers[f"positive_share_{rule}"] = float((flat[rule] > 0).float().mean())
    _report(numbers)
    out.json(stem, numbers)
    out.close()
    return 0


def filters(args: argparse.Namespace) -> int:
    from dlx.analysis import filters as Fi
    from dlx.analysis.loading import display, test_images

    run, out = _open(args)
    facts = run.data.facts()
    img, name, shape = Fi.kernels_figure(run.model, (facts["channels"], facts["size"], facts["size"]))
    out.image("filters", img)
    numbers: dict = {"first_layer": name, "kernels": str(shape)}
    if args.layer:
        x = test_images(run, n=args.index + 1)[0][args.index : args.index + 1]
        out.image(f"maps-{args.layer}", Fi.feature_maps_figure(run.model, args.layer, x, display(run.data, x)))
        numbers["layer"] = args.layer
    _report(numbers)
    out.close()
    return 0


def embed(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dlx import term
    from dlx.analysis import embed as E
    from dlx.analysis.loading import display, test_images
    from dlx.errors import DlxError

    _check_positive(n=args.n)
    with term.status("dlx viz embed: loading the run and its test images"):
        run, out = _open(args, images=False)
        batch = test_images(run, n=args.n)
    x, y = batch[0], batch[1]
    if y.is_floating_point() or y.dim() != 1:
        raise DlxError("dlx viz embed colours points by class: it needs a classification run")
    bs = getattr(run.data, "eval_batch_size", 512)
    with term.status(f"dlx viz embed: penultimate features of {len(x)} test images"):
        z = torch.cat([E.penultimate(run.model, x[i : i + bs]) for i in range(0, len(x), bs)]).cpu()
    labels = y.cpu().numpy()
    names = run.data.classes or [str(i) for i in range(int(labels.max()) + 1)]
    sprites = display(run.data, x).cpu() if x.dim() == 4 else None
    with term.status("dlx viz embed: TensorBoard projector files"):
        out.writer.add_embedding(z, metadata=[names[i] for i in labels], label_img=sprites, global_step=run.step,
                                 tag="penultimate")
    zn = z.numpy()
    with term.status(f"dlx viz embed: t-SNE of {len(zn)} points in {zn.shape[1]} dimensions (the slow part)"):
        t = E.tsne(zn, args.seed)
    p, ratio = E.pca2(zn)
    out.image("tsne", E.scatter_figure(t, labels, names, f"t-SNE of penultimate features ({len(zn)} test samples)",
                                       "t-SNE 1", "t-SNE 2").render())
    out.image("pca", E.scatter_figure(p, labels, names, "PCA of penultimate features",
                                      f"PC 1 ({100 * ratio[0]:.1f}%)", f"PC 2 ({100 * ratio[1]:.1f}%)").render())
    numbers = {"samples": len(zn), "dims": int(zn.shape[1]), "knn5_acc_features": E.knn_accuracy(zn, labels),
               "knn5_acc_tsne": E.knn_accuracy(t, labels)}
    if len(np.unique(labels)) > 1:
        from sklearn.metrics import silhouette_score

        numbers["silhouette_tsne"] = float(silhouette_score(t, labels))
    _report(numbers)
    out.json("embed", numbers)
    out.close()
    print(f"projector: tensorboard --logdir {out.folder}")
    return 0


def eigen(args: argparse.Namespace) -> int:
    import torch
    from omegaconf import OmegaConf

    from dlx import build, config
    from dlx.analysis import eigen as Ei
    from dlx.analysis.loading import Outputs
    from dlx.errors import ConfigError

    _check_positive(k=args.k, max_train=args.max_train, n=args.n)
    overrides = [*([f"data={args.data}"] if args.data else []), *args.overrides, "data.normalize=false"]
    cfg, choices = config.check(overrides)
    OmegaConf.resolve(cfg)  # as a run does: data.root=${paths.data} and the declarations become values
    data_name = choices.get("data") or args.data or "data"
    data = build.build_data(cfg, torch.device("cpu"))
    train = Ei.images(data, "train", args.max_train)
    test = Ei.images(data, "test")
    dims = train[0].numel()
    if args.k >= min(len(train), dims):
        raise ConfigError("--k", args.k, f"must be below min(training images, pixels) = {min(len(train), dims)}")
    space = Ei.fit(train)
    folder = Path(args.out) if args.out else Path(cfg.paths.experiments) / f"eigen-{data_name}"
    out = Outputs(folder)
    k = args.k
    out.image("eigen-images", Ei.components_figure(space, k))
    ks = sorted({1, 2, 4, 8, 16, 32, 64, k} & set(range(1, min(len(train), dims))) | {k})
    ks = [q for q in ks if q <= max(k, 64)]
    out.image("eigen-reconstructions", Ei.reconstructions_figure(space, test[: args.n], ks))
    out.image("eigen-variance", Ei.variance_figure(space, k).render())
    inside = space.distance(test, k)
    outside, ood_name = _ood_images(args.ood, test, space.shape, args.seed)
    dist_out = space.distance(outside, k)
    score = Ei.auroc(inside, dist_out)
    out.image("eigen-ood", Ei.ood_figure(inside, dist_out, ood_name, k, score).render())
    ratio = space.explained_ratio
    numbers = {"data": data_name, "train_images": len(train), "k": k, "explained_variance": float(ratio[:k].sum()),
               "components_for_90pct": int((ratio.cumsum(0) < 0.9).sum()) + 1,
               "reconstruction_rmse": float((test - space.reconstruct(test, k)).pow(2).mean().sqrt()),
               "ood": ood_name, "ood_auroc": score, "distance_in": float(inside.mean()),
               "distance_out": float(dist_out.mean())}
    _report(numbers)
    out.json("eigen", numbers)
    out.close()
    return 0


def _ood_images(ood: str, test, shape: tuple[int, int, int], seed: int):  # noqa: ANN001, ANN202
    """Out-of-distribution images: pixel-shuffled test images, uniform noise, or another data set's test split."""
    import torch
    from omegaconf import OmegaConf

    from dlx import build, config
    from dlx.analysis import eigen as Ei

    g = torch.Generator().manual_seed(seed)
    if ood == "noise":
        return Ei.shuffled_pixels(test, g), "noise (pixels shuffled across images)"
    if ood == "uniform":
        return torch.rand(test.shape, generator=g), "uniform noise"
    cfg, _ = config.check([f"data={ood}", "data.normalize=false"])
    OmegaConf.resolve(cfg)
    other = Ei.images(build.build_data(cfg, torch.device("cpu")), "test", len(test))
    return Ei.conform(other, shape), ood


def gradflow(args: argparse.Namespace) -> int:
    from dlx.analysis import gradflow as G
    from dlx.analysis.loading import Outputs, output_folder

    steps, norms = G.read(args.run_dir)  # metrics.jsonl is all this needs: works while the run trains
    out = Outputs(output_folder(args.out, args.run_dir, "viz"), step=int(steps[-1]))
    out.image("gradflow", G.over_training_figure(steps, norms).render())
    out.image("gradflow-layers", G.profile_figure(steps, norms).render())
    numbers = G.summary(steps, norms)
    _report({"layers": len(norms), "logged_steps": len(steps), "first_to_last_ratio": numbers["first_to_last_ratio"]})
    out.json("gradflow", numbers)
    out.close()
    return 0


def dream(args: argparse.Namespace) -> int:
    import torch

    from dlx.analysis import dream as D
    from dlx.analysis.images import side_by_side, to_pil
    from dlx.analysis.layers import find_layer
    from dlx.analysis.loading import display, normalize

    _check_positive(steps=args.steps, lr=args.lr, octaves=args.octaves, size=args.size)
    run, out = _open(args)
    layer = find_layer(run.model, args.layer)
    pixels = _input_pixels(run, args)
    x = normalize(run.data, pixels)
    ones = torch.ones_like(pixels[:, :, :1, :1])
    lo, hi = normalize(run.data, 0 * ones), normalize(run.data, ones)
    before = float(D.objective(run.model, layer, x))
    dreamed = D.deep_dream(run.model, layer, x, args.steps, args.lr, args.jitter, args.octaves, args.octave_scale,
                           lo, hi, args.seed)
    after = float(D.objective(run.model, layer, dreamed))
    result = display(run.data, dreamed)
    out.image(f"dream-{args.layer}", side_by_side([to_pil(pixels[0]), to_pil(result[0])],
                                                  ["input", f"dream on {args.layer}"]))
    numbers = {"layer": args.layer, "objective_before": before, "objective_after": after}
    _report(numbers)
    out.json(f"dream-{args.layer}", numbers)
    out.close()
    return 0


def invert(args: argparse.Namespace) -> int:
    from dlx.analysis import invert as I
    from dlx.analysis.images import side_by_side, to_pil
    from dlx.analysis.layers import find_layer
    from dlx.analysis.loading import normalize

    _check_positive(steps=args.steps, lr=args.lr)
    run, out = _open(args)
    layer = find_layer(run.model, args.layer)
    pixels = _input_pixels(run, args)
    recon, numbers = I.invert(run.model, layer, pixels, lambda p: normalize(run.data, p), args.steps, args.lr,
                              args.tv_weight, args.beta, seed=args.seed)
    numbers = {"layer": args.layer, **numbers, "pixel_rmse": float((recon - pixels).pow(2).mean().sqrt())}
    out.image(f"invert-{args.layer}", side_by_side([to_pil(pixels[0]), to_pil(recon[0])],
                                                   ["input", f"from {args.layer}"]))
    _report(numbers)
    out.json(f"invert-{args.layer}", numbers)
    out.close()
    return 0


def style(args: argparse.Namespace) -> int:
    from dlx.analysis import style as S
    from dlx.analysis.images import side_by_side, to_pil
    from dlx.analysis.loading import Outputs, load_image, load_run
    from dlx.errors import DlxError

    _check_positive(size=args.size, steps=args.steps, lr=args.lr)
    for f in (args.content, args.style):
        if not f.is_file():
            raise DlxError(f"image file {f} does not exist")
    from dlx import runtime

    device = runtime.pick_device(args.device)
    ext, note = None, ""
    if args.backbone in ("auto", "vgg"):
        try:
            ext = S.vgg_extractor(device)
        except DlxError as e:
            if args.backbone == "vgg" or args.run is None:
                hint = "" if args.backbone == "vgg" else "; pass --run RUN_DIR to use a trained dlx conv net instead"
                raise DlxError(f"{e}{hint}") from None
            note = f"{e}: using --run"
    if ext is None:
        if args.run is None:
            raise DlxError("--backbone run needs --run RUN_DIR (a trained dlx conv net)")
        ext = S.run_extractor(load_run(args.run, args.device))
    if note:
        print(note)
    content = load_image(args.content, ext.channels, args.size).to(device)
    style_img = load_image(args.style, ext.channels, args.size).to(device)
    result, numbers = S.transfer(ext, content, style_img, args.steps, args.lr, args.content_weight,
                                 args.style_weight, args.optimizer)
    folder = Path(args.out) if args.out else (args.run / "viz" if args.run else None)
    if folder is None:
        raise DlxError("give --out DIR for the output files")
    out = Outputs(folder)
    out.image("style", side_by_side([to_pil(content[0]), to_pil(style_img[0]), to_pil(result[0])],
                                    ["content", "style", "result"]))
    numbers = {"features": ext.name, "style_layers": ",".join(ext.style), "content_layer": ext.content, **numbers}
    _report(numbers)
    out.json("style", numbers)
    out.close()
    return 0


def regress(args: argparse.Namespace) -> int:
    from dlx.analysis import regress as R
    from dlx.analysis.uncertainty import require_dropout
    from dlx.errors import ConfigError

    if args.mc_samples is not None and args.mc_samples < 2:
        raise ConfigError("--mc-samples", args.mc_samples, "MC-dropout needs at least 2 passes (e.g. 50)")
    run, out = _open(args, images=False)
    if args.mc_samples:
        require_dropout(run.model, str(run.run_dir))
    fig, numbers = R.regress_plot(run, args.mc_samples)
    out.image("regress", fig.render())
    sigma = numbers["sigma"]
    _report({"sigma_left": sigma[0], "sigma_right": sigma[-1], **{k: v for k, v in numbers.items()
                                                                   if k == "sigma_correlation"}})
    out.json("regress", numbers)
    out.close()
    return 0
