"""Classifier model families, built from their real conf/model/*.yaml through Hydra.

Every classifier config is instantiated at digits (1x8x8, 10 classes) and CIFAR-100 (3x32x32) shapes,
a few at 224x224, and sequence models on parity bit strings; forward and backward must give logits of
shape (B, num_classes), no NaN, and a gradient for every parameter. Parameter counts are checked against
the papers and torchvision on the meta device (no memory, no compute).
"""

import copy
import math
from functools import partial
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from torch import nn

import dlx.build
import dlx.resolvers
from dlx.errors import ConfigError
from dlx.tasks.base import model_spec

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
# Modules of model families that are not classifiers (generative, segmentation): tested by their owners.
NOT_CLASSIFIERS = {"autoencoder", "vae_net", "dcgan", "mlp_gan", "gan", "segnet", "fcn", "unet", "pixelcnn"}

DIGITS = {"channels": 1, "size": 8, "num_classes": 10, "in_features": 64}
MNIST = {"channels": 1, "size": 28, "num_classes": 10, "in_features": 784}
CIFAR100 = {"channels": 3, "size": 32, "num_classes": 100, "in_features": 3072}
IMAGENET = {"channels": 3, "size": 224, "num_classes": 1000, "in_features": 150528}
PARITY = {"input_size": 2, "num_classes": 2, "length": 9}
# Config keys that make training stochastic in which parameters are used; 0 so every path gets a gradient.
ALL_PATHS = {"stochastic_depth": 0.0, "drop_path_local": 0.0, "drop_path_global": 0.0}


def _raw(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=False)


def _kind(raw: dict) -> str:
    """What the model reads, from the data declaration it interpolates."""
    if "input_size" in raw:
        return "sequence"
    return "image" if "in_channels" in raw else "flat"


def classifier_configs() -> list[str]:
    names = []
    for path in sorted(CONF.glob("*.yaml")):
        raw = _raw(path.stem)
        if raw["_target_"].split(".")[-2] in NOT_CLASSIFIERS or raw.get("num_classes") != "${data.num_classes}":
            continue
        names.append(path.stem)
    return names


CLASSIFIERS = classifier_configs()


@pytest.fixture(autouse=True)
def one_thread():
    """Batches of 2 gain nothing from intra-op threads, and on a shared 2-core machine they only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, data: dict, **overrides) -> nn.Module:
    """Instantiate conf/model/<name>.yaml under a `data` node holding the shape declarations."""
    dlx.resolvers.register()
    model_cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key in overrides:
        assert key in model_cfg, f"{name}.yaml has no key {key!r}"
    cfg = OmegaConf.merge({"data": data}, {"model": model_cfg}, {"model": overrides})
    return hydra.utils.instantiate(cfg.model, _convert_="all")  # as dlx.build does


def inputs(name: str, data: dict, batch: int = 2) -> torch.Tensor:
    if _kind(_raw(name)) == "sequence":  # one-hot bits, left-padded with zero vectors like data=parity
        x = F.one_hot(torch.randint(0, 2, (batch, data["length"])), 2).float()
        x[:, :3] = 0
        return x
    return torch.randn(batch, data["channels"], data["size"], data["size"])


def all_paths(name: str) -> dict:
    return {k: v for k, v in ALL_PATHS.items() if k in _raw(name)}


def check_train_step(model: nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Forward + backward in training mode: logits shape, finite values, a finite gradient everywhere."""
    model.train()
    extra = model_spec(model).extra_outputs  # GoogLeNet's auxiliary heads, 0.3 as in the paper
    logits, aux = model(x, extra_outputs=True) if extra else (model(x), {})
    assert logits.shape == (x.shape[0], num_classes) and sorted(aux) == sorted(extra)
    assert torch.isfinite(logits).all()
    loss = logits.logsumexp(-1).mean() - logits[:, 0].mean()  # cross-entropy against class 0
    for a in aux.values():
        loss = loss + 0.3 * (a.logsumexp(-1).mean() - a[:, 0].mean())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
    return logits


def test_configs_found():
    families = {"mlp", "lenet", "resnet", "plain", "alexnet", "vgg", "googlenet", "fractalnet", "mobilenet", "dilated",
                "highway", "highway_conv", "densenet"}
    assert families | {"rnn", "lstm", "gru"} <= set(CLASSIFIERS)


CASES = [
    pytest.param(name, data, id=f"{name}-{label}")
    for name in CLASSIFIERS
    for label, data in (
        [("parity", PARITY)] if _kind(_raw(name)) == "sequence" else [("digits", DIGITS), ("cifar100", CIFAR100)]
    )
]


@pytest.mark.parametrize(("name", "data"), CASES)
def test_config_trains(name: str, data: dict):
    torch.manual_seed(0)
    model = build(name, data, **all_paths(name))
    x = inputs(name, data)
    check_train_step(model, x, data["num_classes"])
    if _kind(_raw(name)) != "image":
        return
    # The analysis tools' contract: features -> (B, C, h, w) map, classifier -> logits, and for CAM the
    # classifier ends in the Linear layer.
    model.eval()
    with torch.no_grad():
        fmap = model.features(x)
        assert fmap.dim() == 4 and fmap.shape[0] == x.shape[0]
        torch.testing.assert_close(model.classifier(fmap), model(x))
    assert isinstance(model.classifier[-1], nn.Linear)


FRACTAL_ALL_PATHS = {"drop_path_local": 0.0, "drop_path_global": 0.0}
VARIANTS = [
    ("mlp", DIGITS, {"activation": "maxout", "pieces": 3, "residual": True, "depth": 3, "dropout": 0.2}),
    ("mlp", DIGITS, {"activation": "prelu", "batch_norm": False, "depth": 0}),
    ("mlp", DIGITS, {"activation": "leaky_relu", "residual": True, "width": 64}),  # skip on layer 1 too
    ("mlp", DIGITS, {"widths": [64, 128, 128, 64], "residual": True}),  # skips where the width is kept
    ("lenet", MNIST, {"activation": "relu", "pool": "max"}),
    ("resnet", DIGITS, {"preact": True, "shortcut": "B"}),
    ("resnet", DIGITS, {"block": "bottleneck", "depth": 29, "preact": True}),
    ("resnet", MNIST, {"shortcut": "B", "dropout": 0.2}),
    ("resnet", DIGITS, {"arch": "imagenet", "depth": 18}),
    ("resnet", DIGITS, {"arch": "imagenet", "depth": 50}),
    ("resnet", {**IMAGENET, "num_classes": 10}, {"arch": "imagenet", "depth": 18}),
    ("plain", DIGITS, {"preact": True}),
    ("alexnet", {**IMAGENET, "channels": 1, "num_classes": 10}, {}),
    ("vgg", MNIST, {"cfg": "A", "norm": "none"}),
    ("vgg", DIGITS, {"cfg": "A-LRN", "norm": "none"}),
    ("vgg", CIFAR100, {"cfg": "C", "norm": "group"}),
    ("resnet", DIGITS, {"norm": "layer", "stochastic_depth": 0.0}),
    ("resnet", DIGITS, {"norm": "group", "preact": True, "shortcut": "B"}),
    ("resnet", DIGITS, {"norm": "instance"}),
    ("resnet", DIGITS, {"norm": "none", "block": "bottleneck", "depth": 11}),
    ("resnet", DIGITS, {"arch": "imagenet", "depth": 18, "norm": "group"}),
    ("plain", DIGITS, {"norm": "group"}),
    ("alexnet", CIFAR100, {"lrn": True}),
    ("alexnet", DIGITS, {"lrn": True, "norm": "batch"}),
    ("lenet", MNIST, {"norm": "batch"}),
    ("lenet", DIGITS, {"norm": "group", "activation": "relu"}),
    ("googlenet", DIGITS, {"aux_logits": True}),
    ("googlenet", {**IMAGENET, "num_classes": 10}, {}),
    ("fractalnet", DIGITS, {"columns": 4, "width": 8, "block_dropout": 0.4, **FRACTAL_ALL_PATHS}),
    ("mobilenet", {**IMAGENET, "num_classes": 10}, {"width_mult": 0.25}),
    ("mobilenet", MNIST, {"width_mult": 0.5}),
    ("dilated", {**IMAGENET, "num_classes": 10}, {"width": 16}),
    ("highway", MNIST, {"depth": 3, "activation": "tanh", "dropout": 0.2}),
    ("highway_conv", MNIST, {"depth": 4, "pool_every": 2}),
    ("densenet", DIGITS, {"depth": 40, "bottleneck": False, "compression": 1.0, "drop_rate": 0.2}),
    ("densenet", MNIST, {"depth": 22, "growth_rate": 4}),
    ("densenet", DIGITS, {"arch": "imagenet", "depth": 121}),
    ("lstm", PARITY, {"bidirectional": True, "num_layers": 2, "dropout": 0.1}),
    ("gru", PARITY, {"bidirectional": True, "num_layers": 2}),
    ("rnn", PARITY, {"num_layers": 3, "hidden_size": 8}),
]


@pytest.mark.parametrize(
    ("name", "data", "overrides"),
    VARIANTS,
    ids=[f"{n}-{d.get('size', 'seq')}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, d, o in VARIANTS],
)
def test_variant_trains(name: str, data: dict, overrides: dict):
    torch.manual_seed(0)
    model = build(name, data, **overrides)
    check_train_step(model, inputs(name, data), data["num_classes"])


# ---- parameter counts ------------------------------------------------------------------------------


def count(name: str, data: dict, **overrides) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build(name, data, **overrides).parameters())


def tv_count(make) -> int:  # noqa: ANN001 - a torchvision builder without arguments
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


CIFAR10 = {**CIFAR100, "num_classes": 10}


@pytest.mark.parametrize(("depth", "published"), [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_resnet_parameter_counts(depth: int, published: float):
    n = count("resnet", CIFAR10, depth=depth)
    assert abs(n - published) / published < 0.03, n
    # Option A shortcuts have no parameters, so the plain net is exactly as big: a fair comparison.
    assert count("plain", CIFAR10, depth=depth) == n


def test_imagenet_parameter_counts_match_torchvision():
    assert count("resnet", IMAGENET, arch="imagenet", depth=18) == tv_count(torchvision.models.resnet18) == 11_689_512
    assert count("resnet", IMAGENET, arch="imagenet", depth=50) == tv_count(torchvision.models.resnet50) == 25_557_032
    assert count("vgg", IMAGENET, cfg="D", norm="none") == tv_count(torchvision.models.vgg16) == 138_357_544
    assert count("alexnet", IMAGENET) == tv_count(torchvision.models.alexnet) == 61_100_840
    assert count("mobilenet", IMAGENET) == 4_231_976  # the paper's 4.2M (Keras' trainable count)
    # torchvision's 6.6M has a 3x3 where the paper has the 5x5 branch: 16 more weights per kernel here.
    tv_googlenet = partial(torchvision.models.googlenet, aux_logits=False, init_weights=True)
    assert count("googlenet", IMAGENET) == tv_count(tv_googlenet) + 16 * 23_808 == 7_005_832


def test_vgg_parameter_counts_match_the_paper_and_torchvision():
    # The paper's Table 2: 133, 133, 133, 134, 138, 144 million for A, A-LRN, B, C, D, E.
    counts = {cfg: count("vgg", IMAGENET, cfg=cfg, norm="none") for cfg in ("A", "A-LRN", "B", "C", "D", "E")}
    assert counts["A"] == tv_count(torchvision.models.vgg11) == counts["A-LRN"]  # LRN has no parameters
    assert counts["B"] == tv_count(torchvision.models.vgg13)
    assert counts["E"] == tv_count(torchvision.models.vgg19)
    # C = B + 1x1 convs 256->256, 512->512, 512->512 (weights and biases)
    assert counts["C"] == counts["B"] + (256 * 256 + 256) + 2 * (512 * 512 + 512)
    paper = {"A": 133e6, "A-LRN": 133e6, "B": 133e6, "C": 134e6, "D": 138e6, "E": 144e6}
    assert all(round(counts[c] / 1e6) == round(paper[c] / 1e6) for c in paper), counts
    assert count("vgg", IMAGENET, cfg="D", norm="batch") == tv_count(torchvision.models.vgg16_bn)


def test_vgg_configurations_have_the_papers_layers():
    def convs(cfg: str) -> list[int]:
        model = build("vgg", CIFAR10, cfg=cfg, norm="none")
        return [m.kernel_size[0] for m in model.features if isinstance(m, nn.Conv2d)]

    assert [len(convs(c)) for c in ("A", "B", "C", "D", "E")] == [8, 10, 13, 13, 16]
    assert convs("C").count(1) == 3 and convs("D").count(1) == 0
    lrn = [m for m in build("vgg", CIFAR10, cfg="A-LRN").features if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrn] == [(5, 1e-4, 0.75, 2.0)]


def test_alexnet_lrn_follows_the_first_two_convs():
    model = build("alexnet", {**IMAGENET, "num_classes": 10}, lrn=True)
    kinds = [type(m).__name__ for m in model.features]
    # the paper's Sec. 3.3-3.5: conv -> ReLU -> LRN -> max pool, twice; then three convs without LRN
    assert kinds[:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"] * 2
    assert kinds.count("LocalResponseNorm") == 2
    lrn = model.features[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert count("alexnet", IMAGENET, lrn=True) == tv_count(torchvision.models.alexnet)


@pytest.mark.parametrize(
    ("norm", "layer"),
    [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("group", nn.GroupNorm), ("instance", nn.InstanceNorm2d)],
)
def test_norm_choice_reaches_every_conv(norm: str, layer: type):
    model = build("resnet", CIFAR10, norm=norm)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if type(m) is layer]
    assert len(norms) == len(convs) == 19  # ResNet-20: stem + 18 block convs, each followed by its norm
    if norm == "layer":
        assert all(m.num_groups == 1 for m in norms)
    if norm == "group":  # 16-channel maps: 8 groups of 2; 32 -> 16 groups; 64 -> Wu & He's 32
        assert sorted({(m.num_channels, m.num_groups) for m in norms}) == [(16, 8), (32, 16), (64, 32)]
    none = build("resnet", CIFAR10, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d) for m in none.modules())
    # torchvision's ResNet takes it as norm_layer: same parameter count for every affine norm
    assert count("resnet", IMAGENET, arch="imagenet", depth=18, norm=norm) == 11_689_512


@pytest.mark.parametrize(
    ("overrides", "published"),
    [  # the paper's Table 2 (CIFAR-10)
        ({"depth": 40, "growth_rate": 12, "bottleneck": False, "compression": 1.0}, 1.0e6),
        ({"depth": 100, "growth_rate": 12, "bottleneck": False, "compression": 1.0}, 7.0e6),
        ({"depth": 100, "growth_rate": 12}, 0.8e6),  # DenseNet-BC, conf/model/densenet.yaml's default
        ({"depth": 250, "growth_rate": 24}, 15.3e6),
        ({"depth": 190, "growth_rate": 40}, 25.6e6),
    ],
)
def test_densenet_parameter_counts_match_the_paper(overrides: dict, published: float):
    n = count("densenet", CIFAR10, **overrides)
    assert abs(n - published) / published < 0.05, n


def test_densenet_imagenet_parameter_counts_match_torchvision():
    assert count("densenet", IMAGENET, arch="imagenet", depth=121) == tv_count(torchvision.models.densenet121)
    assert count("densenet", IMAGENET, arch="imagenet", depth=161) == tv_count(torchvision.models.densenet161)


def test_densenet_blocks_concatenate_growth_rate_maps():
    model = build("densenet", CIFAR10, depth=40, growth_rate=12, bottleneck=False, compression=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.features.conv0(x)  # (2, 16, 32, 32)
        out = model.features.denseblock1(h)
    # 12 layers of k = 12 maps each on top of the block's 16 input maps, the input passed through unchanged
    assert out.shape == (2, 16 + 12 * 12, 32, 32) and torch.equal(out[:, :16], h)
    assert model.features.transition2.conv.out_channels == 16 + 2 * 12 * 12  # compression 1.0 keeps all
    bc = build("densenet", CIFAR10)  # BC: the transition keeps half
    assert bc.features.transition1.conv.out_channels == (24 + 16 * 12) // 2


def test_highway_parameter_count_and_gate_initialization():
    # first layer 64 -> 50, ten highway layers of H and T (50 x 50 + 50 each), classifier 50 -> 10
    assert count("highway", DIGITS) == (64 * 50 + 50) + 10 * 2 * (50 * 50 + 50) + (50 * 10 + 10)
    model = build("highway", DIGITS)
    gates = [m.gate.bias for m in model.modules() if type(m).__name__ == "HighwayLayer"]
    assert len(gates) == 10 and all(torch.all(b == -2.0) for b in gates)


def test_highway_layer_mixes_transform_and_carry():
    from dlx.models.highway import HighwayLayer

    torch.manual_seed(0)
    layer = HighwayLayer(nn.Sequential(nn.Linear(5, 5), nn.ReLU()), nn.Linear(5, 5), gate_bias=-2.0)
    x = torch.randn(3, 5)
    t = torch.sigmoid(layer.gate(x))
    torch.testing.assert_close(layer(x), layer.transform(x) * t + x * (1 - t))
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.bias.fill_(-30.0)  # T = 0: the layer carries its input
    torch.testing.assert_close(layer(x), x)


def test_deep_highway_net_passes_gradient_where_a_plain_net_does_not():
    """50 layers of 50 ReLU units, no normalization (the paper's Fig. 1 setting)."""

    def first_layer_grad(name: str, **overrides) -> float:
        torch.manual_seed(0)
        model = build(name, DIGITS, **overrides)
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        F.cross_entropy(model(x), y).backward()
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return first.weight.grad.norm().item()

    plain = first_layer_grad("mlp", depth=50, width=50, batch_norm=False)
    highway = first_layer_grad("highway", depth=50, width=50)
    assert highway > 100 * plain, (plain, highway)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("highway", {}), ("highway_conv", {"depth": 3}), ("densenet", {"depth": 16, "growth_rate": 6})],
)
def test_a_few_training_steps_lower_the_loss(name: str, overrides: dict):
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images[:64], dtype=torch.float32).unsqueeze(1)  # (64, 1, 8, 8)
    x, y = (x - x.mean()) / x.std(), torch.tensor(digits.target[:64])  # normalized, as data=digits does
    model = build(name, DIGITS, **overrides).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_lenet5_parameter_count():
    # C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850 on the paper's 32x32 input.
    assert count("lenet", {"channels": 1, "size": 32, "num_classes": 10}) == 61_706


# ---- behaviour the lectures rely on ----------------------------------------------------------------


def _block_outputs(inverted: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """20 training-mode outputs of one basic block with drop probability 0.5, its identity and its branch."""
    from dlx.models.resnet import ResidualBlock

    torch.manual_seed(0)
    block = ResidualBlock(16, 16, 1, "basic", False, True, "A", 0.5, inverted=inverted).train()
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        branch = block.branch(x)  # BN in training mode: batch statistics, the same on every call
        return [block(x) for _ in range(20)], x, branch


def test_stochastic_depth_trains_kept_branches_unscaled_as_in_the_paper():
    outs, x, branch = _block_outputs(inverted=False)
    dropped, kept = torch.relu(x), torch.relu(x + branch)  # H_l = ReLU(b_l f_l(H_{l-1}) + id(H_{l-1}))
    assert all(torch.equal(o, dropped) or torch.allclose(o, kept) for o in outs)
    assert any(torch.equal(o, dropped) for o in outs) and any(torch.allclose(o, kept) for o in outs)
    # the inverted form (named so) scales a kept branch by 1 / p_l = 2 instead
    outs, x, branch = _block_outputs(inverted=True)
    assert all(torch.equal(o, torch.relu(x)) or torch.allclose(o, torch.relu(x + 2 * branch)) for o in outs)


def test_stochastic_depth_scales_branches_by_survival_at_test_time():
    torch.manual_seed(0)
    model = build("resnet", CIFAR10, stochastic_depth=0.5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.train()
        outs = [model(x) for _ in range(4)]  # BN uses batch statistics: only dropped blocks differ
        assert any(not torch.equal(outs[0], o) for o in outs[1:])
        model.eval()
        out = model(x)
        assert torch.equal(out, model(x))
        # Test rule of Huang et al. (Eq. 5): H_l = ReLU(p_l f_l(H_{l-1}) + H_{l-1}). The same weights without
        # stochastic depth, with each branch's last BN scaled by p_l (so its output is p_l f_l), agree.
        full = build("resnet", CIFAR10)
        full.load_state_dict(model.state_dict())
        survivals = []
        for ours, theirs in zip(model.features.modules(), full.features.modules(), strict=True):
            if type(ours).__name__ == "ResidualBlock":
                survivals.append(1 - ours.drop_prob)
                theirs.branch[-1].weight.mul_(survivals[-1])
                theirs.branch[-1].bias.mul_(survivals[-1])
        # ResNet-20: 9 blocks, survival decaying linearly to p_L = 0.5
        assert survivals[0] == pytest.approx(1 - 0.5 / 9) and survivals[-1] == 0.5
        torch.testing.assert_close(full.eval()(x), out)
        # The inverted form evaluates the plain sum of every block.
        inverted = build("resnet", CIFAR10, stochastic_depth=0.5, stochastic_depth_mode="inverted")
        inverted.load_state_dict(model.state_dict())
        plain = build("resnet", CIFAR10)
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(inverted.eval()(x), plain.eval()(x))


def test_a_dropped_preact_block_computes_nothing_but_its_shortcut():
    torch.manual_seed(0)
    model = build("resnet", CIFAR10, depth=20, preact=True, stochastic_depth=0.9).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for _ in range(20):
            model(x)
    last = model.features.layer3[-1]  # kept with probability 0.1: its pre-activation BN ran only then
    assert isinstance(last.shortcut, torch.nn.Identity)
    assert 0 < last.pre[0].num_batches_tracked < 10


def test_drop_path_running_statistics_are_those_of_the_joined_net():
    torch.manual_seed(0)
    model = build("fractalnet", DIGITS, width=8, columns=3, drop_path_local=0.15, drop_path_global=0.5).train()
    x = torch.randn(32, 1, 8, 8)
    for _ in range(5):
        model(x)  # sub-networks: the running statistics mix single columns and partial joins
    joined = copy.deepcopy(model)
    joined.features.drop_path_global = 0.0
    for m in joined.modules():
        if hasattr(m, "drop_path_local"):
            m.drop_path_local = 0.0
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        joined.features(x)  # what eval runs: every column, every join
    rng = torch.get_rng_state()
    model.recalibrate([x])  # what the loop does before evaluating, on the latest training inputs
    assert torch.equal(rng, torch.get_rng_state()), "recalibration draws no random numbers"
    assert model.training, "recalibration leaves the mode as it was"
    pairs = [(a, b) for a, b in zip(model.modules(), joined.modules(), strict=True) if isinstance(a, nn.BatchNorm2d)]
    for a, b in pairs:
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)


def test_drop_path_in_training_only():
    torch.manual_seed(0)
    model = build("fractalnet", DIGITS, width=8, columns=3)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        model.train()
        outs = [model(x) for _ in range(4)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:])
        model.eval()
        torch.testing.assert_close(model(x), model(x))
    # Global drop-path trains one column: the other columns' parameters get no gradient.
    model.train()
    model.features.drop_path_global = 1.0
    model(x).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused and len(unused) < len(list(model.parameters()))


def test_mlp_widths_give_one_layer_per_entry():
    # lightning-hydra-template's SimpleDenseNet shape, 64-128-64, on digits' 64 inputs
    model = build("mlp", DIGITS, widths=[64, 128, 64], batch_norm=False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 64), (64, 128), (128, 64), (64, 10)]


def test_residual_mlp_passes_gradient_to_the_first_layer():
    """Deep sigmoid MLP: prod(W) vanishes, prod(W + 1) does not."""

    def first_layer_grad(residual: bool) -> float:
        torch.manual_seed(0)  # same default initialization for both nets
        model = build("mlp", DIGITS, depth=20, width=64, activation="sigmoid", batch_norm=False, residual=residual)
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        F.cross_entropy(model(x), y).backward()
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return first.weight.grad.norm().item()

    plain, residual = first_layer_grad(False), first_layer_grad(True)
    assert math.isfinite(residual) and residual > 100 * plain, (plain, residual)


def test_googlenet_aux_logits_only_in_training():
    model = build("googlenet", DIGITS, aux_logits=True)
    x = torch.randn(2, 1, 8, 8)
    assert model_spec(model).extra_outputs == ("aux1", "aux2")
    model.train()
    assert model(x).shape == (2, 10)  # the main logits unless the extra outputs are asked for
    logits, aux = model(x, extra_outputs=True)
    assert logits.shape == (2, 10) and {k: a.shape for k, a in aux.items()} == {"aux1": (2, 10), "aux2": (2, 10)}
    model.eval()
    with torch.no_grad():
        assert model(x, extra_outputs=True)[1] == {}
    assert model_spec(build("googlenet", DIGITS)).extra_outputs == ()


def test_bidirectional_summary_reads_the_whole_sequence_both_ways():
    torch.manual_seed(0)
    model = build("gru", PARITY, bidirectional=True, num_layers=2, hidden_size=8).eval()
    x = inputs("gru", PARITY, batch=3)
    with torch.no_grad():
        out, _ = model.rnn(x)  # (B, T, 2H): forward and backward outputs at every step
        expected = model.classifier(torch.cat([out[:, -1, :8], out[:, 0, 8:]], 1))
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(
    ("name", "data", "overrides", "key"),
    [
        ("resnet", CIFAR10, {"depth": 21}, "model.depth"),
        ("resnet", CIFAR10, {"block": "bottleneck", "depth": 32}, "model.depth"),
        ("resnet", CIFAR10, {"arch": "imagenet", "depth": 20}, "model.depth"),
        ("resnet", CIFAR10, {"arch": "imagenet", "depth": 18, "preact": True}, "model.preact"),
        ("resnet", CIFAR10, {"shortcut": "C"}, "model.shortcut"),
        ("resnet", CIFAR10, {"residual": False, "stochastic_depth": 0.5}, "model.stochastic_depth"),
        ("mlp", DIGITS, {"activation": "swish"}, "model.activation"),
        ("mlp", DIGITS, {"activation": "maxout", "pieces": 1}, "model.pieces"),
        ("mlp", DIGITS, {"widths": [64, 0]}, "model.widths"),
        ("lenet", DIGITS, {"pool": "median"}, "model.pool"),
        ("vgg", CIFAR10, {"cfg": "Z"}, "model.cfg"),
        ("fractalnet", CIFAR10, {"columns": 0}, "model.columns"),
        ("mobilenet", CIFAR10, {"width_mult": 0}, "model.width_mult"),
        ("dilated", CIFAR10, {"dilations": [1, 0]}, "model.dilations"),
        ("lstm", PARITY, {"cell": "transformer"}, "model.cell"),
        ("alexnet", CIFAR10, {"dropout": 1.0}, "model.dropout"),
        ("alexnet", CIFAR10, {"norm": "batchnorm"}, "model.norm"),
        ("vgg", CIFAR10, {"norm": "weight"}, "model.norm"),
        ("resnet", CIFAR10, {"stochastic_depth_mode": "row"}, "model.stochastic_depth_mode"),
        ("lenet", DIGITS, {"norm": "local"}, "model.norm"),
        ("googlenet", CIFAR10, {"dropout_aux": 1.0}, "model.dropout_aux"),
        ("densenet", CIFAR10, {"depth": 41}, "model.depth"),
        ("densenet", CIFAR10, {"compression": 0.0}, "model.compression"),
        ("highway", DIGITS, {"activation": "maxout"}, "model.activation"),
    ],
)
def test_bad_values_name_the_key(name: str, data: dict, overrides: dict, key: str):
    # A model raises an ordinary ValueError that names its argument, as torchvision's do ...
    with pytest.raises(InstantiationException) as err:  # Hydra wraps it
        build(name, data, **overrides)
    cause = err.value.__cause__
    assert isinstance(cause, ValueError) and str(cause).startswith(key.removeprefix("model.") + "="), cause
    # ... and dlx.build reports it as the config key, in one line (the CLI's exit 2).
    dlx.resolvers.register()
    cfg = OmegaConf.merge({"data": data}, {"model": OmegaConf.load(CONF / f"{name}.yaml")}, {"model": overrides})
    with pytest.raises(ConfigError) as err:
        dlx.build.create(cfg.model, "model")
    assert err.value.key == key and "\n" not in str(err.value), err.value


def test_bayesian_cnn_is_gal_et_al_2017s_net():
    """Sec. 5.1: conv 32@4x4, relu, conv 32@4x4, relu, max pool 2, dropout 0.25, dense 128, relu, dropout 0.5, dense."""
    model = build("bayesian_cnn", MNIST)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(32, (4, 4), (0, 0))] * 2
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    # 28 -> 25 -> 22 -> pool 11: 32 x 11 x 11 = 3,872 inputs to the dense layer
    assert model.classifier[2].in_features == 3872 and model.classifier[2].out_features == 128
    assert count("bayesian_cnn", MNIST) == (16 * 32 + 32) + (32 * 16 * 32 + 32) + (3872 * 128 + 128) + (128 * 10 + 10)
    with pytest.raises(Exception, match="kernel=5 is not allowed"):
        build("bayesian_cnn", DIGITS, kernel=5)  # 8 -> 4 -> 0: no map left
