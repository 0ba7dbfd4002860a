"""SegNet (Badrinarayanan et al. 2017): an encoder-decoder that passes max-pooling indices to the decoder.

    encoder stage k: [conv 3x3, BN, ReLU] x convs -> max pool 2x2 (keeps the argmax indices)
    decoder stage k: max unpool with stage k's indices (values back where the maxima were) -> [conv, BN, ReLU] x convs
    head: conv 1x1 -> per-pixel class logits (B, K, H, W)

Unpooling with the encoder's indices restores boundaries without learning to upsample, and the
decoder stores no encoder feature maps (the indices are all it needs), the paper's point against
FCN's skip connections. Odd sides unpool to the encoder's exact sizes.
"""

from torch import Tensor, nn


def conv_block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(True)]
    return nn.Sequential(*layers)


def segmentation_classes(num_classes: int, background: bool) -> int:
    """Output classes: the data's object classes, plus one for the background (mask value 0) when set."""
    k = num_classes + int(background)
    if k < 2:
        raise ValueError(
            f"num_classes={num_classes!r} is not allowed: "
            "segmentation needs at least 2 classes with background"
        )
    return k


class SegNet(nn.Module):
    """Encoder-decoder segmentation net with pooling indices.

    Args:
        in_channels: image channels (from `data.channels`).
        num_classes: object classes of the data (from `data.num_classes`).
        background: add a background class 0 (masks hold 0 for background, class + 1 for objects).
        widths: channels of each encoder stage (the decoder mirrors them).
        convs: conv layers per stage (the paper's VGG-16 encoder has 2-3).
    """

    def __init__(
        self, in_channels: int, num_classes: int, background: bool = True, widths: list[int] | None = None,
        convs: int = 2,
    ):
        super().__init__()
        widths = list(widths) if widths is not None else [32, 64, 128]
        if not widths or convs < 1:
            raise ValueError(f"widths={widths!r} is not allowed: needs at least one stage and convs >= 1")
        self.num_outputs = segmentation_classes(num_classes, background)
        chans = [in_channels, *widths]
        self.encoder = nn.ModuleList(conv_block(a, b, convs) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        # Decoder stage k undoes encoder stage k: widths[k] -> widths[k-1] (the first ends at widths[0]).
        outs = [widths[0], *widths[:-1]]
        self.decoder = nn.ModuleList(conv_block(w, o, convs) for w, o in zip(widths, outs, strict=True))
        self.head = nn.Conv2d(widths[0], self.num_outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> logits (B, K, H, W)."""
        trail = []  # (indices, size before pooling) of each stage
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            trail.append((idx, size))
        for k in reversed(range(len(self.decoder))):
            idx, size = trail[k]
            x = self.decoder[k](self.unpool(x, idx, output_size=size))
        return self.head(x)
