"""The networks of a variational autoencoder (Kingma & Welling 2014): a Gaussian encoder q(z|x) and a decoder.

    encoder: x (B, C, H, W) -> hidden -> (mu, logvar), each (B, latent_dim)
    decoder: z (B, latent_dim) -> hidden -> (B, C, H, W): logits (Bernoulli) or means (Gaussian/Laplace)

The lecture's MNIST VAE is arch=mlp with hidden [400] and latent_dim 20 (784-400-20). The conv
variant uses the autoencoder's stride-2 conv encoder and transposed-conv decoder. Sampling z and the
loss (reconstruction + KL) belong to the task (dlx.tasks.vae); this module is only the two networks.
"""

from torch import Tensor, nn

from dlx.models.autoencoder import ConvDecoder, check_common, conv_encoder, conv_sizes
from dlx.models.mlp import make_activation


class VAENet(nn.Module):
    """Encoder to the parameters of q(z|x) = N(mu, diag(exp(logvar))), decoder from z.

    Args:
        in_channels: image channels (from `data.channels`).
        image_size: image side (from `data.size`).
        latent_dim: dimension of z (2 gives the manifold picture).
        arch: mlp | conv.
        hidden: mlp: hidden widths from the input inwards (mirrored in the decoder); conv: channels.
        activation: nonlinearity of the hidden layers.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        latent_dim: int = 20,
        arch: str = "mlp",
        hidden: list[int] | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        check_common(arch, in_channels, image_size, latent_dim)
        self.latent_dim, self.shape = latent_dim, (in_channels, image_size, image_size)
        hidden = list(hidden) if hidden is not None else ([400] if arch == "mlp" else [32, 64])
        if arch == "mlp":
            dims = [in_channels * image_size * image_size, *hidden]
            self.encoder = nn.Sequential(nn.Flatten(), *_mlp(dims, activation))
            feat = dims[-1]
            # z -> hidden (mirrored) -> pixels; with no hidden layers both maps are linear.
            self.decoder = nn.Sequential(
                *_mlp([latent_dim, *reversed(hidden)], activation),
                nn.Linear(hidden[0] if hidden else latent_dim, dims[0]),
                nn.Unflatten(1, self.shape),
            )
        else:
            sizes = conv_sizes(image_size, len(hidden))
            map_shape = (hidden[-1], sizes[-1], sizes[-1])
            feat = hidden[-1] * sizes[-1] ** 2
            self.encoder = nn.Sequential(conv_encoder(in_channels, hidden, activation), nn.Flatten())
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, feat), make_activation(activation, num_features=feat), nn.Unflatten(1, map_shape),
                ConvDecoder(in_channels, hidden, sizes, activation),
            )
        self.mu = nn.Linear(feat, latent_dim)
        self.logvar = nn.Linear(feat, latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> mu, logvar (B, latent_dim)."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """z (B, latent_dim) -> decoder output (B, C, H, W)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction from the posterior mean (deterministic; training samples z in the task)."""
        return self.decode(self.encode(x)[0])


def _mlp(dims: list[int], activation: str) -> list[nn.Module]:
    """Linear + activation for each consecutive pair of `dims`."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), make_activation(activation, num_features=b)]
    return layers
