"""Generative adversarial nets (Goodfellow et al. 2014), trained by the paper's Algorithm 1.

Each training step is one iteration of Algorithm 1 on a batch of B real images:
    for k steps:   take the next B/k real images and B/k noise vectors; update D on the loss group's
                   discriminator loss (optimizer "disc": the discriminator's parameters only)
    once:          B/k noise vectors; update G on the generator loss (optimizer "gen": the generator only)
The generator's samples are detached for D's update, and D's parameters are left out of G's optimizer,
so each optimizer only ever moves its own network. Images are pixels mapped to [-1, 1] (tanh outputs),
whatever data.normalize says.

Metrics: d_loss, g_loss, d_real = mean D(x), d_fake = mean D(G(z)) (probabilities); at each validation
fid (a Frechet distance in the features of a classifier trained on the same data, dlx.tasks.frechet),
judge_conf (how confidently that classifier assigns samples to a class) and judge_acc (its accuracy on
real validation images, to know the judge is worth listening to). Visuals: samples from a fixed noise
batch at every validation, and real images for comparison.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from dlx.errors import ConfigError
from dlx.losses.gan import GANLoss
from dlx.tasks.base import Step, Task
from dlx.tasks.frechet import Judge, load_judge, train_judge
from dlx.tasks.pixels import PixelRange, first_batch

NUM_SAMPLES = 64  # fixed-noise samples in TensorBoard


@contextmanager
def frozen(net: torch.nn.Module) -> Iterator[None]:
    """Turn off gradients of `net`'s parameters for a while (inputs still get gradients through it)."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class GAN(Task):
    """Adversarial training of `model.generator` against `model.discriminator`.

    Args:
        model: a module with `generator` (z (B, latent_dim) -> images in [-1, 1]), `discriminator`
            (images -> logits (B,)) and `latent_dim` (dlx.models.dcgan, dlx.models.mlp_gan).
        loss: GANLoss (loss=gan_nonsat or gan_minimax).
        k: discriminator updates per generator update (Algorithm 1's k).
        fid_samples: generated (and real training) images per Frechet distance; 0 turns the score off.
        judge_steps: training batches of the self-trained judge classifier.
        judge_run: a classify run folder whose best weights judge instead (null = train one).
    """

    monitor = "val/fid"
    monitor_mode = "min"

    def __init__(self, model, loss, k: int = 1, fid_samples: int = 1000, judge_steps: int = 300,  # noqa: ANN001
                 judge_run: str | None = None):
        if not isinstance(loss, GANLoss):
            raise ConfigError("loss", type(loss).__name__, "task=gan needs loss=gan_nonsat or loss=gan_minimax")
        super().__init__(model, loss)
        if k < 1:
            raise ConfigError("task.k", k, "must be an integer >= 1")
        if fid_samples == 1 or fid_samples < 0:
            raise ConfigError("task.fid_samples", fid_samples, "must be 0 (off) or >= 2")
        self.k, self.fid_samples, self.judge_steps, self.judge_run = k, fid_samples, judge_steps, judge_run
        if not fid_samples:
            self.monitor = "val/g_loss"  # no quality score: keep the last weights' neighbour by G's loss
        self.pixels = PixelRange()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("fixed_z", torch.randn(NUM_SAMPLES, model.latent_dim, generator=g))
        self.judge: Judge | None = None  # a plain object: rebuilt at fit start, not part of the weights

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"gen": list(self.model.generator.parameters()), "disc": list(self.model.discriminator.parameters())}

    # ---- set-up -------------------------------------------------------------------------------
    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)
        if not self.fid_samples:
            return
        if self.judge_run:
            self.judge = load_judge(Path(self.judge_run), data, self.pixels.to_pixels)
        else:
            if data.num_classes < 2:
                raise ConfigError("task.fid_samples", self.fid_samples, "the judge needs labelled data; set it to 0")
            self.judge = train_judge(data, self.pixels.to_pixels, self.judge_steps)
        self.judge.fit_real(self.pixels.to_pixels(first_batch(data, "train", self.fid_samples)))

    # ---- training -----------------------------------------------------------------------------
    def real(self, x: Tensor) -> Tensor:
        """Data space -> the generator's range [-1, 1]."""
        return self.pixels.to_pixels(x) * 2 - 1

    def noise(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.model.latent_dim, device=device, generator=generator)

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        real_all = self.real(batch[0])
        if len(real_all) < self.k:
            raise ConfigError("task.k", self.k, f"needs batches of at least k images (got {len(real_all)})")
        G, D = self.model.generator, self.model.discriminator
        d_losses, d_real, d_fake = [], [], []
        for real in real_all.tensor_split(self.k):  # k minibatches of m = B/k real images
            fake = G(self.noise(len(real), real.device)).detach()  # no gradient reaches G from D's update
            real_logits, fake_logits = D(real), D(fake)
            d_loss = self.loss.discriminator(real_logits, fake_logits)
            step("disc", d_loss)
            d_losses.append(d_loss.detach())
            d_real.append(real_logits.detach().float().sigmoid().mean())
            d_fake.append(fake_logits.detach().float().sigmoid().mean())
        with frozen(D):  # G's loss backpropagates through D without leaving gradients on D's weights
            g_loss = self.loss.generator(D(G(self.noise(len(real), real.device))))
            step("gen", g_loss)
        return {"d_loss": torch.stack(d_losses).mean(), "g_loss": g_loss.detach(),
                "d_real": torch.stack(d_real).mean(), "d_fake": torch.stack(d_fake).mean()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        real = self.real(batch[0])
        g = torch.Generator(device=real.device).manual_seed(1)
        fake = self.model.generator(self.noise(len(real), real.device, g))
        real_logits, fake_logits = self.model.discriminator(real), self.model.discriminator(fake)
        return {"d_loss": self.loss.discriminator(real_logits, fake_logits), "g_loss": self.loss.generator(fake_logits),
                "d_real": real_logits.float().sigmoid().mean(), "d_fake": fake_logits.float().sigmoid().mean()}

    @torch.no_grad()
    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        if self.judge is None:
            return {}
        g = torch.Generator(device=self.fixed_z.device).manual_seed(2)  # the same noise at every validation
        z = self.noise(self.fid_samples, self.fixed_z.device, g)
        images = torch.cat([self.generate(chunk) for chunk in z.split(1024)])
        return self.judge.score(images)

    # ---- generation ---------------------------------------------------------------------------
    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.noise(n, self.fixed_z.device, generator)

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Images in [0, 1] from noise z (B, latent_dim), with the generator in eval mode (BN running stats)."""
        G = self.model.generator
        was = G.training
        G.eval()
        out = G(z).float().add(1).div(2).clamp(0, 1)
        G.train(was)
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.generate(self.prior(n, generator))

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {"samples": self.generate(self.fixed_z), "real": self.pixels.to_pixels(batch[0][:NUM_SAMPLES])}
