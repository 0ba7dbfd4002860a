"""GoogLeNet, Inception v1 (Szegedy et al. 2015): Inception modules with 1x1 reductions, on torchvision's layers.

Each Inception module concatenates four branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max pool
-> 1x1 projection. The 1x1 reductions keep the 3x3/5x5 convs cheap. Nine modules (3a-b, 4a-e, 5a-b),
global average pooling, dropout 0.4, one linear layer.

Differences from torchvision's GoogLeNet, which this is built from (`GoogLeNet`, `BasicConv2d`, `InceptionAux`):
  - the third branch has the paper's 5x5 conv; torchvision keeps a 3x3 there to match weights ported
    from another framework (vision#906). Parameters: 7.0M instead of 6.6M at 1000 classes.
  - below 64x64 inputs the stem's 7x7/2 conv becomes a 3x3/1 conv and its first max pool is left out,
    so CIFAR's 32x32 reaches the Inception modules as 16x16 (not 4x4); every later layer is unchanged
    (digits 8x8 ends in a 1x1 map, which the ceil-mode pools allow).

Auxiliary classifiers (`aux_logits: true`, after 4a and 4d) are declared extra outputs (ModelSpec):
`model(x)` returns the main logits, `model(x, extra_outputs=True)` returns `(logits, {"aux1": ..., "aux2":
...})` in training mode (an empty dict in eval mode), and the classify task adds the paper's
0.3 * loss(aux, y) for each of them.
"""

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models.googlenet import BasicConv2d, InceptionAux
from torchvision.models.googlenet import GoogLeNet as TorchvisionGoogLeNet
from torchvision.models.googlenet import Inception as TorchvisionInception

from dlx.tasks.base import Declares, ModelSpec

SMALL_SIZE = 64  # below this the stem keeps the resolution (3x3/1 conv, no first max pool)
_LAYERS = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2",
    "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)  # fmt: skip
_AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class Inception(TorchvisionInception):
    """torchvision's Inception module with the paper's 5x5 conv in the third branch."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        conv_block: type[nn.Module] | None = None,
    ):
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, conv_block)
        self.branch3[1] = (conv_block or BasicConv2d)(ch5x5red, ch5x5, kernel_size=5, padding=2)


class GoogLeNet(Declares, nn.Module):
    """GoogLeNet with `in_channels`, a small-input stem and optional auxiliary classifiers.

    Args:
        in_channels: input channels (from `data.channels`).
        num_classes: output units.
        image_size: input side (from `data.size`); below 64 the small-input stem is used.
        aux_logits: build the two auxiliary classifiers (extra outputs "aux1", "aux2" in training).
        dropout: drop probability before the last linear layer (0.4 in the paper).
        dropout_aux: drop probability in the auxiliary classifiers (0.7 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 224,
        aux_logits: bool = False,
        dropout: float = 0.4,
        dropout_aux: float = 0.7,
    ):
        super().__init__()
        for key, p in (("dropout", dropout), ("dropout_aux", dropout_aux)):
            if not 0 <= p < 1:
                raise ValueError(f"{key}={p!r} is not allowed: a probability in [0, 1)")
        net = TorchvisionGoogLeNet(
            num_classes=num_classes,
            aux_logits=aux_logits,
            init_weights=True,  # truncated normal, std 0.01
            blocks=[BasicConv2d, Inception, InceptionAux],
            dropout=dropout,
            dropout_aux=dropout_aux,
        )
        if image_size < SMALL_SIZE:
            net.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
            net.maxpool1 = nn.Identity()
        elif in_channels != 3:
            net.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
        nn.init.trunc_normal_(net.conv1.conv.weight, mean=0.0, std=0.01, a=-2, b=2)  # as torchvision's init
        self.features = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in _LAYERS))  # (B, 1024, h, w)
        self.aux1, self.aux2 = net.aux1, net.aux2  # None without aux_logits
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), net.fc)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(extra_outputs=tuple(_AUX_AFTER.values()) if self.aux1 is not None else ())

    def forward(self, x: Tensor, extra_outputs: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Logits (B, num_classes); with `extra_outputs` also the auxiliary logits by name (training mode only)."""
        aux: dict[str, Tensor] = {}
        if not (extra_outputs and self.training and self.aux1 is not None):
            logits = self.classifier(self.features(x))  # (B, num_classes)
            return (logits, aux) if extra_outputs else logits
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in _AUX_AFTER:  # (B, 512 or 528, h, w) -> (B, num_classes)
                aux[_AUX_AFTER[name]] = getattr(self, _AUX_AFTER[name])(x)
        return self.classifier(x), aux  # (B, num_classes), {name: (B, num_classes)}
