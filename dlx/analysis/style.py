"""Neural style transfer (Gatys et al. 2016): the content of one image painted in the style of another.

A conv net's feature maps F_l (C_l, h w) at layer l describe content (where things are); their Gram
matrices G_l = F_l F_l^T / (C_l h w) describe style (which features occur together, wherever they
are). Starting from the content image, optimize the pixels x to minimize
    content_weight * ||F_c(x) - F_c(content)||^2 / ||F_c(content)||^2
  + style_weight * 1/L sum_l ||G_l(x) - G_l(style)||^2 / ||G_l(style)||^2
(each term normalized, so the weights do not depend on the net or the image size).

Feature extractors:
  - torchvision's ImageNet VGG-19, as in the paper (style conv1_1..conv5_1 after ReLU, content
    conv4_2), used when its weights file is already in the torch hub cache: nothing is downloaded;
  - any trained dlx conv net (`--run`): style at its conv layers (up to five, spread over the depth),
    content at the conv layer about two thirds of the way in.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dlx.analysis.layers import activations, find_layer
from dlx.errors import DlxError

# torchvision vgg19().features indices: ReLU after conv1_1, conv2_1, conv3_1, conv4_1, conv5_1; and conv4_2.
VGG_STYLE = ["1", "6", "11", "20", "29"]
VGG_CONTENT = "22"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Extractor:
    """A feature net with its style and content layers, and the map from pixels [0, 1] to its input."""

    net: nn.Module
    style: list[str]
    content: str
    channels: int
    mean: Tensor
    std: Tensor
    name: str

    def features(self, pixels: Tensor) -> tuple[list[Tensor], Tensor]:
        """Style layer outputs and the content layer output for pixels (1, C, H, W)."""
        layers = [find_layer(self.net, n) for n in [*self.style, self.content]]
        outs, _ = activations(self.net, layers, (pixels - self.mean) / self.std)
        return outs[:-1], outs[-1]


def vgg_weights_path() -> Path:
    """Where torchvision keeps the ImageNet VGG-19 weights in the torch hub cache."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def vgg_extractor(device: torch.device) -> Extractor:
    """ImageNet VGG-19 features from the local weights file (never downloaded here)."""
    from torchvision.models import vgg19

    path = vgg_weights_path()
    if not path.is_file():
        raise DlxError(f"no VGG-19 weights at {path} (this command never downloads)")
    net = vgg19()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing line
        raise DlxError(f"VGG-19 weights {path} are unreadable: {str(e).splitlines()[0]}") from None
    features = net.features[:30].to(device).eval()  # up to relu5_1
    for p in features.parameters():
        p.requires_grad_(False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return Extractor(features, VGG_STYLE, VGG_CONTENT, 3, mean, std, "vgg19 (ImageNet)")


def run_extractor(run) -> Extractor:  # noqa: ANN001 - LoadedRun
    """A trained dlx conv net's `features`: style at up to five conv layers, content about 2/3 deep."""
    model = run.model
    body = getattr(model, "features", model)
    convs = [n for n, m in body.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise DlxError(f"style transfer needs a conv net; {type(model).__name__} in {run.run_dir} has no conv layer")
    picks = sorted({round(i) for i in torch.linspace(0, len(convs) - 1, min(5, len(convs))).tolist()})
    style = [convs[i] for i in picks]
    content = convs[min(len(convs) - 1, (2 * len(convs)) // 3)]
    scale, shift = run.data.scale, run.data.shift  # x = 255 * p * scale + shift  <=>  (p - mean) / std
    if scale is None:
        raise DlxError(f"{run.run_dir} was trained on non-image inputs; style transfer needs an image classifier")
    std = 1 / (255 * scale)
    mean = -shift * std
    channels = run.data.facts()["channels"]
    return Extractor(body, style, content, channels, mean, std, f"{type(model).__name__} from {run.run_dir}")


def gram(f: Tensor) -> Tensor:
    """Gram matrix of feature maps (1, C, h, w): (C, C), normalized by C h w."""
    _, c, h, w = f.shape
    flat = f.float().reshape(c, h * w)
    return flat @ flat.T / (c * h * w)


def transfer(ext: Extractor, content: Tensor, style: Tensor, steps: int = 200, lr: float = 0.02,
             content_weight: float = 1.0, style_weight: float = 10.0, optimizer: str = "adam") -> tuple[Tensor, dict]:
    """Optimize pixels (1, C, H, W) in [0, 1], starting from the content image; returns the image and losses."""
    with torch.no_grad():
        style_feats, _ = ext.features(style)
        _, content_feat = ext.features(content)
    targets = [gram(f) for f in style_feats]
    x = content.clone().requires_grad_(True)

    def losses(img: Tensor) -> tuple[Tensor, Tensor]:
        feats, c = ext.features(img)
        c_loss = (c - content_feat).pow(2).sum() / content_feat.pow(2).sum().clamp_min(1e-12)
        s_loss = sum((gram(f) - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-12)
                     for f, t in zip(feats, targets, strict=True)) / len(targets)
        return c_loss, s_loss

    with torch.no_grad():
        c0, s0 = losses(x)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad(set_to_none=True)
            c, s = losses(x.clamp(0, 1))
            loss = content_weight * c + style_weight * s
            loss.backward()
            return loss

        opt.step(closure)
    else:
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            c, s = losses(x)
            (content_weight * c + style_weight * s).backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
    with torch.no_grad():
        x.clamp_(0, 1)
        c1, s1 = losses(x)
    return x.detach(), {"content_loss_start": float(c0), "style_loss_start": float(s0),
                        "content_loss": float(c1), "style_loss": float(s1)}
