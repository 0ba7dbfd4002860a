"""A Frechet distance between real and generated images, in the features of a classifier dlx trained itself.

FID (Heusel et al. 2017) compares Gaussians fitted to the penultimate features of Inception-v3:

    d^2 = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))

Inception's weights cannot be downloaded here and do not suit 8x8 digits anyway, so the "judge" is a
small conv classifier trained on the run's own training split at fit start (or a classify run's best
weights, `task.judge_run`), and its penultimate features replace Inception's. Scores are comparable
only between runs with the same judge (same data, judge steps and seed); they are not the published
FID numbers. The judge also says how confidently it assigns generated images to a class.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.errors import ConfigError

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


def train_judge(data, to_pixels, steps: int, lr: float = 2e-3) -> Judge:  # noqa: ANN001
    """Train a JudgeNet on the data's training split for `steps` batches (Adam), report its val accuracy."""
    from dlx.tasks.pixels import first_batch

    device = data.splits["train"][0].device
    x0 = to_pixels(first_batch(data, "train", 2048))
    mean, std = pixel_stats(x0)
    net = JudgeNet(x0.shape[1], data.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    done, epoch = 0, 0
    while done < steps:
        for batch in data.batches("train", epoch):
            loss = F.cross_entropy(net((to_pixels(batch[0]) - mean) / std), batch[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
        epoch += 1
    judge = Judge(net, mean, std)
    judge.acc = _accuracy(judge, data, to_pixels)
    log.info("FID judge: %d steps, val accuracy %.4f", steps, judge.acc)
    return judge


def load_judge(run_dir: Path, data, to_pixels) -> Judge:  # noqa: ANN001
    """A judge from a classify run's best (or last) weights; inputs standardized as that run's data were."""
    from omegaconf import OmegaConf

    from dlx import build, checkpoint
    from dlx.tasks.pixels import first_batch

    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / "best.pt"
    if not path.exists():
        path = run_dir / "checkpoints" / "last.pt"
    state = checkpoint.load(path)
    cfg = OmegaConf.create(state["config"])
    if cfg.data.get("num_classes") != data.num_classes or "classify" not in str(cfg.task.get("_target_")):
        raise ConfigError("task.judge_run", str(run_dir), f"must be a classify run on data with {data.num_classes} "
                          "classes (the data of this run)")
    build.check_targets(cfg)
    net = build.create(cfg.model, "model")
    net.load_state_dict({k[len("model."):]: v for k, v in state["task"].items() if k.startswith("model.")})
    device = data.splits["train"][0].device
    x0 = to_pixels(first_batch(data, "train", 2048))
    mean, std = pixel_stats(x0) if cfg.data.get("normalize", True) else (torch.zeros(1), torch.ones(1))
    judge = Judge(net.to(device), mean.to(device), std.to(device))
    judge.acc = _accuracy(judge, data, to_pixels)
    return judge


def _accuracy(judge: Judge, data, to_pixels) -> float:  # noqa: ANN001
    right = total = 0
    for batch in data.batches("val"):
        _, probs = judge.features_and_probs(to_pixels(batch[0]))
        right += int((probs.argmax(-1) == batch[1]).sum())
        total += len(batch[1])
    return right / max(total, 1)
