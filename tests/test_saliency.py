"""Deconvnet and guided-backpropagation projections (dlx.analysis.saliency) against the ReLU rules written out
by hand; `dlx viz saliency` end to end is in tests/test_analysis.py beside CAM."""

import pytest
import torch
from torch import nn

from dlx.analysis.saliency import project, relu_rule
from dlx.errors import DlxError


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3)).eval()


def test_each_rule_is_its_relu_backward_written_out():
    net = mlp()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    W1, b1, W2 = net[0].weight, net[0].bias, net[2].weight
    classes = torch.tensor([0, 1, 2, 0])
    mask = (x @ W1.T + b1 > 0).float()  # (B, 7): the forward ReLU's switches
    g = W2[classes]  # (B, 7): the signal arriving at the ReLU from the class logit
    expected = {
        "gradient": (g * mask) @ W1,  # the true derivative
        "deconvnet": g.clamp(min=0) @ W1,  # rectified signal, no forward mask (Zeiler & Fergus)
        "guided": (g.clamp(min=0) * mask) @ W1,  # both (Springenberg et al.)
    }
    assert 0 < mask.mean() < 1 and (g < 0).any()  # the rules differ on this input
    maps = {rule: project(net, x, rule, classes)[0] for rule in expected}
    for rule, want in expected.items():
        torch.testing.assert_close(maps[rule], want, msg=rule)
    assert not torch.allclose(maps["guided"], maps["gradient"])
    assert not torch.allclose(maps["deconvnet"], maps["guided"])


def test_guided_and_deconvnet_pass_only_positive_signal_through_a_relu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.ReLU(), nn.Linear(6, 4)).eval()  # the ReLU's rule is what reaches the input
    x = torch.randn(8, 6)
    plain, _ = project(net, x, "gradient")
    assert (plain < 0).any()
    for rule in ("deconvnet", "guided"):
        assert (project(net, x, rule)[0] >= 0).all(), rule
    assert (project(net, x, "guided")[0][x <= 0] == 0).all()  # guided keeps the forward mask
    assert (project(net, x, "deconvnet")[0][x <= 0] != 0).any()  # deconvnet does not


def test_the_model_is_restored_after_a_projection():
    net = mlp()
    x = torch.randn(3, 5)
    before, _ = project(net, x, "gradient")
    project(net, x, "guided")
    with pytest.raises(RuntimeError), relu_rule(net, "deconvnet"):
        raise RuntimeError("a failure inside the block")
    assert net[1].inplace and not net[1]._backward_hooks
    torch.testing.assert_close(project(net, x, "gradient")[0], before)
    with pytest.raises(DlxError, match="nn.ReLU"):
        project(nn.Sequential(nn.Linear(5, 3), nn.Tanh()), x, "guided")


def test_a_unit_is_projected_from_its_strongest_activation():
    net = mlp()
    x = torch.randn(2, 5)
    grad, _ = project(net, x, "gradient", layer=net[0], unit=3)
    # d max_t a[:, 3] / dx for a Linear layer is its weight row: the unit's own filter.
    torch.testing.assert_close(grad, net[0].weight[3].expand(2, 5))
    with pytest.raises(DlxError, match="--unit 9"):
        project(net, x, "gradient", layer=net[0], unit=9)
