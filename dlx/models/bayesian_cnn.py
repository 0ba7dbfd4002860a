"""The MC-dropout CNN of Gal, Islam and Ghahramani 2017 ("Deep Bayesian Active Learning with Image Data", Sec. 5.1):

    conv 32@4x4 -> relu -> conv 32@4x4 -> relu -> max pool 2 -> dropout 0.25 -> dense 128 -> relu -> dropout 0.5
    -> dense num_classes

("following the example Keras MNIST CNN implementation"). Dropout stays on at test time for MC-dropout
(Gal and Ghahramani 2016: a Bayesian CNN's approximate posterior); the convs are "valid" (unpadded), so
MNIST 28 -> 25 -> 22 -> pool 11: 32x11x11 = 3,872 features into the dense layer, 513,994 parameters. The
paper's weight decay c / N sits on the dense layer only (Keras' W_regularizer): `decay=[classifier.2.weight]`.

Both dropout layers are in `classifier`, so `features` is deterministic under MC-dropout and
dlx.analysis.uncertainty.mc_probs computes it once for all T passes.
"""

from torch import Tensor, nn


class BayesianCNN(nn.Module):
    """Gal et al. 2017's MNIST CNN.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); must leave a map after two valid convs and the pool.
        filters: kernels per conv (32).
        kernel: conv kernel side (4).
        pool: max-pooling window (2).
        hidden: units of the dense layer (128).
        dropout_conv: drop probability after the pool (0.25).
        dropout: drop probability after the dense layer (0.5).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 28,
        filters: int = 32,
        kernel: int = 4,
        pool: int = 2,
        hidden: int = 128,
        dropout_conv: float = 0.25,
        dropout: float = 0.5,
    ):
        super().__init__()
        for name, value in (("filters", filters), ("kernel", kernel), ("pool", pool), ("hidden", hidden)):
            if value < 1:
                raise ValueError(f"{name}={value!r} is not allowed: an integer >= 1")
        for name, value in (("dropout_conv", dropout_conv), ("dropout", dropout)):
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value!r} is not allowed: a drop probability in [0, 1)")
        side = (image_size - 2 * (kernel - 1)) // pool  # two valid convs, then the pool
        if side < 1:
            raise ValueError(f"kernel={kernel!r} is not allowed: {image_size}x{image_size} inputs leave no map after "
                             f"two {kernel}x{kernel} convs and a {pool}x{pool} pool (use a smaller kernel or pool)")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, filters, kernel),  # (B, F, S - k + 1, ...)
            nn.ReLU(),
            nn.Conv2d(filters, filters, kernel),  # (B, F, S - 2k + 2, ...)
            nn.ReLU(),
            nn.MaxPool2d(pool),  # (B, F, side, side)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout_conv),  # element-wise, as Keras' Dropout on a 4-D tensor
            nn.Flatten(),  # (B, F * side * side)
            nn.Linear(filters * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, num_classes)
