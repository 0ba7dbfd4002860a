"""Variational autoencoder (Kingma & Welling 2014): maximize the evidence lower bound on pixels in [0, 1].

    q(z|x) = N(mu, diag(sigma^2)) from the encoder;  z = mu + sigma * eps, eps ~ N(0, I)  (reparameterization)
    -ELBO(x) = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)),   KL = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)
    loss     = recon + beta * KL    (beta = 1: the VAE; beta > 1: the beta-VAE of Higgins et al. 2017)

The decoder's likelihood p(x|z) is the loss group's: recon_bce (Bernoulli, the classic MNIST VAE),
recon_mse (Gaussian with std loss.scale) or recon_mae (Laplace). The task models pixels in [0, 1]
whatever data.normalize says (it maps the data back to pixels). Metrics, per image in nats:
    neg_elbo = recon + kl (the bound, with beta = 1 whatever beta trains),  recon,  kl,  loss (the objective)
Visuals: inputs above their reconstructions, samples from the prior (a fixed z), and for latent_dim 2
the manifold: decodings of a grid of z at evenly spaced quantiles of N(0, 1).
"""

import torch
from torch import Tensor

from dlx.errors import ConfigError
from dlx.losses.reconstruction import as_reconstruction
from dlx.tasks.base import Step, Task
from dlx.tasks.pixels import PixelRange, rows

NUM_SAMPLES = 64  # prior samples in TensorBoard


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, (B,): closed form, summed over latent dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def manifold_z(n: int) -> Tensor:
    """(n*n, 2) latent points on a grid of N(0, 1) quantiles, row-major with z2 decreasing downwards."""
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.5 / n, 1 - 0.5 / n, n))
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)


class VAE(Task):
    """VAE on image batches (x, ...); labels are ignored.

    Args:
        model: encoder/decoder with `encode(x) -> (mu, logvar)`, `decode(z)`, `latent_dim` (dlx.models.vae_net).
        loss: a reconstruction loss, read as the decoder's likelihood.
        beta: weight of the KL term in the training objective.
        manifold_size: side of the latent grid drawn when latent_dim is 2.
    """

    monitor = "val/neg_elbo"
    monitor_mode = "min"

    def __init__(self, model, loss, beta: float = 1.0, manifold_size: int = 15):  # noqa: ANN001
        super().__init__(model, as_reconstruction(loss, "vae"))
        if beta < 0:
            raise ConfigError("task.beta", beta, "must be >= 0")
        self.beta, self.manifold_size = beta, manifold_size
        self.pixels = PixelRange()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("fixed_z", torch.randn(NUM_SAMPLES, model.latent_dim, generator=g))

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)

    def _terms(self, x: Tensor, sample: bool = True) -> dict[str, Tensor]:
        p = self.pixels.to_pixels(x)  # the task models pixels in [0, 1]
        mu, logvar = self.model.encode(p)  # (B, latent_dim) each
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
        recon = self.loss.nll(self.model.decode(z), p).mean()  # -log p(x|z), nats per image
        kl = kl_standard_normal(mu.float(), logvar.float()).mean()
        return {"loss": recon + self.beta * kl, "neg_elbo": recon + kl, "recon": recon, "kl": kl}

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        terms = self._terms(batch[0])
        step("main", terms["loss"])
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        # One z sample per image: an unbiased estimate of the bound, as the literature reports it.
        return self._terms(batch[0])

    # ---- generation ---------------------------------------------------------------------------
    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n latent points z ~ N(0, I) on the model's device."""
        device = self.fixed_z.device
        return torch.randn(n, self.model.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """Decode latent points to images in [0, 1] (the decoder's mean)."""
        return self.loss.decode(self.model.decode(z)).clamp(0, 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images from the prior, (n, C, H, W) in [0, 1]."""
        return self.generate(self.prior(n, generator))

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        p = self.pixels.to_pixels(batch[0][:32])
        recon = self.generate(self.model.encode(p)[0])
        images = {"reconstruction": rows(p, recon), "samples": self.generate(self.fixed_z)}
        if self.model.latent_dim == 2:
            images["manifold"] = self.manifold()
        return images

    @torch.no_grad()
    def manifold(self) -> Tensor:
        """The decoded 2-D latent grid as one image (1, C, H', W')."""
        from torchvision.utils import make_grid

        n = self.manifold_size
        x = self.generate(manifold_z(n).to(self.fixed_z.device))
        return make_grid(x.float().cpu(), nrow=n, padding=0)[None]
