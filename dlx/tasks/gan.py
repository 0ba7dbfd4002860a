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

Class-conditional (`conditional=true`, Mirza & Osindero 2014): both nets also get the class label y
(the model is built with `num_classes`). D scores (real image, its label) against (G(z, y), y), where the
fakes take the labels of the batch's real images, so D learns "a real image of class y" and G must draw
the class it is given. The fixed samples show one class per row of 8; judge_class_acc is the share of
generated images that the judge classifies as the class they were generated for (chance is 1 / K).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from dlx.errors import ConfigError
from dlx.losses.gan import GANLoss
from dlx.tasks.base import Step, Task, TaskSpec
from dlx.tasks.frechet import SCORES, Judge, load_judge, train_judge
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
        conditional: give both nets the class label (the data's labels; a class-conditional GAN).
    """

    monitor = "val/fid"
    monitor_mode = "min"

    def __init__(self, model, loss, k: int = 1, fid_samples: int = 1000, judge_steps: int = 300,  # noqa: ANN001
                 judge_run: str | None = None, conditional: bool = False):
        if not isinstance(loss, GANLoss):
            raise ConfigError("loss", type(loss).__name__, "task=gan needs loss=gan_nonsat or loss=gan_minimax")
        super().__init__(model, loss)
        if k < 1:
            raise ConfigError("task.k", k, "must be an integer >= 1")
        if fid_samples == 1 or fid_samples < 0:
            raise ConfigError("task.fid_samples", fid_samples, "must be 0 (off) or >= 2")
        self.k, self.fid_samples, self.judge_steps, self.judge_run = k, fid_samples, judge_steps, judge_run
        self.num_classes = getattr(model, "num_classes", 0)  # the model's label input (0: none)
        if conditional and not self.num_classes:
            raise ConfigError("task.conditional", True, f"needs a model that takes class labels (dcgan, mlp_gan); "
                              f"{type(model).__name__} was built with num_classes=0")
        if not conditional and self.num_classes:
            raise ConfigError("model.num_classes", self.num_classes, "is for task.conditional=true; 0 otherwise")
        self.conditional = conditional
        if not fid_samples:
            self.monitor = "val/g_loss"  # no quality score: keep the last weights' neighbour by G's loss
        self.pixels = PixelRange()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("fixed_z", torch.randn(NUM_SAMPLES, model.latent_dim, generator=g))
        # One class per row of 8 in the TensorBoard grid (conditional); unused otherwise.
        self.register_buffer("fixed_y", (torch.arange(NUM_SAMPLES) // 8) % max(self.num_classes, 1))
        self.judge: Judge | None = None  # a plain object: rebuilt at fit start, not part of the weights

    def spec(self) -> TaskSpec:
        # k discriminator updates per generator update: each schedule is sized in its own optimizer's updates.
        # The judge's scores at each validation only with a judge (fid_samples > 0); judge_class_acc when conditional.
        end = (*SCORES, *(("judge_class_acc",) if self.conditional else ())) if self.fid_samples else ()
        return TaskSpec(updates={"gen": 1, "disc": self.k}, end_metrics=end)

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"gen": list(self.model.generator.parameters()), "disc": list(self.model.discriminator.parameters())}

    # ---- set-up -------------------------------------------------------------------------------
    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)
        if self.conditional and data.num_classes != self.num_classes:
            raise ConfigError("model.num_classes", self.num_classes, f"the data has {data.num_classes} classes")
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

    def labels(self, batch: tuple[Tensor, ...]) -> Tensor | None:
        """The batch's class labels (B,) for a conditional GAN; None (no label input) otherwise."""
        return batch[1] if self.conditional else None

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        real_all, y_all = self.real(batch[0]), self.labels(batch)
        if len(real_all) < self.k:
            raise ConfigError("task.k", self.k, f"needs batches of at least k images (got {len(real_all)})")
        G, D = self.model.generator, self.model.discriminator
        d_losses, d_real, d_fake = [], [], []
        ys = y_all.tensor_split(self.k) if y_all is not None else [None] * self.k
        for real, y in zip(real_all.tensor_split(self.k), ys, strict=True):  # k minibatches of m = B/k real images
            fake = G(self.noise(len(real), real.device), y).detach()  # no gradient reaches G from D's update
            real_logits, fake_logits = D(real, y), D(fake, y)
            d_loss = self.loss.discriminator(real_logits, fake_logits)
            step("disc", d_loss)
            d_losses.append(d_loss.detach())
            d_real.append(real_logits.detach().float().sigmoid().mean())
            d_fake.append(fake_logits.detach().float().sigmoid().mean())
        with frozen(D):  # G's loss backpropagates through D without leaving gradients on D's weights
            g_loss = self.loss.generator(D(G(self.noise(len(real), real.device), y), y))
            step("gen", g_loss)
        return {"d_loss": torch.stack(d_losses).mean(), "g_loss": g_loss.detach(),
                "d_real": torch.stack(d_real).mean(), "d_fake": torch.stack(d_fake).mean()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        real, y = self.real(batch[0]), self.labels(batch)
        g = torch.Generator(device=real.device).manual_seed(1)
        fake = self.model.generator(self.noise(len(real), real.device, g), y)
        real_logits, fake_logits = self.model.discriminator(real, y), self.model.discriminator(fake, y)
        return {"d_loss": self.loss.discriminator(real_logits, fake_logits), "g_loss": self.loss.generator(fake_logits),
                "d_real": real_logits.float().sigmoid().mean(), "d_fake": fake_logits.float().sigmoid().mean()}

    @torch.no_grad()
    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        if self.judge is None:
            return {}
        g = torch.Generator(device=self.fixed_z.device).manual_seed(2)  # the same noise at every validation
        z = self.noise(self.fid_samples, self.fixed_z.device, g)
        y = self.class_labels(self.fid_samples) if self.conditional else None  # classes in equal shares
        images = torch.cat([self.generate(z[i : i + 1024], None if y is None else y[i : i + 1024])
                            for i in range(0, len(z), 1024)])
        scores = self.judge.score(images)
        if y is not None:  # does the judge see the class each image was generated for?
            scores["judge_class_acc"] = (self.judge.features_and_probs(images)[1].argmax(-1) == y).float().mean()
        return scores

    # ---- generation ---------------------------------------------------------------------------
    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.noise(n, self.fixed_z.device, generator)

    def class_labels(self, n: int, label: int | None = None, per_row: int = 1) -> Tensor:
        """Labels (n,) for conditional samples: all `label`, else classes 0, 1, ... each for `per_row` images."""
        if label is not None:
            if not 0 <= label < self.num_classes:
                raise ConfigError("--class", label, f"a class of this run: 0..{self.num_classes - 1}")
            return torch.full((n,), label, device=self.fixed_z.device)
        return (torch.arange(n, device=self.fixed_z.device) // per_row) % self.num_classes

    @torch.no_grad()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images in [0, 1] from noise z (B, latent_dim) [of classes y (B,)], in the mode the caller set: the loop's
        evaluations (visuals, the judge's scores) and `dlx sample` run in eval mode (BatchNorm's running statistics)."""
        return self.model.generator(z, y).float().add(1).div(2).clamp(0, 1)

    def sample(self, n: int, generator: torch.Generator | None = None, label: int | None = None,
               per_row: int = 8) -> Tensor:
        """n images; a conditional GAN draws class `label`, or one class per run of `per_row` images."""
        if label is not None and not self.conditional:
            raise ConfigError("--class", label, "needs a class-conditional run (task.conditional=true)")
        y = self.class_labels(n, label, per_row) if self.conditional else None
        return self.generate(self.prior(n, generator), y)

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        y = self.fixed_y if self.conditional else None
        return {"samples": self.generate(self.fixed_z, y), "real": self.pixels.to_pixels(batch[0][:NUM_SAMPLES])}
