"""`dlx lr-find`: Smith's learning-rate range test on the run's own data, model and loss."""

import json
from pathlib import Path

from tests.conftest import run_dirs, run_dlx


def findings(workdir: Path, *args: str) -> tuple[dict, str]:
    done = run_dlx("lr-find", *args, "--out", str(workdir / "lr"), cwd=workdir)
    assert done.returncode == 0, done.stderr
    return json.loads((workdir / "lr" / "lr_find.json").read_text()), done.stdout


def test_suggestion_lies_where_the_loss_falls_on_digits(workdir: Path) -> None:
    result, out = findings(workdir, "--steps", "80")
    lrs, smooth = result["lr"], result["smoothed_loss"]
    # The lr grows exponentially from --start, one factor per step.
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert lrs[0] == 1e-7 and max(ratios) / min(ratios) < 1 + 1e-9
    # The loss falls at the suggestion: between where it first drops 2% below its start and where it is lowest.
    falls_from = next(i for i, v in enumerate(smooth) if v < 0.98 * smooth[0])
    lowest = min(range(len(smooth)), key=smooth.__getitem__)
    s = result["suggested_step"]
    assert falls_from <= s <= lowest and lrs[s] == result["suggested_lr"]
    assert smooth[lowest] < 0.8 * smooth[0]  # the range did train the copy: the test saw the loss fall
    # ...and it blew up past the bottom: the divergence point is above the suggestion.
    assert result["divergence_lr"] > result["suggested_lr"]
    assert f"suggested optimizer.lr={result['suggested_lr']:.3g}" in out
    assert f"the loss diverges at lr={result['divergence_lr']:.3g}" in out
    assert (workdir / "lr" / "lr_find.png").stat().st_size > 1000
    assert run_dirs(workdir) == [] and not (workdir / "experiments").exists()  # no run, no checkpoint


def test_reconstruction_task_and_gan_refusal(workdir: Path) -> None:
    result, _ = findings(workdir, "task=reconstruct", "model=autoencoder", "loss=recon_mse", "--steps", "40",
                         "--end", "1")
    assert len(result["lr"]) > 10 and min(result["smoothed_loss"]) < result["smoothed_loss"][0]
    done = run_dlx("lr-find", "experiment=dcgan_mnist", "data=digits", cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("dlx: error: dlx lr-find tests one optimizer; task GAN has 2")
