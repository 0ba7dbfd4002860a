"""Stacked autoencoder: greedy layer-wise pretraining, then fine-tuning a classifier on the encoder
(Bengio et al. 2007; Vincent et al. 2010 with noise), all inside one run.

The phase follows the task's own step counter (saved with the weights, so a resume continues the
schedule):
    steps [k * pretrain_steps, (k + 1) * pretrain_steps), k < L:  pretrain layer k: encoder layer k and
        its decoder layer reconstruct layer k's input, the (fixed) code of the layers below it, with
        optional input corruption (stacked denoising autoencoder); layer 0 compares with the loss
        group's criterion, deeper layers by squared error (their targets are codes, not pixels)
    steps >= L * pretrain_steps:  fine-tune: a linear softmax classifier on the code, trained with the
        whole encoder by cross-entropy on the labels
`task.pretrain_steps=0` trains the same net from scratch: the baseline that pretraining should beat.

One optimizer holds every parameter; in each phase only the active ones receive gradients (the rest
have none and are skipped by the optimizer). Choosing a schedule by step inside one task, rather than
chaining runs, keeps one command, one run folder and one TensorBoard history for the whole recipe.

Metrics: loss (the active phase's), phase (layer index while pretraining, L while fine-tuning); at
validation: loss and acc of the classifier, mse of the full stack's reconstruction per pixel.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.errors import ConfigError
from dlx.losses.reconstruction import as_reconstruction
from dlx.tasks.base import Step, Task
from dlx.tasks.corrupt import check_noise, corrupt
from dlx.tasks.pixels import PixelRange, rows


class Stacked(Task):
    """Layer-wise pretraining of an MLP autoencoder, then supervised fine-tuning of its encoder.

    Args:
        model: an MLP autoencoder (dlx.models.autoencoder, arch=mlp) with `encoder_layers`, `decoder_layers`.
        loss: the reconstruction criterion of the pretraining phases (loss=recon_mse, ...).
        num_classes: classes of the fine-tuned classifier (from `data.num_classes`).
        pretrain_steps: training steps per layer (0 = no pretraining).
        noise: corruption of each layer's input while pretraining (none | gaussian | masking | salt_pepper).
        noise_level: its strength (see dlx.tasks.corrupt).
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(self, model, loss, num_classes: int, pretrain_steps: int = 500, noise: str = "none",  # noqa: ANN001
                 noise_level: float = 0.0):
        super().__init__(model, as_reconstruction(loss, "stacked"))
        if not hasattr(model, "encoder_layers"):
            raise ConfigError("model.arch", getattr(model, "arch", type(model).__name__),
                              "task=stacked pretrains layer by layer: use model=autoencoder model.arch=mlp")
        if pretrain_steps < 0:
            raise ConfigError("task.pretrain_steps", pretrain_steps, "must be >= 0")
        check_noise(noise, noise_level)
        self.pretrain_steps, self.noise, self.noise_level = pretrain_steps, noise, noise_level
        self.head = nn.Linear(model.code_size, num_classes)
        self.pixels = PixelRange()
        self.steps_done = 0  # a Python int (no device sync per step), saved as the module's extra state

    def get_extra_state(self) -> dict[str, int]:
        return {"steps_done": self.steps_done}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps_done = int(state["steps_done"])

    @property
    def depth(self) -> int:
        return len(self.model.encoder_layers)

    def phase(self) -> int:
        """The layer being pretrained, or `depth` when fine-tuning."""
        if self.pretrain_steps == 0:
            return self.depth
        return min(self.steps_done // self.pretrain_steps, self.depth)

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a TensorData
        self.pixels.fit(data)

    def classify(self, x: Tensor) -> Tensor:
        return self.head(self.model.encode(x))  # (B, num_classes)

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        k = self.phase()
        if k < self.depth:
            with torch.no_grad():  # the layers below k are fixed: their code is layer k's data
                h = x.flatten(1)
                for layer in self.model.encoder_layers[:k]:
                    h = layer(h)
            out = self.model.decoder_layers[k](self.model.encoder_layers[k](corrupt(h, self.noise, self.noise_level)))
            loss = self.loss(out, h) if k == 0 else F.mse_loss(out.float(), h.float())
        else:
            loss = F.cross_entropy(self.classify(x).float(), y)
        step("main", loss)
        self.steps_done += 1
        return {"loss": loss.detach(), "phase": torch.tensor(float(k), device=x.device)}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.classify(x)
        recon = self.loss.decode(self.model(x))
        return {"loss": F.cross_entropy(logits.float(), y), "acc": (logits.argmax(-1) == y).float().mean(),
                "mse": (recon - x).pow(2).mean()}

    @torch.no_grad()
    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0][:32]
        recon = self.loss.decode(self.model(x))
        return {"reconstruction": rows(self.pixels.to_pixels(x), self.pixels.to_pixels(recon))}
