"""Autoencoders: an encoder to a code of `code_size` units and a decoder back to the input's shape.

    mlp:  (B, C, H, W) -> flatten -> hidden... -> code (B, code_size) -> hidden (mirrored)... -> (B, C, H, W)
    conv: (B, C, H, W) -> [conv 3x3 stride 2, BN, act] per width -> flatten -> code
          code -> linear -> (B, widths[-1], h, w) -> [transposed conv 3x3 stride 2] (mirrored) -> (B, C, H, W)

The decoder ends without an activation: its output is the reconstruction's mean for mse/mae losses
and logits for bce (see dlx.losses.reconstruction). The code layer is linear (no activation), so an
autoencoder with one linear layer each way spans the same subspace as PCA at the same code size.

The conv decoder undoes each stride-2 conv with a transposed conv whose `output_padding` restores the
exact size, so any input side works (8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8).

The MLP keeps its layers as `encoder_layers[k]` / `decoder_layers[k]`, where `decoder_layers[k]` maps
the code of layer k back to the input of layer k: the pieces greedy layer-wise pretraining trains one
pair at a time (dlx.tasks.stacked).
"""

from torch import Tensor, nn

from dlx.models.mlp import make_activation

ARCHS = ("mlp", "conv")


def conv_sizes(size: int, levels: int) -> list[int]:
    """Map sides after each 3x3 stride-2 conv with padding 1: [size, ceil(size/2), ...]."""
    sizes = [size]
    for _ in range(levels):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def conv_encoder(in_channels: int, widths: list[int], activation: str) -> nn.Sequential:
    """Stride-2 conv blocks: (B, C, H, W) -> (B, widths[-1], h, w)."""
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w),
                   make_activation(activation, num_features=w)]
        c = w
    return nn.Sequential(*layers)


class ConvDecoder(nn.Module):
    """Transposed-conv blocks mirroring `conv_encoder`: (B, widths[-1], h, w) -> (B, out_channels, H, W)."""

    def __init__(self, out_channels: int, widths: list[int], sizes: list[int], activation: str):
        super().__init__()
        chans = [*reversed(widths), out_channels]  # e.g. 64 -> 32 -> C
        outs = list(reversed(sizes[:-1]))  # the side after each transposed conv
        layers: list[nn.Module] = []
        for i, (c_in, c_out, target) in enumerate(zip(chans[:-1], chans[1:], outs, strict=True)):
            side = sizes[len(sizes) - 1 - i]
            # (side - 1) * 2 - 2 + 3 = 2 * side - 1; output_padding makes up the rest of `target`.
            pad = target - (2 * side - 1)
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm2d(c_out), make_activation(activation, num_features=c_out)]
        self.layers = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)


def check_common(arch: str, in_channels: int, image_size: int, code_size: int) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not allowed: choose one of {', '.join(ARCHS)}")
    if code_size < 1:
        raise ValueError(f"code_size={code_size!r} is not allowed: must be >= 1")
    if image_size < 1 or in_channels < 1:
        raise ValueError(
            f"image_size={image_size!r} is not allowed: "
            "needs image data (channels and size from the data)"
        )


class Autoencoder(nn.Module):
    """Encoder-decoder for images, MLP or convolutional.

    Args:
        in_channels: image channels (from `data.channels`).
        image_size: image side (from `data.size`).
        code_size: units of the code (the bottleneck).
        arch: mlp | conv.
        hidden: mlp: widths of the hidden layers from the input inwards (the decoder mirrors them);
            conv: channels of the stride-2 conv layers.
        activation: nonlinearity of the hidden layers (dlx.models.mlp names: relu, sigmoid, tanh, ...).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        code_size: int = 32,
        arch: str = "mlp",
        hidden: list[int] | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        check_common(arch, in_channels, image_size, code_size)
        self.arch, self.code_size = arch, code_size
        self.shape = (in_channels, image_size, image_size)
        hidden = list(hidden) if hidden is not None else ([256] if arch == "mlp" else [32, 64])
        if arch == "mlp":
            self._build_mlp(in_channels * image_size * image_size, hidden, code_size, activation)
        else:
            self._build_conv(in_channels, image_size, hidden, code_size, activation)

    def _build_mlp(self, d_in: int, hidden: list[int], code_size: int, activation: str) -> None:
        dims = [d_in, *hidden, code_size]
        enc, dec = [], []
        for k, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = k == len(dims) - 2
            # Encoder k: a -> b (no activation on the code); decoder k: b -> a (no activation on the output).
            enc_act = [] if last else [make_activation(activation, num_features=b)]
            dec_act = [] if k == 0 else [make_activation(activation, num_features=a)]
            enc.append(nn.Sequential(nn.Linear(a, b), *enc_act))
            dec.append(nn.Sequential(nn.Linear(b, a), *dec_act))
        self.encoder_layers, self.decoder_layers = nn.ModuleList(enc), nn.ModuleList(dec)

    def _build_conv(self, c: int, size: int, widths: list[int], code_size: int, activation: str) -> None:
        sizes = conv_sizes(size, len(widths))
        self.map_shape = (widths[-1], sizes[-1], sizes[-1])
        flat = widths[-1] * sizes[-1] ** 2
        self.encoder = nn.Sequential(conv_encoder(c, widths, activation), nn.Flatten(), nn.Linear(flat, code_size))
        self.decoder = nn.Sequential(
            nn.Linear(code_size, flat), make_activation(activation, num_features=flat),
            nn.Unflatten(1, self.map_shape), ConvDecoder(c, widths, sizes, activation),
        )

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> code (B, code_size)."""
        if self.arch == "mlp":
            h = x.flatten(1)
            for layer in self.encoder_layers:
                h = layer(h)
            return h
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        """code (B, code_size) -> decoder output (B, C, H, W) (means or logits, per the loss)."""
        if self.arch == "mlp":
            h = code
            for layer in reversed(self.decoder_layers):
                h = layer(h)
            return h.view(-1, *self.shape)
        return self.decoder(code)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
