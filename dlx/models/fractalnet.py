"""FractalNet (Larsson et al. 2017): ultra-deep nets without residuals, by a fractal expansion rule.

    f_1(z)     = conv(z)
    f_{C+1}(z) = join(f_C(f_C(z)), conv(z))

A block with C columns has columns of depth 1, 2, 4, ..., 2^(C-1) convs (conv = 3x3 conv -> BN -> ReLU).
A join is the elementwise mean of the columns that meet there; the nested joins at a block's end are
merged into one, so the last join of a block averages all C columns. B blocks, each followed by a 2x2
max pool, widths 64, 128, 256, 512, 512 (width doubling, capped at 8 width); global average pooling and
a linear layer. The paper's CIFAR nets: B=5, C=3 (20 layers deep; 33.7M parameters here, where the
paper's table lists 38.6M) or C=4 (40 layers; 76.1M here).

Drop-path regularization, per mini-batch, training only (eval always averages every column, so it is
deterministic):
  - local: each input of a join is dropped with probability `drop_path_local` (0.15), keeping at least one;
  - global: a share `drop_path_global` (0.5) of the mini-batches uses one column, picked at random, in
    every block of the net ("a single path for the entire network"); the rest use local drop-path.
Before each evaluation the loop recomputes the BatchNorm statistics of the joined net on the latest
training inputs (`FractalNet.recalibrate`, declared in its ModelSpec): the running statistics of the
sub-networks drop-path trains do not fit it.

Small inputs: a pool that would take the map below 1x1 is left out (CIFAR 32x32 keeps all five and ends
at 1x1 as in the paper; digits 8x8 keeps three).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dlx.tasks.base import Declares, ModelSpec

RECALIBRATION_BATCHES = 8  # latest training batches recalibrate() sees: 1024 images at batch 128


def conv_unit(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """The paper's convolutional layer: 3x3 conv -> BN -> ReLU (-> dropout)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def join(paths: list[Tensor], drop_prob: float, training: bool) -> Tensor:
    """Elementwise mean of the columns (B, C, H, W) each; in training drop each with `drop_prob`, keep >= 1."""
    if training and drop_prob > 0 and len(paths) > 1:
        keep = (torch.rand(len(paths)) >= drop_prob).tolist()
        if not any(keep):
            keep[int(torch.randint(len(paths), ()))] = True
        paths = [p for p, k in zip(paths, keep, strict=True) if k]
    return paths[0] if len(paths) == 1 else torch.stack(paths).mean(0)


class FractalBlock(nn.Module):
    """f_C: this level's single conv next to two copies of f_{C-1} in sequence.

    Columns are numbered from the shallowest: column 0 is this level's conv (1 conv), column k > 0 is
    column k - 1 of both copies of f_{C-1} (2^k convs).

    Args:
        in_channels: input channels.
        out_channels: output channels of every conv.
        columns: C.
        dropout: dropout after every conv of this block.
        drop_path_local: drop probability of each join input in training.
    """

    def __init__(self, in_channels: int, out_channels: int, columns: int, dropout: float, drop_path_local: float):
        super().__init__()
        self.columns, self.drop_path_local = columns, drop_path_local
        self.conv = conv_unit(in_channels, out_channels, dropout)
        self.deep: nn.ModuleList | None = None
        if columns > 1:
            self.deep = nn.ModuleList([
                FractalBlock(in_channels, out_channels, columns - 1, dropout, drop_path_local),
                FractalBlock(out_channels, out_channels, columns - 1, dropout, drop_path_local),
            ])  # fmt: skip

    def paths(self, x: Tensor, column: int | None) -> list[Tensor]:
        """The column outputs that meet at this block's last join: all (column None) or only `column`."""
        if self.deep is None or column == 0:
            return [self.conv(x)]
        sub = None if column is None else column - 1
        h = self.deep[0](x, sub)  # (B, C_out, H, W), joined
        deep = self.deep[1].paths(h, sub)  # its last join is merged into ours
        return deep if column is not None else [*deep, self.conv(x)]

    def forward(self, x: Tensor, column: int | None = None) -> Tensor:
        return join(self.paths(x, column), self.drop_path_local, self.training)  # (B, C_out, H, W)


class Fractal(nn.Module):
    """The B blocks with their pools; picks the global drop-path column shared by every block."""

    def __init__(self, blocks: list[FractalBlock], pools: list[nn.Module], columns: int, drop_path_global: float):
        super().__init__()
        self.blocks, self.pools = nn.ModuleList(blocks), nn.ModuleList(pools)
        self.columns, self.drop_path_global = columns, drop_path_global

    def forward(self, x: Tensor) -> Tensor:
        column = None  # None: every column, local drop-path in the joins
        if self.training and self.drop_path_global > 0 and torch.rand(()) < self.drop_path_global:
            column = int(torch.randint(self.columns, ()))
        for block, pool in zip(self.blocks, self.pools, strict=True):
            x = pool(block(x, column))  # (B, C_b, H / 2^b, W / 2^b)
        return x


class FractalNet(Declares, nn.Module):
    """FractalNet for classification.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); decides which pools are left out.
        columns: C, columns per block (3 or 4 in the paper).
        blocks: B, blocks (5 in the paper for CIFAR).
        width: channels of the first block; doubled per block, capped at 8 width (64 -> 512).
        block_dropout: dropout of the last block; block b of B uses block_dropout * b / (B - 1)
            (0.4 gives the paper's 0, 0.1, 0.2, 0.3, 0.4).
        drop_path_local: drop probability of each join input (0.15 in the paper).
        drop_path_global: share of mini-batches that train a single column (0.5 in the paper).
        dropout: drop probability before the final linear layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        columns: int = 3,
        blocks: int = 5,
        width: int = 64,
        block_dropout: float = 0.0,
        drop_path_local: float = 0.15,
        drop_path_global: float = 0.5,
        dropout: float = 0.0,
    ):
        super().__init__()
        for key, value in (("columns", columns), ("blocks", blocks), ("width", width)):
            if value < 1:
                raise ValueError(f"{key}={value!r} is not allowed: >= 1")
        for key, p in (
            ("block_dropout", block_dropout),
            ("drop_path_local", drop_path_local),
            ("drop_path_global", drop_path_global),
            ("dropout", dropout),
        ):
            if not 0 <= p < 1:
                raise ValueError(f"{key}={p!r} is not allowed: a probability in [0, 1)")
        fractal_blocks, pools, channels, size = [], [], in_channels, image_size
        for b in range(blocks):
            out = min(width * 2**b, 8 * width)
            rate = block_dropout * b / (blocks - 1) if blocks > 1 else block_dropout
            fractal_blocks.append(FractalBlock(channels, out, columns, rate, drop_path_local))
            pools.append(nn.MaxPool2d(2) if size >= 2 else nn.Identity())  # never below 1x1
            channels, size = out, max(size // 2, 1)
        self.features = Fractal(fractal_blocks, pools, columns, drop_path_global)  # (B, channels, h, w)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

        self.drop_path = drop_path_local > 0 or drop_path_global > 0

    def model_spec(self) -> ModelSpec:
        # A dropped column's weights get no gradient; drop-path's BatchNorm statistics need recalibration.
        return ModelSpec(skips_parameters=self.drop_path,
                         recalibration_batches=RECALIBRATION_BATCHES if self.drop_path else 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)

    @torch.no_grad()
    def recalibrate(self, inputs: Sequence[Tensor]) -> None:
        """Recompute every BatchNorm's running statistics on `inputs` (the latest training batches, which the
        loop keeps) with all columns joined.

        Drop-path trains sub-networks: a block receives one column's output, or the mean of a random subset,
        where eval feeds the mean of all columns, and the running statistics mix those regimes. After 300 steps
        on digits that put eval at chance with global drop-path (test acc 0.29, 0.99 with batch statistics) and
        cost 4 points with local drop-path alone; the fix is the post-training BN statistics of weight-sharing
        nets (slimmable networks, once-for-all). No random numbers are drawn: training is unchanged.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta, mode = [m.momentum for m in norms], self.training
        self.train(False)  # no drop-path, no dropout: the joined net
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        for x in inputs:
            self.features(x)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.train(mode)
