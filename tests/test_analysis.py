"""The analysis after the protocol: PGD-CE baseline, robustness curve, metrics (known answers on linear models)."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.analysis import CURVE_STEPS, analyse, curve_from_norms, needs_norm_search, point_norms
from benchmark.checks import check_zero_gradients
from benchmark.record import PointResult
from benchmark.runner import evaluate
from benchmark.threat_models import L2, Linf


def _protocol_points(norms: torch.Tensor, eps: float, clean_correct: torch.Tensor | None = None) -> list[PointResult]:
    """What the protocol would record for points whose minimal adversarial norms are ``norms``:
    APGD breaks those within eps (at norm eps, no minimal norm), FAB measures the others exactly."""
    points = []
    for i, r in enumerate(norms.tolist()):
        if clean_correct is not None and not clean_correct[i]:
            points.append(PointResult(i, 0, False, False, "clean"))
        elif r <= eps:
            points.append(PointResult(i, 0, True, False, "apgd-ce", norm=eps, min_norm=eps))
        else:
            points.append(PointResult(i, 0, True, True, None, min_norm=r))
    return points


def _true_curve(norms: torch.Tensor, eps: float) -> list[float]:
    return [acc for _, acc in curve_from_norms(norms.double(), eps)]


# --- curve bookkeeping ------------------------------------------------------------------------------

def test_curve_grid_holds_eps_exactly():
    eps = 8 / 255
    curve = curve_from_norms(torch.tensor([0.0, 0.01, 0.05, math.inf]), eps)
    grid = [e for e, _ in curve]
    assert len(curve) == CURVE_STEPS + 1 and grid[0] == 0 and grid[CURVE_STEPS // 2] == eps
    assert grid == sorted(grid) and abs(grid[-1] - 2 * eps) < 1e-12
    assert [a for _, a in curve][0] == 0.75 and curve[-1][1] == 0.25
    with pytest.raises(ValueError, match="even"):
        curve_from_norms(torch.zeros(2), eps, steps=5)


def test_point_norms_agree_with_the_protocol_at_eps():
    eps = 0.1
    points = [
        PointResult(0, 0, False, False, "clean"),
        PointResult(1, 0, True, False, "apgd-ce", norm=0.1000001, min_norm=0.1000001),  # float rounding above eps
        PointResult(2, 0, True, False, "fab-t", norm=0.04, min_norm=0.04),
        PointResult(3, 0, True, True, None, min_norm=0.07),  # an extra attack found less than the protocol
        PointResult(4, 0, True, True, None, min_norm=None),
        PointResult(5, 0, True, False, "square", norm=0.1, min_norm=0.13),  # FAB found 0.13, Square 0.1
    ]
    norms = point_norms(points, eps, extra={1: 0.06})
    assert norms[0] == 0 and norms[1] == 0.06 and norms[2] == 0.04 and norms[5] == 0.1
    assert norms[3] > eps and math.isinf(norms[4])
    curve = dict(map(tuple, curve_from_norms(norms, eps)))
    assert curve[eps] == sum(p.robust for p in points) / len(points)
    assert curve[0.0] == sum(p.clean_correct for p in points) / len(points)


def test_needs_norm_search_only_where_no_minimal_norm_is_known():
    from benchmark.protocol import broken_before_minimum_norm, get_protocol

    blind = broken_before_minimum_norm(get_protocol("standard"))
    assert blind == ("apgd-ce", "apgd-t")  # found by the attacks' kinds: FAB-T is the first minimum-norm attack
    assert broken_before_minimum_norm(get_protocol("rand")) == ("apgd-ce", "apgd-dlr")  # no FAB at all
    assert broken_before_minimum_norm(get_protocol("plus")) == ("apgd-ce", "apgd-dlr")
    assert needs_norm_search(PointResult(0, 0, True, False, "apgd-ce", norm=0.1, min_norm=0.1), blind)
    assert needs_norm_search(PointResult(0, 0, True, False, "apgd-t", norm=0.1, min_norm=0.1), blind)
    assert needs_norm_search(PointResult(0, 0, True, True, None), blind)  # e.g. the 'rand' version has no FAB
    assert not needs_norm_search(PointResult(0, 0, True, True, None, min_norm=0.3), blind)
    assert not needs_norm_search(PointResult(0, 0, True, False, "fab-t", norm=0.05, min_norm=0.05), blind)
    assert not needs_norm_search(PointResult(0, 0, True, False, "square", norm=0.05, min_norm=0.05), blind)
    assert not needs_norm_search(PointResult(0, 0, False, False, "clean"), blind)


# --- analyse on linear models ---------------------------------------------------------------------------

@pytest.mark.parametrize("tm", [Linf(), L2()], ids=str)
def test_analyse_linear_model_known_answers(linear_model, tm):
    # 4 classes: FAB-T's 3 targets cover every class, so its minimal norms are the closed-form ones
    prob = linear_model(n=48, num_classes=4, seed=1)
    true = prob.min_perturbation(tm.p)
    eps = float(true.median())
    clean_correct = torch.ones(48, dtype=torch.bool)
    clean_correct[:4] = False  # as if misclassified: non-robust at every eps
    true[:4] = 0.0
    points = _protocol_points(true, eps, clean_correct)
    result = analyse(prob.model, prob.x, prob.y, tm, eps, points, seed=0, device="cpu", batch_size=20)

    curve = [acc for _, acc in result.curve]
    assert curve == sorted(curve, reverse=True)
    assert curve[CURVE_STEPS // 2] == sum(p.robust for p in points) / 48
    assert curve[0] == 44 / 48
    # below eps the curve comes from FAB's minimal norms: the closed-form curve, up to one point at a grid value
    for got, want in zip(curve[: CURVE_STEPS // 2], _true_curve(true, eps)):
        assert abs(got - want) <= 1 / 48 + 1e-12

    weight = prob.model.linear.weight.detach()
    assert result.metrics["jacobian_norm"] == pytest.approx(float(weight.norm()), rel=1e-5)
    logit_scale = float(prob.model(prob.x).detach().abs().max())
    assert abs(result.metrics["local_linearity"]) <= 1e-5 * logit_scale
    if isinstance(tm, L2):
        # the supremum is the spectral norm; LIPSCHITZ_STEPS = 20 ascent steps come within 0.5% of it (a lower bound)
        spectral = float(torch.linalg.matrix_norm(weight, 2))
        assert spectral * (1 - 5e-3) <= result.metrics["lipschitz_lower_bound"] <= spectral * (1 + 1e-5)
    assert 0 <= result.metrics["noise_accuracy"] <= 1
    assert result.metrics["noise_gap"] == pytest.approx(result.metrics["noise_accuracy"] - curve[CURVE_STEPS // 2])
    # PGD-CE can only overestimate the true robust accuracy; on a linear model it is nearly exact
    true_robust = float((true > eps).double().mean())
    assert true_robust <= result.baselines["pgd-ce"] <= true_robust + 6 / 48
    assert result.time_s > 0


def test_analyse_is_deterministic(linear_model):
    prob = linear_model(n=24, num_classes=4)
    true = prob.min_perturbation(float("inf"))
    eps = float(true.median())
    points = _protocol_points(true, eps)
    first = analyse(prob.model, prob.x, prob.y, Linf(), eps, points, seed=3)
    second = analyse(prob.model, prob.x, prob.y, Linf(), eps, points, seed=3)
    assert (first.baselines, first.metrics, first.curve) == (second.baselines, second.metrics, second.curve)


def test_the_jacobian_metric_by_random_projections_is_seeded_too(linear_model):
    """Inputs x classes above the exact Jacobian's limit (64x64 pixels, 300 classes) take random projections;
    they come from the analysis' seeded streams, whatever torch's global generator holds."""
    prob = linear_model(n=3, num_classes=300, side=64)
    points = [PointResult(i, int(prob.y[i]), True, True, None) for i in range(3)]
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append(analyse(prob.model, prob.x, prob.y, L2(), 1e-3, points, seed=3).metrics["jacobian_norm"])
    assert runs[0] == runs[1]
    exact = float(prob.model.linear.weight.detach().norm())
    assert runs[0] != pytest.approx(exact, rel=1e-6) and runs[0] == pytest.approx(exact, rel=0.3)  # an estimate


def test_pgd_ce_baseline_exposes_saturated_logits(linear_model):
    # weights x 1e4: the same decision boundaries (same minimal norms) but a softmax that is exactly
    # one-hot, so the cross-entropy gradient vanishes: PGD-CE sees a robust model, the truth is not
    prob = linear_model(n=48, num_classes=4, scale=1e4)
    true = prob.min_perturbation(float("inf"))
    eps = float(true.quantile(0.75))
    points = _protocol_points(true, eps)
    result = analyse(prob.model, prob.x, prob.y, Linf(), eps, points)
    protocol = sum(p.robust for p in points) / 48
    assert result.baselines["pgd-ce"] >= protocol + 0.2
    assert check_zero_gradients(prob.model, prob.x, prob.y).fired


def test_analyse_rejects_mismatched_points(linear_model):
    prob = linear_model(n=4)
    with pytest.raises(ValueError, match="point results"):
        analyse(prob.model, prob.x, prob.y, Linf(), 0.1, [])
    with pytest.raises(ValueError, match="eps"):
        analyse(prob.model, prob.x, prob.y, Linf(), 0.0, _protocol_points(torch.ones(4), 0.1))


def test_runner_stores_the_analysis(linear_model):
    # an eps above every minimal norm: APGD-CE breaks every point, the later stages have nothing left
    prob = linear_model(n=16, num_classes=10)
    true = prob.min_perturbation(float("inf"))
    eps = float(true.max()) * 2
    result = evaluate(prob.model, "digits", "Linf", eps, x=prob.x, y=prob.y, progress=False, device="cpu")
    assert set(result.baselines) == {"pgd-ce"}
    assert set(result.metrics) == {"noise_accuracy", "noise_gap", "jacobian_norm", "local_linearity", "lipschitz_lower_bound"}
    curve = dict(map(tuple, result.curve))
    assert curve[eps] == result.robust_accuracy == 0.0 and curve[0.0] == result.clean_accuracy == 1.0
    # the curve is drawn from attacks, so it can only lie above the true robust accuracy
    for (_, got), want in zip(result.curve, _true_curve(true, eps)):
        assert got >= want
    assert result.timings["analysis_s"] > 0


# --- the curve's search: first-order targets and the bisection over the grid ---------------------------

@pytest.mark.parametrize("tm", [Linf(), L2()], ids=["Linf", "L2"])
def test_first_order_targets_are_the_nearest_class_of_a_linear_model(linear_model, tm):
    """For a linear model the first-order distance to each class's boundary is exact, so the target is the
    class whose boundary is nearest; the clean logits' order (what FAB-T and APGD-T use) often is not."""
    from benchmark.analysis import first_order_targets

    prob = linear_model(n=64, num_classes=10, seed=3)
    with torch.no_grad():  # classes of different weight scales: the largest other logit is then often not the nearest class
        factors = torch.linspace(0.3, 3.0, 10)
        prob.model.linear.weight.mul_(factors[:, None])
        prob.model.linear.bias.mul_(factors)
        prob.y = prob.model(prob.x).argmax(1)
    per_target = prob.per_target(tm.p)
    nearest = per_target.argmin(1)
    assert torch.equal(first_order_targets(prob.model, prob.x, prob.y, tm), nearest)
    logits = prob.model(prob.x).detach().scatter(1, prob.y[:, None], float("-inf"))
    assert (logits.argmax(1) != nearest).any()  # the test can tell the two choices apart


@pytest.mark.parametrize("wrong_guess", [False, True])
def test_the_search_finds_the_smallest_breaking_level_whatever_its_first_guess(linear_model, monkeypatch, wrong_guess):
    """With an attack that breaks a point exactly from its level on (monotone), the search returns that level
    for every start of the search; a right first-order guess settles a point in two tries, a wrong one costs
    the tries of a bisection."""
    import benchmark.analysis as analysis

    prob = linear_model(n=40, num_classes=10, seed=5)
    grid = analysis.curve_grid(1.0)
    answer = torch.randint(1, len(grid) + 1, (40,), generator=torch.Generator().manual_seed(0))  # len(grid): never
    tries = []

    def oracle(model, x, y, target, threat_model, e):
        rows = [int((prob.x.flatten(1) == xi.flatten()).all(1).nonzero()) for xi in x]
        level = torch.searchsorted(torch.tensor(grid), e.double())
        tries.append(len(x))
        return level >= answer[rows]

    def distances(model, x, y, threat_model):
        level = answer.clamp_max(len(grid) - 1)
        at = torch.tensor(grid)[(len(grid) - 1 - level) if wrong_guess else level]  # right: the answer's value
        return torch.full((len(x), 10), float("inf")).scatter(1, ((y + 1) % 10)[:, None], at[:, None].float())

    monkeypatch.setattr(analysis, "_breaks", oracle)
    monkeypatch.setattr(analysis, "first_order_distances", distances)
    got = analysis.smallest_breaking_levels(prob.model, prob.x, prob.y, Linf(), grid, torch.ones(40, dtype=torch.long),
                                            torch.full((40,), len(grid) - 1))
    assert torch.equal(got, answer)
    if not wrong_guess:
        assert sum(tries) <= 2 * 40
    else:
        assert sum(tries) > 2 * 40


@pytest.mark.parametrize("tm", [Linf(), L2()], ids=["Linf", "L2"])
def test_the_bisection_finds_each_points_smallest_breaking_grid_value(linear_model, tm):
    from benchmark.analysis import curve_grid, smallest_breaking_levels

    prob = linear_model(n=64, num_classes=10, seed=4)
    true = prob.min_perturbation(tm.p).double()
    eps = float(true.median())
    grid = curve_grid(eps)
    want = torch.tensor([next((k for k, e in enumerate(grid) if e >= r), len(grid)) for r in true.tolist()])
    n = len(true)
    # searched over the whole grid (nothing known), and from a known breaking index (the protocol's norm)
    got = smallest_breaking_levels(prob.model, prob.x, prob.y, tm, grid, torch.ones(n, dtype=torch.long),
                                   torch.full((n,), len(grid) - 1))
    close = (got - want).abs() <= 1  # a point within float rounding of a grid value may land on either side
    assert close.all() and (got == want).float().mean() >= 0.9, (got, want)
    below = want <= CURVE_STEPS // 2
    known = smallest_breaking_levels(prob.model, prob.x[below], prob.y[below], tm, grid,
                                     torch.ones(int(below.sum()), dtype=torch.long), torch.full((int(below.sum()),), CURVE_STEPS // 2))
    assert ((known - want[below]).abs() <= 1).all()
