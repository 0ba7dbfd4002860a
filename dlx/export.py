"""`dlx export RUN_DIR --format onnx|pt2 [--checkpoint best|last|FILE] [--out FILE]`: a trained model for serving.

The model is loaded as `dlx eval` loads it (the checkpoint's own config, eval mode: dropout off, BatchNorm on
its running statistics), on the CPU in float32, and exported with the data's input shape and a dynamic batch
dimension (`torch.export.Dim`):

- `onnx`: `torch.onnx.export(..., dynamo=True)` (needs `onnx` and `onnxscript`; the exporter folds constants),
  checked by running the file in ONNX Runtime (which fuses BatchNorm into the convolutions when it loads it).
- `pt2`: `torch.export.export` saved with `torch.export.save`, checked by loading it back (`torch.export.load`).

The check runs the exported model on test samples at a batch size other than the one it was traced with
(so the batch dimension really is dynamic) and compares every output with the PyTorch model's:
|exported - pytorch| <= ATOL + RTOL * |pytorch|. A GAN exports its generator (input: the latent vector).
A model that cannot be exported (or whose export disagrees) is one line saying why. Optional extra:
`pip install 'dlx[export]'` (onnx, onnxscript, onnxruntime).
"""

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

from dlx.errors import DlxError

FORMATS = ("onnx", "pt2")
RTOL, ATOL = 1e-4, 1e-5  # float32 on CPU; ONNX Runtime's fused kernels differ from PyTorch's in the last bits
TRACE_BATCH, CHECK_BATCH = 4, 7  # different sizes: a batch dimension baked in as a constant fails the check


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlx export", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("run_dir", type=Path, help="a run folder (experiments/<name>/<run-id>)")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (ONNX Runtime) or pt2 (torch.export)")
    p.add_argument("--checkpoint", default="best",
                   help="best (default), last, or a checkpoint file (e.g. best-120.pt from trainer.save_top_k)")
    p.add_argument("--out", type=Path, default=None, help="output file (default RUN_DIR/export/model.<format>)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    result = export(args.run_dir, args.format, args.checkpoint, args.out)
    print(f"{result['file']}  ({result['format']}, input {result['input_shape']} with a dynamic batch dimension; "
          f"checked on {result['check']['samples']} test samples: max |diff| {result['check']['max_abs_diff']:.2e} "
          f"within rtol={RTOL:g}, atol={ATOL:g})")
    return 0


def export(run_dir: Path | str, fmt: str, which: str = "best", out: Path | None = None) -> dict[str, Any]:
    """Export a run's model to `out` (default RUN_DIR/export/model.<fmt>), check it, write <out>.json; the record.

    Raises:
        DlxError: the extra is missing, the model cannot be exported, or the export disagrees with PyTorch.
    """
    if fmt not in FORMATS:
        raise DlxError(f"--format {fmt!r} is not allowed: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require("onnx", "onnxscript", "onnxruntime")
    import torch

    from dlx.analysis.loading import load_run, test_images

    run = load_run(run_dir, "cpu", which)
    module, inputs, what = export_target(run, test_images)
    out = Path(out) if out else Path(run_dir) / "export" / f"model.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    trace, check = inputs[:TRACE_BATCH], inputs[:CHECK_BATCH]
    with torch.no_grad():
        expected = outputs_of(module(check))
    batch = torch.export.Dim("batch", min=1)
    name = type(module).__name__
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' notes on internals (RNN flat weights) are not the user's
            if fmt == "pt2":
                program = torch.export.export(module, (trace,), dynamic_shapes=({0: batch},))
                tmp = out.with_name(f".tmp-{out.name}")  # torch.export.save wants the .pt2 suffix
                torch.export.save(program, tmp)
                tmp.replace(out)
            else:
                onnx_export(module, trace, batch, out)
    except DlxError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporters' own errors (unsupported ops, data-dependent control flow)
        raise DlxError(f"{name} cannot be exported to {fmt}: {reason(e)}") from None
    got = run_onnx(out, check) if fmt == "onnx" else run_pt2(out, check)
    diff = compare(expected, got, f"{name} exported to {fmt}")
    record = {"file": str(out), "format": fmt, "run_dir": str(run.run_dir), "checkpoint": str(run.checkpoint),
              "step": run.step, "model": name, "exports": what, "input_shape": ["batch", *inputs.shape[1:]],
              "output_shapes": [["batch", *o.shape[1:]] for o in expected],
              "check": {"samples": len(check), "max_abs_diff": diff, "rtol": RTOL, "atol": ATOL}}
    from dlx.rundir import write_json

    write_json(out.with_name(out.name + ".json"), record)
    return record


def require(*packages: str) -> None:
    """One line naming the extra when an exporter package is missing."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise DlxError(f"dlx export --format onnx needs {', '.join(missing)}: pip install 'dlx[export]'")


def export_target(run: Any, test_images: Any) -> tuple[Any, Any, str]:
    """The module to export, float32 inputs for it (N, ...) on the CPU, and what it is, in words."""
    import torch

    model = run.model.float().eval()
    if hasattr(model, "generator") and hasattr(model, "latent_dim"):  # a GAN: the generator is the product
        g = torch.Generator().manual_seed(0)
        return model.generator.eval(), torch.randn(CHECK_BATCH, model.latent_dim, generator=g), "generator (z -> x)"
    x = test_images(run, "test", CHECK_BATCH)[0]
    if not x.is_floating_point():  # token sequences stay integer inputs
        return model, x, "model"
    return model, x.float(), "model"


def onnx_export(module: Any, x: Any, batch: Any, out: Path) -> None:
    import torch

    tmp = out.with_name(f".tmp-{out.name}")
    # onnxscript/onnx_ir log notes on their own graph building (empty attributes) that are not the user's.
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(module, (x,), dynamo=True, input_names=["input"], dynamic_shapes=({0: batch},),
                                    verbose=False)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    if program is None:
        raise DlxError("torch.onnx.export returned no program")
    program.save(str(tmp))
    tmp.replace(out)


def outputs_of(y: Any) -> list[Any]:
    """A model's output(s) as a flat list of tensors (VAEs and heads may return tuples)."""
    import torch

    if isinstance(y, torch.Tensor):
        return [y.float()]
    if isinstance(y, list | tuple):
        return [t for part in y for t in outputs_of(part)]
    if isinstance(y, dict):
        return [t for part in y.values() for t in outputs_of(part)]
    raise DlxError(f"the model returns {type(y).__name__}, not tensors: it cannot be exported")


def run_onnx(path: Path, x: Any) -> list[Any]:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(y).float() for y in session.run(None, {session.get_inputs()[0].name: x.numpy()})]


def run_pt2(path: Path, x: Any) -> list[Any]:
    import torch

    program = torch.export.load(str(path))
    with torch.no_grad():
        return outputs_of(program.module()(x))


def compare(expected: list[Any], got: list[Any], what: str) -> float:
    """Largest |got - expected|; DlxError when any output is outside ATOL + RTOL * |expected| or shapes differ."""
    if len(got) != len(expected):
        raise DlxError(f"{what} gives {len(got)} outputs instead of {len(expected)}")
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        if tuple(g.shape) != tuple(e.shape):
            raise DlxError(f"{what} gives an output of shape {tuple(g.shape)} instead of {tuple(e.shape)}")
        diff = (g - e).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        if not bool((diff <= ATOL + RTOL * e.abs()).all()):
            raise DlxError(f"{what} disagrees with the PyTorch model: max |diff| {float(diff.max()):.3g} "
                           f"exceeds atol={ATOL:g} + rtol={RTOL:g} * |output|")
    return worst


def reason(e: BaseException) -> str:
    """The first informative line of an exporter error."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0][:300] if lines else type(e).__name__)
