"""The run `dlx train model=mlp data=mnist` is measured against: a Lightning + Hydra MNIST program.

It does what lightning-hydra-template's default `python src/train.py` run does, written here from its
documented defaults (not its code): Hydra composes the config; a LightningDataModule reads torchvision's
MNIST with per-sample ToTensor + Normalize, joins train and test and splits them 55,000/5,000/10,000,
batch 128, no workers; a LightningModule trains the 784-64-128-64-10 BatchNorm MLP (SimpleDenseNet) with
Adam (lr 1e-3) and ReduceLROnPlateau, keeping torchmetrics accuracy and mean loss per split; the Trainer
(CPU, no logger) has the template's default callbacks: the best and last checkpoint on val/acc, early
stopping, a rich model summary and a rich progress bar; after fitting it tests the best checkpoint.

    python benchmarks/lightning_mnist.py data_dir=DATA max_epochs=1 out_dir=OUT

Needs `lightning` and `torchmetrics` (`make bench-lightning` installs them); dlx itself never imports them.
"""

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichModelSummary, RichProgressBar
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, random_split
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision import transforms
from torchvision.datasets import MNIST


class MNISTData(L.LightningDataModule):
    """torchvision's MNIST, train + test joined and split 55k/5k/10k with a fixed generator."""

    def __init__(self, data_dir: str, batch_size: int):
        super().__init__()
        self.data_dir, self.batch_size = data_dir, batch_size
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train"):
            return
        full = ConcatDataset([MNIST(self.data_dir, train=t, transform=self.transform) for t in (True, False)])
        self.train, self.val, self.test = random_split(full, [55_000, 5_000, 10_000],
                                                       generator=torch.Generator().manual_seed(42))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=self.batch_size)


def dense_net() -> nn.Module:
    """784-64-128-64-10 with BatchNorm and ReLU: (B, 1, 28, 28) -> (B, 10)."""
    widths = [784, 64, 128, 64]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(fan_in, fan_out), nn.BatchNorm1d(fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


class Classifier(L.LightningModule):
    """Cross-entropy training with per-split accuracy and mean loss, and the best validation accuracy."""

    def __init__(self, lr: float):
        super().__init__()
        self.lr = lr
        self.net = dense_net()
        self.criterion = nn.CrossEntropyLoss()
        splits = ("fit", "val", "test")
        self.acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes=10, average="micro") for s in splits})
        self.mean_loss = nn.ModuleDict({s: MeanMetric() for s in splits})
        self.best_val_acc = MaxMetric()

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = self.criterion(logits, y)
        self.mean_loss[split](loss)
        self.acc[split](logits.argmax(1), y)
        name = "train" if split == "fit" else split
        self.log(f"{name}/loss", self.mean_loss[split], on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{name}/acc", self.acc[split], on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "fit")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.best_val_acc(self.acc["val"].compute())
        self.log("val/acc_best", self.best_val_acc.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=10)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    L.seed_everything(cfg.get("seed", 12345), workers=True)
    data = MNISTData(cfg.data_dir, cfg.get("batch_size", 128))
    model = Classifier(cfg.get("lr", 1e-3))
    callbacks = [
        ModelCheckpoint(dirpath=f"{cfg.out_dir}/checkpoints", monitor="val/acc", mode="max", save_last=True),
        EarlyStopping(monitor="val/acc", mode="max", patience=100),
        RichModelSummary(max_depth=-1),
        RichProgressBar(),
    ]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=cfg.max_epochs, min_epochs=1, logger=False,
                        callbacks=callbacks, default_root_dir=cfg.out_dir)
    trainer.fit(model, datamodule=data)
    result = trainer.test(model, datamodule=data, ckpt_path="best")
    print("TEST_ACC", result[0]["test/acc"])


if __name__ == "__main__":
    main()
