"""A Frechet distance between real and generated images, in the features of a classifier dlx trained itself.

FID (Heusel et al. 2017) compares Gaussians fitted to the penultimate features of Inception-v3:

    d^2 = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))

Inception's weights cannot be downloaded here and do not suit 8x8 digits anyway, so the "judge" is a
small conv classifier trained on the run's own training split by the training loop, once per data set
and cached beside the decoded data (`train_judge`), or a classify run's best weights (`task.judge_run`),
and its penultimate features replace Inception's. Scores are comparable
only between runs with the same judge (same data, judge steps and seed); they are not the published
FID numbers. The judge also says how confidently it assigns generated images to a class.
"""

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from dlx.errors import ConfigError, DlxError

log = logging.getLogger("dlx")


class JudgeNet(nn.Module):
    """A LeNet-like classifier for any image size: two conv blocks, global average pool, fc features."""

    def __init__(self, in_channels: int, num_classes: int, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(256, features), nn.ReLU(),
        )
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """d^2 between N(mu1, cov1) and N(mu2, cov2) (float64); tr((S1 S2)^(1/2)) via a symmetric form."""
    # (S1 S2)^(1/2) has the eigenvalues of S1^(1/2) S2 S1^(1/2), which is symmetric PSD.
    vals, vecs = torch.linalg.eigh(cov1)
    root1 = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    middle = root1 @ cov2 @ root1
    tr_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_root


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (float64) of feature rows (N, D)."""
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


SCORES = ("fid", "judge_conf", "judge_acc")  # the names Judge.score returns


class Judge:
    """The classifier, its input normalization and the real images' feature statistics.

    Not an nn.Module on purpose: it is rebuilt at every fit start and stays out of the task's weights.
    Images come in as pixels in [0, 1], (B, C, H, W).
    """

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor):
        self.net, self.mean, self.std = net.eval(), mean, std
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.penultimate = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        self.real: tuple[Tensor, Tensor] | None = None
        self.acc = float("nan")

    def _inputs(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def features_and_probs(self, pixels: Tensor, batch: int = 1024) -> tuple[Tensor, Tensor]:
        """Penultimate features (the last Linear layer's input) and class probabilities."""
        feats, probs = [], []
        grab = {}
        hook = self.penultimate.register_forward_pre_hook(lambda m, args: grab.__setitem__("f", args[0]))
        try:
            for chunk in pixels.split(batch):
                probs.append(self.net(self._inputs(chunk)).float().softmax(-1))
                feats.append(grab["f"].flatten(1).float())
        finally:
            hook.remove()
        return torch.cat(feats), torch.cat(probs)

    def fit_real(self, pixels: Tensor) -> None:
        self.real = gaussian_stats(self.features_and_probs(pixels)[0])

    def score(self, pixels: Tensor) -> dict[str, Tensor]:
        """fid: the Frechet distance to the real statistics; judge_conf: mean top class probability."""
        feats, probs = self.features_and_probs(pixels)
        mu, cov = gaussian_stats(feats)
        fid = frechet_distance(*self.real, mu, cov).float()
        return {"fid": fid, "judge_conf": probs.max(-1).values.mean(), "judge_acc": torch.tensor(self.acc)}


def pixel_stats(pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (1, C, 1, 1) of pixel images."""
    dims = (0, 2, 3)
    return pixels.mean(dims, keepdim=True), pixels.std(dims, keepdim=True).clamp_min(1e-6)


JUDGE_VERSION = 1  # part of the cache key: bump when JudgeNet or its training recipe changes


def judge_key(data, steps: int) -> str:  # noqa: ANN001 - a TensorData
    """What a trained judge depends on: the data set's class, settings and training tensors, and the steps."""
    x, y = data.splits["train"][0], data.splits["train"][1]
    inputs = data_space(data)  # the judge reads the data module's inputs: their scaling is part of what it learnt
    h = hashlib.sha256(f"{JUDGE_VERSION}|{type(data).__qualname__}|{inputs}|{steps}|{tuple(x.shape)}".encode())
    h.update(x.cpu().contiguous().numpy().tobytes())
    h.update(y.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_space(data) -> tuple[Tensor, Tensor]:  # noqa: ANN001 - a TensorData
    """(mean, std), each (1, C, 1, 1) or scalars, with (pixels - mean) / std = the data module's model inputs."""
    scale, shift = getattr(data, "scale", None), getattr(data, "shift", None)  # None: inputs are not uint8 images
    if scale is None:
        return torch.zeros(()), torch.ones(())
    std = 1 / (255 * scale)
    return -shift * std, std


def train_judge(data, to_pixels, steps: int, lr: float = 2e-3) -> Judge:  # noqa: ANN001
    """A JudgeNet trained for `steps` batches on the data's training split by the training loop of `dlx train`
    (a classify run), once per data set: the run is cached in `<data.root>/.dlx-cache/judges/<key>/`, beside the
    decoded data, and later runs, resumes and the other ranks of a data-parallel run load it (dlx.analysis.loading).
    A file lock makes parallel jobs wait for the one that trains it."""
    import fcntl

    from dlx import checkpoint
    from dlx.analysis.loading import load_run

    device = data.splits["train"][0].device
    folder = judge_folder(data, steps)
    folder.mkdir(parents=True, exist_ok=True)
    rng = checkpoint.rng_state()  # training and loading seed themselves: the calling run's stream stays as it was
    trained = False
    try:
        with open(folder.with_name(folder.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another job (or rank) training this judge: wait for it, then load
            if not (folder / "judge.json").is_file():
                fit_judge(data, steps, lr, folder, device)
                trained = True
        net = load_run(folder, device=str(device), with_data=False).model
    finally:
        checkpoint.set_rng_state(rng)
    mean, std = data_space(data)
    judge = Judge(net, mean.to(device), std.to(device))
    judge.acc = _accuracy(judge, data, to_pixels)
    # The calling run's one line about its judge; the judge's own lines are in its folder's train.log.
    log.info("FID judge: %s %s (a JudgeNet, %d steps), val accuracy %.4f", "trained in" if trained else "loaded from",
             folder, steps, judge.acc)
    return judge


def judge_folder(data, steps: int) -> Path:  # noqa: ANN001 - a TensorData
    return Path(data.root).absolute() / ".dlx-cache" / "judges" / judge_key(data, steps)


def fit_judge(data, steps: int, lr: float, folder: Path, device: torch.device) -> None:  # noqa: ANN001
    """Train the judge as a classify run in `folder` with the loop of `dlx train`, on this process's data module
    (unsharded: the judge of a data-parallel run sees the whole training split)."""
    import copy

    from omegaconf import OmegaConf, open_dict

    from dlx import config, loop, prepare, rundir
    from dlx.runtime import StopSignal

    whole = copy.copy(data)  # shares the tensors
    whole.shard(0, 1)
    cfg = config.compose(["task=classify", "loss=cross_entropy", "optimizer=adam", f"optimizer.lr={lr}",
                          "scheduler=none", f"trainer.max_steps={steps}", f"trainer.val_every={steps}",
                          f"trainer.log_every={max(1, steps // 5)}", "trainer.progress=false",
                          f"trainer.device={device.type}", "trainer.precision=32",
                          f"trainer.deterministic={str(torch.are_deterministic_algorithms_enabled()).lower()}",
                          f"trainer.threads={torch.get_num_threads()}",  # the calling run's
                          f"paths.experiments={folder.parent}", "name=judge"])
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": f"{__name__}.JudgeNet", "in_channels": data.channels,
                                      "num_classes": data.num_classes})
        cfg.data = OmegaConf.create({"_target_": f"{type(data).__module__}.{type(data).__qualname__}",
                                     "channels": data.channels,
                                     "num_classes": data.num_classes})
    OmegaConf.resolve(cfg)
    with prepare.logging_to(folder):  # the judge's lines in its own train.log, not the calling run's
        log.info("FID judge: training a JudgeNet for %d steps (once for this data set)", steps)
        r = prepare.setup(cfg, folder, data=whole)
        try:
            with StopSignal() as stop:
                status = loop.fit(r, stop)
        finally:
            r.tracker.close()
    if status != "completed":
        raise KeyboardInterrupt  # stopped while training the judge: the run stops too (and trains it next time)
    rundir.write_config(folder, cfg)
    # A finished judge is marked by judge.json, not by a summary.json: it is no run to list among the
    # experiment's (tools that look for run folders by their summary.json pass it by).
    (folder / "summary.json").unlink(missing_ok=True)
    rundir.write_json(folder / "judge.json", {"steps": steps, **r.last_val})


def load_judge(run_dir: Path, data, to_pixels) -> Judge:  # noqa: ANN001
    """A judge from a classify run's best (or last) weights (dlx.analysis.loading.load_run); inputs standardized
    as that run's data were."""
    from dlx.analysis.loading import load_run
    from dlx.tasks.pixels import first_batch

    device = data.splits["train"][0].device
    try:
        run = load_run(run_dir, device=str(device), with_data=False)
    except DlxError as e:
        raise ConfigError("task.judge_run", str(run_dir), str(e)) from None
    cfg = run.cfg
    if cfg.data.get("num_classes") != data.num_classes or "classify" not in str(cfg.task.get("_target_")):
        raise ConfigError("task.judge_run", str(run_dir), f"must be a classify run on data with {data.num_classes} "
                          "classes (the data of this run)")
    x0 = to_pixels(first_batch(data, "train", 2048))
    mean, std = pixel_stats(x0) if cfg.data.get("normalize", True) else (torch.zeros(1), torch.ones(1))
    judge = Judge(run.model, mean.to(device), std.to(device))
    judge.acc = _accuracy(judge, data, to_pixels)
    return judge


def _accuracy(judge: Judge, data, to_pixels) -> float:  # noqa: ANN001
    right = total = 0
    for batch in data.batches("val"):
        _, probs = judge.features_and_probs(to_pixels(batch[0]))
        right += int((probs.argmax(-1) == batch[1]).sum())
        total += len(batch[1])
    return right / max(total, 1)
