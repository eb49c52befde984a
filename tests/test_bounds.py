"""Certified bounds (IBP, CROWN) against known answers: a linear model, whose margin's minimum over the set is
closed-form; a one-hidden-layer ReLU network on two inputs, whose exact minimum comes from enumerating its
activation patterns (one linear program each); the canonical form against the model's own forward pass
(max pooling as a tournament of ReLUs included); and the models the bounds refuse, with their reason."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from benchmark.bounds import NotVerifiable, certify, crown_bounds, input_box, interval_bounds, margin_objective, to_network
from benchmark.threat_models import get_threat_model
from model_zoo.architectures.digits import DigitsCNN, DigitsMLP
from model_zoo.normalize import NormalizedModel


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    return module.eval()


# ------------------------------------------------------------------ the canonical form

class _Calling(nn.Module):
    """A linear layer, then ``function`` called in forward() rather than held as a module."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function, self.fc = function, nn.Linear(4, 3)

    def forward(self, x):
        return self.function(self.fc(x.flatten(1)))


class _Reshaping(nn.Module):
    """A convolution, then ``x.<method>(-1, 8)`` (``flatten(1)``), then a linear layer."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method, self.conv, self.fc = method, nn.Conv2d(1, 2, 1), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h.flatten(1) if self.method == "flatten" else getattr(h, self.method)(-1, 8)
        return self.fc(h)


@pytest.mark.parametrize("build, shape", [
    (lambda: NormalizedModel(DigitsCNN(width=4), mean=[0.3], std=[0.7]), (1, 8, 8)),
    (lambda: DigitsMLP(hidden=16), (1, 8, 8)),
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                           nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 5)), (2, 9, 9)),
    # flattening written as a method call in forward()
    (lambda: _Reshaping("reshape"), (1, 2, 2)),
    (lambda: _Reshaping("view"), (1, 2, 2)),
    (lambda: _Reshaping("flatten"), (1, 2, 2)),
    # a ReLU with no affine map before it (on the input, or right after another): an identity map is read in
    (lambda: nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.ReLU(), nn.Linear(6, 3)), (1, 2, 2)),
])
def test_the_canonical_form_computes_the_models_logits(build, shape):
    model = _seeded(build())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.rand(7, *shape)
    net = to_network(model, shape)
    with torch.no_grad():
        expected = model(x).double()
    assert torch.allclose(net.forward(x), expected, atol=1e-5, rtol=1e-5)


def test_max_pooling_becomes_pairwise_maxima_with_passing_values():
    net = to_network(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), (1, 2, 2))
    # four values: two rounds, (a-b relu, b pass, c-d relu, d pass), then (m1-m2 relu, m2 pass)
    assert [mask.tolist() for mask in net.relu] == [[True, False, True, False], [True, False]]
    assert net.forward(torch.tensor([[[[1.0, 5.0], [-2.0, 3.0]]]])).item() == 5.0


@pytest.mark.parametrize("model, reason", [
    (nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), "a Tanh layer"),
    (nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid()), "a Sigmoid layer"),
    (_Calling(torch.sigmoid), r"^sigmoid: call_function sigmoid is not a layer the bounds take$"),
    (_Calling(lambda h: h.tanh()), r"^tanh: call_method tanh is not a layer the bounds take$"),
])
def test_layers_the_bounds_cannot_take_are_named(model, reason):
    with pytest.raises(NotVerifiable, match=reason):
        to_network(model, (1, 2, 2))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat, self.a = nn.Flatten(), nn.Linear(4, 4)

    def forward(self, x):
        h = self.flat(x)
        return self.a(h) + h


class Branching(nn.Module):
    def forward(self, x):
        return x.flatten(1) if x.sum() > 0 else -x.flatten(1)


def test_branches_and_data_dependent_models_are_not_verifiable():
    with pytest.raises(NotVerifiable, match="residual connection"):
        to_network(Residual(), (1, 2, 2))
    with pytest.raises(NotVerifiable, match="cannot be traced"):
        to_network(Branching(), (1, 2, 2))


# ------------------------------------------------------------------ known answers

def test_on_a_linear_model_both_bounds_are_the_exact_minimum_and_match_an_attack():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double().eval()
    x, eps = torch.rand(20, 1, 2, 2, dtype=torch.float64), 0.15
    y = model(x).argmax(1)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    low, high = input_box(x, get_threat_model("Linf"), eps)
    exact = []
    for i in range(len(x)):  # a linear function is smallest at a vertex of the box: enumerate the 16
        vertices = torch.tensor(list(itertools.product(*zip(low[i].tolist(), high[i].tolist()))), dtype=torch.float64)
        logits = vertices @ w.T + b
        exact.append(min((logits[:, y[i]] - logits[:, t]).min().item() for t in range(3) if t != y[i]))
    exact = torch.tensor(exact, dtype=torch.float64)
    for method in ("ibp", "crown"):
        result = certify(model, x, y, "Linf", eps, method=method)
        assert torch.allclose(result.margin_lower, exact, atol=1e-12)
    # certified exactly where the worst vertex keeps the label: the attack's answer
    worst_breaks = exact <= 0
    assert torch.equal(~certify(model, x, y, "Linf", eps).certified, worst_breaks)


def test_l2_bound_on_a_linear_model_inside_the_box_is_the_closed_form():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double().eval()
    x = 0.3 + 0.4 * torch.rand(5, 1, 2, 2, dtype=torch.float64)  # the ball of radius 0.1 stays inside [0, 1]
    y = model(x).argmax(1)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    c = w[y] - w[1 - y]
    expected = (x.flatten(1) * c).sum(1) + b[y] - b[1 - y] - 0.1 * c.norm(dim=1)
    for method in ("ibp", "crown"):  # both exact on a linear model
        assert torch.allclose(certify(model, x, y, "L2", 0.1, method=method).margin_lower, expected, atol=1e-12)


def _exact_minimum(w1, b1, c, d, low, high):
    """min over the box of c · relu(w1 x + b1) + d, by enumerating activation patterns (an LP each)."""
    best = np.inf
    for pattern in itertools.product((0, 1), repeat=len(b1)):
        on = np.array(pattern, dtype=bool)
        # active: w x + b >= 0 (written -w x <= b); inactive: w x + b <= 0
        a_ub = np.concatenate([-w1[on], w1[~on]])
        b_ub = np.concatenate([b1[on], -b1[~on]])
        objective = (c * on) @ w1
        res = linprog(objective, A_ub=a_ub if len(a_ub) else None, b_ub=b_ub if len(b_ub) else None,
                      bounds=list(zip(low, high)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + (c * on) @ b1 + d)
    return best


def test_bounds_on_a_small_relu_network_never_exceed_the_exact_minimum():
    torch.manual_seed(3)
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, 2)), seed=3).double()
    x = torch.rand(30, 1, 1, 2, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.2
    low, high = input_box(x, get_threat_model("Linf"), eps)
    w1, b1 = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    w2, b2 = model[3].weight.detach().numpy(), model[3].bias.detach().numpy()
    exact = np.array([_exact_minimum(w1, b1, w2[y[i]] - w2[1 - y[i]], b2[y[i]] - b2[1 - y[i]],
                                     low[i].numpy(), high[i].numpy()) for i in range(len(x))])
    ibp = certify(model, x, y, "Linf", eps, method="ibp").margin_lower.numpy()
    crown = certify(model, x, y, "Linf", eps, method="crown").margin_lower.numpy()
    assert (ibp <= exact + 1e-9).all() and (crown <= exact + 1e-9).all()  # sound
    assert (crown >= ibp - 1e-12).all() and (crown > ibp + 1e-6).any()  # and CROWN tighter somewhere
    assert np.mean(exact - crown) < np.mean(exact - ibp)
    # points whose neurons are all stable over the box are linear there: CROWN is exact on them
    lo, hi = interval_bounds(to_network(model, (1, 1, 2)), low, high)[0]
    stable = ((lo >= 0) | (hi <= 0)).all(1).numpy()
    assert stable.any() and np.allclose(crown[stable], exact[stable], atol=1e-9)


def test_sampled_points_of_the_ball_never_fall_below_the_bound_on_a_digits_cnn():
    model = _seeded(DigitsCNN(width=4), seed=4)
    x = torch.rand(3, 1, 8, 8)
    y = model(x).argmax(1)
    net = to_network(model, (1, 8, 8))
    low, high = input_box(x, get_threat_model("Linf"), 0.05)
    layers, margin = crown_bounds(net, x.flatten(1).double(), low, high, objective=margin_objective(y, 10))
    samples = low[:, None, :] + (high - low)[:, None, :] * torch.rand(3, 2000, 64, dtype=torch.float64)
    logits = net.forward(samples.reshape(-1, 1, 8, 8)).reshape(3, 2000, 10)
    true_margin = torch.einsum("nmc,nsc->nsm", margin_objective(y, 10), logits)
    assert (true_margin >= margin[:, None, :] - 1e-9).all()
    # every ReLU input of every sample lies inside its layer's bounds
    h = samples.reshape(-1, 64)
    for k, (lo, hi) in enumerate(layers):
        z = (h @ net.weights[k].T + net.biases[k]).reshape(3, 2000, -1)
        assert (z >= lo[:, None, :] - 1e-9).all() and (z <= hi[:, None, :] + 1e-9).all()
        h = torch.where(net.relu[k], z.clamp_min(0), z).reshape(6000, -1)


def test_a_misclassified_point_is_never_certified():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double().eval()
    x = torch.rand(10, 1, 2, 2, dtype=torch.float64)
    wrong = (model(x).argmax(1) + 1) % 3
    assert not certify(model, x, wrong, "Linf", 0.0 + 1e-9).certified.any()


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_no_points_give_an_empty_certificate_of_the_usual_types(method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.rand(0, 1, 2, 2)
    result = certify(model, x, torch.zeros(0, dtype=torch.long), "Linf", 0.1, method=method)
    assert result.margin_lower.shape == (0,) and result.margin_lower.dtype == torch.float64
    assert result.certified.shape == (0,) and result.certified.dtype == torch.bool and result.layer_bounds == []


def test_ibp_is_interval_arithmetic_layer_by_layer():
    """IBP's ReLU-input bounds and margins against interval arithmetic written out by hand."""
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), seed=9).double()
    x = torch.rand(8, 1, 2, 2, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.1
    low, high = (x.flatten(1) - eps).clamp(0, 1), (x.flatten(1) + eps).clamp(0, 1)
    w1, b1, w2, b2 = model[1].weight.detach(), model[1].bias.detach(), model[3].weight.detach(), model[3].bias.detach()
    pos, neg = w1.clamp_min(0), w1.clamp_max(0)
    lo1, hi1 = low @ pos.T + high @ neg.T + b1, high @ pos.T + low @ neg.T + b1
    a_lo, a_hi = lo1.clamp_min(0), hi1.clamp_min(0)
    margins = []
    for i in range(len(x)):
        c = w2[y[i]] - w2  # (3, 6): row t is the margin z_y - z_t's weights; row y is zero
        lower = (c.clamp_min(0) * a_lo[i]).sum(1) + (c.clamp_max(0) * a_hi[i]).sum(1) + b2[y[i]] - b2
        margins.append(lower[torch.arange(3) != y[i]].min())
    result = certify(model, x, y, "Linf", eps, method="ibp")
    (got_lo, got_hi), = result.layer_bounds
    assert torch.allclose(got_lo, lo1, atol=1e-12) and torch.allclose(got_hi, hi1, atol=1e-12)
    assert torch.allclose(result.margin_lower, torch.stack(margins), atol=1e-12)
    assert (hi1 > 1).any() and (hi1 < 1).any() and (lo1 < 0).any() and (hi1 > 0).any()  # every case of the ReLU met


def test_crown_bounds_the_first_layer_by_the_l2_ball_not_its_box():
    """Inside [0, 1], the first layer's pre-activations range over w_j . x0 + b_j +- eps ||w_j||_2, exactly; and a
    module given to certify is read with the inputs' shape (a convolution needs it)."""
    model = _seeded(nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3)), seed=10).double()
    x = 0.3 + 0.4 * torch.rand(5, 1, 2, 3, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.1  # the ball stays inside [0, 1]
    result = certify(model, x, y, "L2", eps, method="crown")
    got_lo, got_hi = result.layer_bounds[0]
    net = to_network(model, (1, 2, 3))
    centre = x.flatten(1) @ net.weights[0].T + net.biases[0]
    radius = eps * net.weights[0].norm(dim=1)
    assert torch.allclose(got_lo, centre - radius, atol=1e-12) and torch.allclose(got_hi, centre + radius, atol=1e-12)
    assert torch.equal(result.margin_lower, certify(net, x, y, "L2", eps, method="crown").margin_lower)
