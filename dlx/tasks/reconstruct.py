"""Autoencoders: plain, denoising (`noise`) and sparse (`sparsity`), with a PCA baseline in the same run.

    loss = criterion(decode(encode(corrupt(x))), x) + sparsity * mean_batch(sum_units |code|)

The criterion is the loss group's reconstruction loss (loss=recon_mse | recon_mae | recon_bce); the
target is always the clean input. Metrics (validation and test):
    loss     the criterion
    mse      squared error per pixel of the reconstruction, in the data's units (pixels in [0, 1] with
             data.normalize=false, as the presets set)
    pca_mse  the same for PCA with `code_size` components fitted on the training split at fit start:
             the best linear code of that size, the baseline an autoencoder has to beat
    input_mse (denoising) squared error of the corrupted input itself, what doing nothing scores
"""

import torch
from torch import Tensor

from dlx.losses.reconstruction import as_reconstruction, check_unit_range
from dlx.tasks.base import Step, Task
from dlx.tasks.corrupt import check_noise, corrupt
from dlx.tasks.pixels import PixelRange, first_batch, rows

EIGH_MAX_DIM = 4096  # exact PCA (eigendecomposition of the covariance) up to this many input values


def fit_pca(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean (D,) and the top-k principal directions (D, k) of the rows of x (N, D)."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    k = min(k, x.shape[1])
    if x.shape[1] <= EIGH_MAX_DIM:
        _, vecs = torch.linalg.eigh(xc.T @ xc)  # ascending eigenvalues
        comps = vecs[:, -k:].flip(1)
    else:
        _, _, comps = torch.pca_lowrank(xc, q=k, center=False, niter=6)
    return mean.float(), comps.float()


class Reconstruct(Task):
    """Autoencoder training on images; batches are (x, ...) and labels are ignored.

    Args:
        model: an encoder-decoder with `encode`, `decode` and `code_size` (dlx.models.autoencoder).
        loss: a reconstruction loss (dlx.losses.reconstruction.Reconstruction).
        noise: none | gaussian | masking | salt_pepper: corruption of the input (denoising autoencoder).
        noise_level: std (gaussian) or fraction of values changed (masking, salt_pepper).
        sparsity: weight of the L1 penalty on the code (sparse autoencoder); 0 = off.
        pca_samples: training images the PCA baseline is fitted on (0 = no baseline).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(self, model, loss, noise: str = "none", noise_level: float = 0.0, sparsity: float = 0.0,  # noqa: ANN001
                 pca_samples: int = 10000):
        super().__init__(model, as_reconstruction(loss, "reconstruct"))
        check_noise(noise, noise_level)
        self.noise, self.noise_level, self.sparsity, self.pca_samples = noise, noise_level, sparsity, pca_samples
        self.pixels = PixelRange()
        # The PCA baseline: refitted at every fit start (deterministic), so not saved with the weights.
        self.register_buffer("pca_mean", torch.zeros(0), persistent=False)
        self.register_buffer("pca_components", torch.zeros(0, 0), persistent=False)

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)
        if self.loss.needs_unit_range():
            check_unit_range(first_batch(data, "val", 1024))
        if self.pca_samples:
            x = first_batch(data, "train", self.pca_samples)
            self.pca_mean, self.pca_components = fit_pca(x.flatten(1), self.model.code_size)

    def _val_noise(self, x: Tensor) -> Tensor:
        # A fixed corruption stream for evaluation, so validations compare like with like.
        g = torch.Generator(device=x.device).manual_seed(0)
        return corrupt(x, self.noise, self.noise_level, g)

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x = batch[0]
        code = self.model.encode(corrupt(x, self.noise, self.noise_level))  # (B, code_size)
        out = self.model.decode(code)  # (B, C, H, W)
        loss = self.loss(out, x)  # against the clean input
        total = loss
        if self.sparsity:
            total = loss + self.sparsity * code.abs().flatten(1).sum(1).mean()
        step("main", total)
        return {"loss": loss.detach(), "code_l1": code.detach().abs().mean()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0]
        noisy = self._val_noise(x)
        out = self.model(noisy)
        recon = self.loss.decode(out)
        metrics = {"loss": self.loss(out, x), "mse": (recon - x).pow(2).mean()}
        if self.pca_components.numel():
            metrics["pca_mse"] = (self.pca_reconstruct(noisy) - x).pow(2).mean()
        if self.noise != "none":
            metrics["input_mse"] = (noisy - x).pow(2).mean()
        return metrics

    def pca_reconstruct(self, x: Tensor) -> Tensor:
        """Project onto the top `code_size` principal directions and back: (B, C, H, W) -> same."""
        flat = x.flatten(1) - self.pca_mean  # (B, D)
        v = self.pca_components  # (D, k)
        return ((flat @ v) @ v.T + self.pca_mean).view_as(x)

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0][:32]
        noisy = self._val_noise(x)
        recon = self.loss.decode(self.model(noisy))
        px = self.pixels.to_pixels
        if self.noise == "none":
            return {"reconstruction": rows(px(x), px(recon))}  # each input above its reconstruction
        return {"denoising": rows(px(x), px(noisy), px(recon))}  # clean / corrupted / denoised
