"""Supervised classification: logits from the model, the configured criterion, accuracy."""

import torch
from torch import Tensor, nn

from dlx.errors import ConfigError
from dlx.tasks.base import Step, Task, model_spec


class Classify(Task):
    """Batches are (x, y, ...): input and class index; extra fields (e.g. masks) are ignored.

    Args:
        model: the classifier, (B, ...) -> logits (B, K).
        loss: criterion on (logits, class indices).
        tta_flip: evaluate (val and test) on the mean logits of each image and its horizontal mirror:
            test-time augmentation as in the CIFAR-10 speed records. Image batches (B, C, H, W) only.
    """

    monitor = "val/acc"
    monitor_mode = "max"
    ddp_wraps_model = True  # training_step calls only self.train_model(x)

    def __init__(self, model: nn.Module, loss: nn.Module, tta_flip: bool = False):
        super().__init__(model, loss)
        self.tta_flip = tta_flip
        self.extra_outputs = bool(model_spec(model).extra_outputs)  # GoogLeNet's auxiliary heads

    def _l1(self) -> Tensor | float:
        # L1 penalty on weights (not biases or norm scales): the lecture's sparsity regularizer.
        l1 = getattr(self.loss, "l1", 0.0)
        if not l1:
            return 0.0
        return l1 * sum(p.abs().sum() for p in self.model.parameters() if p.dim() > 1)

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        extra: Tensor | float = self._l1()  # 0 unless there is an L1 penalty or auxiliary heads
        if self.extra_outputs:
            logits, aux = self.train_model(x, extra_outputs=True)  # (B, K), {name: (B, K)}
            # GoogLeNet's auxiliary classifiers (Szegedy et al. 2015): their losses count 0.3 each in training.
            extra = extra + sum(0.3 * self.loss(a, y) for a in aux.values())
        else:
            logits = self.train_model(x)  # (B, K)
        loss = self.loss(logits, y)
        step("main", loss + extra if isinstance(extra, Tensor) else loss)  # adding a 0 would cost two kernels
        return {"loss": loss.detach(), "acc": (logits.detach().argmax(-1) == y).float().mean()}

    def predict(self, x: Tensor) -> Tensor:
        """Evaluation logits (B, K): the model's, averaged with its mirror's under `tta_flip`."""
        logits = self.model(x)  # (B, K)
        if self.tta_flip:
            if x.dim() != 4:
                raise ConfigError("task.tta_flip", True, f"mirrors images (B, C, H, W), not {tuple(x.shape)}")
            logits = (logits + self.model(x.flip(3))) / 2
        return logits

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.predict(x)  # (B, K)
        return {"loss": self.loss(logits, y), "acc": (logits.argmax(-1) == y).float().mean()}

    @torch.no_grad()
    def figures(self, data, split: str, where: str) -> tuple[dict, dict]:  # noqa: ANN001 - a data module
        """The confusion matrix of the split and its most confidently wrong images (dlx.analysis.mistakes)."""
        from dlx.analysis import mistakes
        from dlx.analysis.loading import display

        probs, labels = [], []
        for batch in data.batches(split):
            probs.append(self.predict(batch[0]).float().softmax(-1).cpu())  # (B, K)
            labels.append(batch[1].cpu())
        p, y = torch.cat(probs), torch.cat(labels)
        picked = mistakes.confident_mistakes(p, y)
        x = mistakes.inputs_at(data.batches(split), picked.tolist())  # a second pass keeps only those
        pixels = display(data, x.float()) if x is not None else None
        names = list(getattr(data, "classes", None) or [])
        return mistakes.figures(pixels, p, y, names, where, picked=picked)
