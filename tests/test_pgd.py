"""FGSM and PGD against closed-form answers on linear models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.attacks.pgd import FGSM, PGD
from benchmark.threat_models import get_threat_model

P = {"Linf": float("inf"), "L2": 2.0}


def _optimal_direction(problem, threat: str) -> torch.Tensor:
    """Unit-norm steepest direction from class y towards the other class of a two-class linear model."""
    weight = problem.model.linear.weight.detach()
    diff = (weight[1 - problem.y] - weight[problem.y]).view_as(problem.x)
    return get_threat_model(threat).steepest_direction(diff)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_fgsm_is_optimal_on_a_two_class_linear_model(linear_model, threat) -> None:
    problem = linear_model(n=100, num_classes=2, scale=1.0)
    r = problem.min_perturbation(P[threat])
    eps = float(r.median())
    out = FGSM(threat)(problem.model, problem.x, problem.y, eps)
    # the step is exactly eps along the optimal direction, for every point
    torch.testing.assert_close(out.x_adv, problem.x + eps * _optimal_direction(problem, threat), atol=1e-6, rtol=0)
    clear = (r / eps - 1).abs() > 0.01
    assert torch.equal(out.success[clear], (r < eps)[clear])
    assert bool((out.queries == 2).all())


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_fgsm_steps_along_the_loss_it_is_given(linear_model, threat) -> None:
    # with 10 classes the DLR and cross-entropy gradients point different ways
    problem = linear_model(n=50, num_classes=10, scale=1.0)
    args = (problem.model, problem.x, problem.y, 0.05)
    ce, dlr = FGSM(threat, loss="ce")(*args).x_adv, FGSM(threat, loss="dlr")(*args).x_adv
    assert not torch.allclose(ce, dlr)
    one_step = PGD(threat, n_iter=1, step_size=1.0, loss="dlr", random_start=False, early_stop=False)(*args).x_adv
    torch.testing.assert_close(dlr, one_step, atol=0, rtol=0)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_fgsm_steps_every_point_even_a_misclassified_one(linear_model, threat) -> None:
    problem = linear_model(n=20, num_classes=2, scale=1.0)
    y = 1 - problem.y  # every clean point misclassified: still one full step each
    out = FGSM(threat)(problem.model, problem.x, y, 0.05)
    norms = get_threat_model(threat).norm(out.x_adv - problem.x)
    torch.testing.assert_close(norms, torch.full((20,), 0.05), atol=1e-6, rtol=0)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_pgd_breaks_exactly_the_points_below_eps(linear_model, threat, loss) -> None:
    # scale 100: a sharp softmax, so that the cross-entropy's maximiser in the ball is adversarial
    problem = linear_model(n=120, scale=100.0)
    r = problem.min_perturbation(P[threat])
    eps = float(r.median())
    keep = (r / eps - 1).abs() > 0.1
    x, y, below = problem.x[keep], problem.y[keep], r[keep] < eps
    out = PGD(threat, n_iter=40, step_size=0.1, loss=loss)(problem.model, x, y, eps)
    assert torch.equal(out.success, below)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_early_stop_returns_the_first_misclassified_iterate(linear_model, threat) -> None:
    """From x with steps of eps/4 along the optimal direction, iterate k has norm k eps / 4 (k <= 4).

    With early stopping a broken point comes back as the first iterate past its minimal
    perturbation r, of norm (floor(4 r / eps) + 1) eps / 4, after that many + 1 forward passes;
    without it every point gets all steps and ends at norm eps.
    """
    problem = linear_model(n=100, num_classes=2, scale=1.0)
    r = problem.min_perturbation(P[threat])
    eps = float(r.median()) * 1.5
    tm, n_iter = get_threat_model(threat), 8
    quarters = 4 * r / eps
    clear = (quarters - quarters.round()).abs() > 0.02
    stopped = PGD(threat, n_iter=n_iter, random_start=False, early_stop=True)(problem.model, problem.x, problem.y, eps)
    broken = stopped.success & clear
    assert int(broken.sum()) > 20 and torch.equal(stopped.success[clear], (r < eps)[clear])
    k = quarters.floor() + 1
    torch.testing.assert_close(stopped.norm[broken], (k * eps / 4)[broken], atol=1e-5, rtol=0)
    assert torch.equal(stopped.queries[broken], (k.long() + 2)[broken])  # iterates 0..k, plus the base check
    assert bool((stopped.queries[~stopped.success] == n_iter + 1).all())
    full = PGD(threat, n_iter=n_iter, random_start=False, early_stop=False)(problem.model, problem.x, problem.y, eps)
    assert bool((full.queries == n_iter + 1).all())
    torch.testing.assert_close(full.x_adv, tm.project(problem.x + eps * _optimal_direction(problem, threat), problem.x, eps))


@pytest.mark.parametrize("threat", ["Linf", "L2"])
@pytest.mark.parametrize("attack", [
    lambda tm: PGD(tm, n_iter=10, step_size=0.5), lambda tm: PGD(tm, n_iter=5, early_stop=False), lambda tm: FGSM(tm),
], ids=["pgd", "pgd-no-early-stop", "fgsm"])
def test_stays_in_the_box_and_the_ball(threat, attack) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    x = torch.rand(32, 1, 8, 8).round()  # many pixels on the faces of the box
    y = torch.randint(0, 10, (32,))
    eps = torch.linspace(0.05, 2.0, 32)
    out = attack(threat)(model, x, y, eps)
    assert bool(get_threat_model(threat).within(out.x_adv, x, eps, 1e-6).all())


def test_pgd_is_deterministic_given_the_seed() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    a, b, c = (PGD("L2", n_iter=3, seed=s)(model, x, y, 0.5) for s in (0, 0, 1))
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)


def test_bad_settings_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: ce, dlr"):
        PGD("Linf", loss="hinge")
    with pytest.raises(ValueError, match="n_iter"):
        PGD("Linf", n_iter=0)
    with pytest.raises(ValueError, match="step_size"):
        PGD("Linf", step_size=0.0)
    with pytest.raises(ValueError, match="unknown threat model"):
        FGSM("Linfinity")


def test_repr_names_the_threat_model_and_every_setting() -> None:
    assert repr(PGD("Linf", n_iter=5)) == (
        "PGD(Linf, seed=0, n_iter=5, step_size=0.25, loss='ce', random_start=True, early_stop=True)")
    assert repr(FGSM("L2", seed=3)).startswith("FGSM(L2, seed=3, n_iter=1, step_size=1.0, loss='ce'")


@pytest.mark.parametrize("n", [1, 3])
def test_a_robust_point_gets_every_step_and_a_broken_one_ends_the_run(linear_model, n) -> None:
    problem = linear_model(n=n, num_classes=2, scale=1.0)
    x, y = problem.x, problem.y
    robust = PGD("Linf")(problem.model, x, y, 1e-4)  # the default 10 steps, none enough
    assert not robust.success.any() and (robust.queries == 11).all()
    broken = PGD("Linf", n_iter=5)(problem.model, x, 1 - y, 1e-4)  # misclassified from the start
    assert broken.success.all() and (broken.queries == 2).all()
    assert (broken.norm <= 1e-4 + 1e-6).all()  # kept at its (random) start


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_points_misclassified_at_the_start_cost_one_pass(linear_model, threat) -> None:
    problem = linear_model(n=8)
    wrong = (problem.y + 1) % 10
    out = PGD(threat, n_iter=10, random_start=False)(problem.model, problem.x, wrong, 0.05)
    assert bool(out.success.all()) and torch.equal(out.x_adv, problem.x)
    assert torch.equal(out.queries, torch.full_like(wrong, 2))  # the first step's pass and the success pass


@pytest.mark.parametrize("threat", ["Linf", "L2"])
@pytest.mark.parametrize("early_stop", [True, False])
def test_a_point_with_a_zero_gradient_stops_where_it_stands(linear_model, threat, early_stop) -> None:
    """A saturated softmax (weights x 300) has an exactly zero cross-entropy gradient far from every
    boundary: such a point would never move, so it costs one pass and its random start is its result."""
    problem = linear_model(n=60, scale=300.0)
    x, y = problem.x, problem.y
    eps = float(problem.min_perturbation(P[threat]).median())
    attack = PGD(threat, n_iter=30, step_size=0.1, early_stop=early_stop)
    out = attack(problem.model, x, y, eps)
    start = get_threat_model(threat).random_start(x, torch.full((len(x),), eps), attack.generator("cpu"))
    with torch.enable_grad():
        xr = start.clone().requires_grad_(True)
        nn.functional.cross_entropy(problem.model(xr), y, reduction="sum").backward()
    flat = (xr.grad.flatten(1) == 0).all(1) & (problem.model(start).argmax(1) == y)
    assert 5 < int(flat.sum()) < len(x) - 5
    assert torch.equal(out.queries[flat], torch.full((int(flat.sum()),), 2))  # its one pass and the success pass
    assert torch.equal(out.x_adv[flat], start[flat]) and not bool(out.success[flat].any())
    assert bool((out.queries[~flat] > 2).any()) and 0 < int(out.success.sum())
