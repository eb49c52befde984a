"""Local-stability metrics against models whose answers are known in closed form."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchmark import metrics
from benchmark.threat_models import L2, Linf


class Quadratic(nn.Module):
    """Logits [0, c * ||x||^2]: its Jacobian row is 2 c x, its Taylor error c ||delta||^2."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        q = self.c * x.flatten(1).pow(2).sum(1)
        return torch.stack([torch.zeros_like(q), q], dim=1)


class Threshold(nn.Module):
    """Two classes on one pixel: class 1 when x > t (logit gap s * (x - t))."""

    def __init__(self, t: float, s: float = 10.0) -> None:
        super().__init__()
        self.t, self.s = t, s

    def forward(self, x: Tensor) -> Tensor:
        z = self.s * (x.flatten(1)[:, :1] - self.t)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- input-gradient (Jacobian) norm --------------------------------------------------------------

def test_jacobian_exact_is_the_weight_frobenius_norm(linear_model):
    prob = linear_model(n=16)
    norms = metrics.jacobian_norms(prob.model, prob.x, method="exact")
    expected = prob.model.linear.weight.detach().norm()
    assert norms.shape == (16,)
    torch.testing.assert_close(norms, expected.expand(16), rtol=1e-5, atol=0)


def test_jacobian_exact_per_point_on_a_nonlinear_model():
    x = torch.rand(8, 1, 4, 4, generator=_gen())
    norms = metrics.jacobian_norms(Quadratic(3.0), x, method="exact")
    torch.testing.assert_close(norms, 6.0 * x.flatten(1).norm(dim=1), rtol=1e-5, atol=0)


def test_jacobian_auto_is_exact_for_small_inputs(linear_model):
    prob = linear_model(n=4)
    assert torch.equal(metrics.jacobian_norms(prob.model, prob.x), metrics.jacobian_norms(prob.model, prob.x, method="exact"))
    # one point alone (the size test reads the first point's shape)
    assert torch.equal(metrics.jacobian_norms(prob.model, prob.x[:1]), metrics.jacobian_norms(prob.model, prob.x, method="exact")[:1])


def test_jacobian_random_projections_estimate_the_frobenius_norm(linear_model, monkeypatch):
    prob = linear_model(n=64)
    monkeypatch.setattr(metrics, "EXACT_JACOBIAN_MAX", 10)  # "auto" must now take the estimator
    est = metrics.jacobian_norms(prob.model, prob.x, n_projections=100, generator=_gen(1))
    expected = prob.model.linear.weight.detach().norm()
    assert not torch.equal(est, expected.expand(64))
    assert abs(est.mean() / expected - 1) < 0.02
    # each point's estimate averages 100 independent projections: within 20% of the truth
    assert ((est / expected - 1).abs() < 0.2).all()


def test_jacobian_rejects_bad_settings(linear_model):
    prob = linear_model(n=2)
    with pytest.raises(ValueError, match="method"):
        metrics.jacobian_norms(prob.model, prob.x, method="fast")
    with pytest.raises(ValueError, match="n_projections"):
        metrics.jacobian_norms(prob.model, prob.x, method="projection", n_projections=0)
    assert metrics.jacobian_norms(prob.model, prob.x, method="projection", n_projections=1, generator=_gen()).shape == (2,)


def test_jacobian_keeps_a_float64_model_s_precision(linear_model):
    prob = linear_model(n=2)
    norms = metrics.jacobian_norms(prob.model.double(), prob.x.double(), method="exact")
    assert norms.dtype == torch.float64
    torch.testing.assert_close(norms, prob.model.linear.weight.detach().norm().expand(2), rtol=1e-12, atol=0)


def test_jacobian_auto_is_exact_up_to_its_limit_inclusive(linear_model, monkeypatch):
    prob = linear_model(n=2)  # 64 pixels x 10 classes = 640
    exact = metrics.jacobian_norms(prob.model, prob.x, method="exact")
    monkeypatch.setattr(metrics, "EXACT_JACOBIAN_MAX", 640)
    assert torch.equal(metrics.jacobian_norms(prob.model, prob.x, generator=_gen()), exact)
    monkeypatch.setattr(metrics, "EXACT_JACOBIAN_MAX", 639)
    assert not torch.equal(metrics.jacobian_norms(prob.model, prob.x, generator=_gen()), exact)


# --- noise resilience ----------------------------------------------------------------------------

@pytest.mark.parametrize("tm", [Linf(), L2()], ids=str)
def test_uniform_noise_stays_in_ball_and_box(tm):
    x = torch.rand(32, 1, 8, 8, generator=_gen())
    noisy = metrics.uniform_noise(x, tm, 0.3, _gen(1))
    assert tm.within(noisy, x, 0.3, tol=1e-6).all()
    inner = 0.3 + 0.4 * torch.rand(32, 1, 8, 8, generator=_gen(2))  # the box never clips here
    delta = metrics.uniform_noise(inner, tm, 0.3, _gen(3)) - inner
    if isinstance(tm, L2):  # on the sphere
        torch.testing.assert_close(tm.norm(delta), torch.full((32,), 0.3), rtol=1e-5, atol=0)
    else:  # uniform in the cube: mean 0, variance eps^2 / 3
        assert abs(delta.mean()) < 0.01 and abs(delta.var() - 0.03) < 0.002


def test_noise_accuracy_linf_closed_form():
    # one pixel at t - a, noise u uniform in [-eps, eps]: correct (class 0) iff u < a, so P = (a + eps) / (2 eps)
    eps, a, t = 0.2, 0.05, 0.5
    x = torch.full((50, 1, 1, 1), t - a)
    y = torch.zeros(50, dtype=torch.long)
    acc = metrics.noise_accuracy(Threshold(t), x, y, Linf(), eps, n_draws=400, generator=_gen())
    assert abs(acc.mean().item() - (a + eps) / (2 * eps)) < 0.01
    far = torch.full((5, 1, 1, 1), t - 2 * eps)  # the ball never crosses the boundary
    assert torch.equal(metrics.noise_accuracy(Threshold(t), far, y[:5], Linf(), eps, generator=_gen()), torch.ones(5, dtype=torch.float64))


def test_noise_accuracy_draws_only_from_its_generator():
    """The noise comes from the generator handed in (seeded per chunk by the analysis), not torch's global one."""
    x = torch.full((30, 1, 1, 1), 0.45)
    y = torch.zeros(30, dtype=torch.long)
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        draws.append(metrics.noise_accuracy(Threshold(0.5), x, y, Linf(), 0.2, n_draws=5, generator=_gen(7)))
    assert torch.equal(*draws)
    assert not torch.equal(draws[0], metrics.noise_accuracy(Threshold(0.5), x, y, Linf(), 0.2, n_draws=5, generator=_gen(8)))


def test_noise_accuracy_l2_one_pixel_sphere_is_two_points():
    # in one dimension the L2 sphere is {-eps, +eps}: a point within eps of the boundary keeps its class half the time
    eps, t = 0.2, 0.5
    x = torch.full((100, 1, 1, 1), t - 0.1)
    y = torch.zeros(100, dtype=torch.long)
    acc = metrics.noise_accuracy(Threshold(t), x, y, L2(), eps, n_draws=200, generator=_gen())
    assert abs(acc.mean().item() - 0.5) < 0.02
    assert set(acc.mul(200).round().unique().tolist()) <= set(range(201))


def test_noise_accuracy_rejects_bad_draws(linear_model):
    prob = linear_model(n=2)
    with pytest.raises(ValueError, match="n_draws"):
        metrics.noise_accuracy(prob.model, prob.x, prob.y, Linf(), 0.1, n_draws=0)


# --- local linearity -------------------------------------------------------------------------------

def test_linearity_gap_is_zero_for_a_linear_model(linear_model):
    prob = linear_model(n=32)
    x_adv = Linf().random_start(prob.x, 0.1, _gen())
    gaps = metrics.linearity_gaps(prob.model, prob.x, prob.y, x_adv)
    with torch.no_grad():
        scale = prob.model(prob.x).abs().max()
    assert gaps.shape == (32,) and (gaps <= 1e-5 * scale).all()


def test_linearity_gap_of_a_quadratic_is_its_remainder():
    x = 0.3 + 0.4 * torch.rand(16, 1, 4, 4, generator=_gen())
    x_adv = L2().random_start(x, 0.5, _gen(1))
    y = torch.zeros(16, dtype=torch.long)
    gaps = metrics.linearity_gaps(Quadratic(2.0), x, y, x_adv)
    torch.testing.assert_close(gaps, 2.0 * (x_adv - x).flatten(1).pow(2).sum(1), rtol=1e-4, atol=1e-6)


def test_best_other_class_skips_the_label():
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    assert metrics.best_other_class(logits, torch.tensor([0, 1])).tolist() == [1, 0]


def test_linearity_gap_rejects_mismatched_shapes(linear_model):
    prob = linear_model(n=4)
    with pytest.raises(ValueError, match="shape"):
        metrics.linearity_gaps(prob.model, prob.x, prob.y, prob.x[:2])


# --- Lipschitz lower bound ---------------------------------------------------------------------------

def test_lipschitz_l2_of_a_linear_model_is_its_spectral_norm(linear_model):
    prob = linear_model(n=16)
    bounds = metrics.lipschitz_lower_bounds(prob.model, prob.x, L2(), 0.05, n_steps=100, generator=_gen())
    spectral = torch.linalg.matrix_norm(prob.model.linear.weight.detach(), ord=2)
    assert (bounds <= spectral * (1 + 1e-4)).all()  # a lower bound never exceeds the constant
    assert (bounds >= spectral * (1 - 1e-3)).all()


def test_lipschitz_linf_single_output_is_the_l1_norm_of_the_weights():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(1, 16, generator=_gen()))
    x = 0.4 + 0.2 * torch.rand(8, 1, 4, 4, generator=_gen(1))
    bounds = metrics.lipschitz_lower_bounds(model, x, Linf(), 0.05, n_steps=50, generator=_gen(2))
    l1 = model[1].weight.detach().abs().sum()
    assert (bounds <= l1 * (1 + 1e-4)).all() and (bounds >= 0.98 * l1).all()


def test_lipschitz_rejects_bad_radius(linear_model):
    prob = linear_model(n=2)
    with pytest.raises(ValueError, match="radius"):
        metrics.lipschitz_lower_bounds(prob.model, prob.x, L2(), 0.0)
