"""FAB against known answers: the box-constrained projection against LP / QP solvers, and the
attack against the closed-form minimal perturbation of a linear classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from benchmark.attacks._projections import dual_norm, project_onto_hyperplane_in_box
from benchmark.attacks.fab import FAB
from model_zoo.architectures.digits import DigitsCNN

INF = float("inf")
DUAL = {"Linf": 1, "L2": 2}


def _linear_problem(n: int = 40, d: int = 64, k: int = 10, seed: int = 0):
    """A linear classifier and points in [0.4, 0.6]^d whose minimal perturbations stay inside the box."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        lin.bias.copy_(0.5 * torch.randn(k, generator=g, dtype=torch.float64))
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.4 + 0.2 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _exact_min_norm(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, tm: str) -> torch.Tensor:
    """min_t (z_y - z_t) / ||w_y - w_t||_q, checking the minimiser is inside the box (box inactive)."""
    w, b = model[1].weight.detach(), model[1].bias.detach()
    xf = x.flatten(1)
    z = xf @ w.T + b
    dw = w[y][:, None, :] - w[None]                       # (n, k, d)
    margin = z.gather(1, y[:, None]) - z                  # (n, k)
    dist = margin / dw.norm(p=DUAL[tm], dim=2).clamp_min(1e-300)
    dist[torch.arange(len(x)), y] = INF
    best, t = dist.min(dim=1)
    wt = -dw[torch.arange(len(x)), t]                     # gradient of z_t - z_y
    step = wt.sign() if tm == "Linf" else wt / wt.norm(dim=1, keepdim=True)
    x_min = xf + best[:, None] * step
    assert bool(((x_min > 0) & (x_min < 1)).all()), "test problem must keep the box inactive"
    return best


@pytest.fixture(scope="module")
def linear():
    return _linear_problem()


# ---------------------------------------------------------------- projection


def _random_projection_problems(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    x[: n // 4, : d // 2] = (x[: n // 4, : d // 2] > 0.5).double()   # coordinates on the box faces
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[n // 4: n // 4 + 5, :2] = 0.0                                     # some coordinates cannot move
    r = 1.5 * torch.randn(n, generator=g, dtype=torch.float64)          # large |r| makes the box active
    return x, w, r


def _box_max(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The largest |<w, delta>| reachable in the direction of r inside the box."""
    s = torch.sign(r)[:, None] * w
    return (s.clamp_min(0) * (1 - x) + (-s).clamp_min(0) * x).sum(1)


def test_linf_projection_matches_linear_programming():
    x, w, r = _random_projection_problems(120, 7, seed=1)
    delta = project_onto_hyperplane_in_box(x, w, r, INF)
    feasible = _box_max(x, w, r) >= r.abs()
    n_feasible = 0
    for i in range(len(x)):
        xi, wi = x[i].numpy(), w[i].numpy()
        if not feasible[i]:
            continue
        n_feasible += 1
        d = len(xi)
        # variables (delta, t): minimise t s.t. |delta_j| <= t, <w, delta> = r, box
        a_ub = np.zeros((2 * d, d + 1))
        a_ub[np.arange(d) * 2, np.arange(d)], a_ub[np.arange(d) * 2 + 1, np.arange(d)] = 1, -1
        a_ub[:, d] = -1
        bounds = [(-xi[j], 1 - xi[j]) for j in range(d)] + [(0, None)]
        res = linprog(np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d),
                      A_eq=np.r_[wi, 0.0][None], b_eq=[r[i].item()], bounds=bounds)
        assert res.status == 0
        assert delta[i].abs().max().item() == pytest.approx(res.fun, abs=1e-9)
    assert 40 < n_feasible < len(x)  # both regimes are exercised
    ok = feasible
    assert torch.allclose((w[ok] * delta[ok]).sum(1), r[ok], atol=1e-10)
    xd = x + delta
    assert bool(((xd >= 0) & (xd <= 1)).all())


def test_l2_projection_matches_quadratic_programming():
    x, w, r = _random_projection_problems(60, 6, seed=2)
    delta = project_onto_hyperplane_in_box(x, w, r, 2.0)
    feasible = _box_max(x, w, r) >= r.abs()
    for i in torch.nonzero(feasible).flatten().tolist():
        xi, wi, ri = x[i].numpy(), w[i].numpy(), r[i].item()
        res = minimize(lambda v: v @ v, np.zeros(len(xi)), jac=lambda v: 2 * v, method="SLSQP",
                       bounds=[(-a, 1 - a) for a in xi], options={"ftol": 1e-14, "maxiter": 500},
                       constraints=[{"type": "eq", "fun": lambda v: v @ wi - ri, "jac": lambda v: wi}])
        assert res.success
        assert delta[i].norm().item() == pytest.approx(np.linalg.norm(res.x), rel=1e-6, abs=1e-9)
    assert torch.allclose((w[feasible] * delta[feasible]).sum(1), r[feasible], atol=1e-10)


@pytest.mark.parametrize("p", [INF, 2.0])
def test_projection_when_the_hyperplane_misses_the_box(p):
    """Unreachable hyperplanes get the box corner that moves furthest towards them."""
    x, w, r = _random_projection_problems(80, 5, seed=3)
    delta = project_onto_hyperplane_in_box(x, w, r, p)
    missed = _box_max(x, w, r) < r.abs()
    assert bool(missed.any())
    s = torch.sign(r)[missed, None] * w[missed]
    corner = torch.where(s > 0, 1 - x[missed], torch.where(s < 0, -x[missed], 0.0))
    assert torch.equal(delta[missed], corner)


def test_projection_edge_cases_and_errors():
    x = torch.full((2, 4), 0.5)
    w = torch.tensor([[0.0, 0, 0, 0], [1.0, -1, 0, 0]])
    assert torch.equal(project_onto_hyperplane_in_box(x, w, torch.tensor([0.3, 0.0]), 2.0), torch.zeros(2, 4))
    # box inactive: the unconstrained closed forms r * w / ||w||_2^2 and r * sign(w) / ||w||_1
    w2 = torch.tensor([[1.0, -2, 0.5, 0]])
    d2 = project_onto_hyperplane_in_box(x[:1], w2, torch.tensor([0.2]), 2.0)
    assert torch.allclose(d2, 0.2 * w2 / (w2 * w2).sum())
    dinf = project_onto_hyperplane_in_box(x[:1], w2, torch.tensor([0.2]), INF)
    assert torch.allclose(dinf, 0.2 * w2.sign() / w2.abs().sum())
    with pytest.raises(ValueError, match="p = inf and p = 2"):
        project_onto_hyperplane_in_box(x, w, torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="shape"):
        project_onto_hyperplane_in_box(x, w, torch.zeros(3), 2.0)
    with pytest.raises(ValueError, match="shape"):
        project_onto_hyperplane_in_box(x, torch.ones(2, 5), torch.zeros(2), 2.0)
    assert torch.allclose(dual_norm(w2, INF), torch.tensor([3.5]))
    assert torch.allclose(dual_norm(w2, 2.0), torch.tensor([5.25]).sqrt())
    with pytest.raises(ValueError, match="p = inf and p = 2 are supported, got p = 1.0"):
        dual_norm(w2, 1.0)


# ---------------------------------------------------------------- the attack on a linear model


@pytest.mark.parametrize("tm", ["Linf", "L2"])
@pytest.mark.parametrize("n_targets", [9, 0])
def test_fab_finds_the_exact_minimal_perturbation_of_a_linear_model(linear, tm, n_targets):
    model, x, y = linear
    exact = _exact_min_norm(model, x, y, tm)
    out = FAB(tm, n_targets=n_targets)(model, x, y, eps=1.0)
    assert bool(out.success.all())
    assert bool((out.min_norm >= exact * (1 - 1e-9)).all()), "found a perturbation below the exact minimum"
    assert bool((out.min_norm <= exact * 1.01).all())
    assert torch.allclose(out.norm, out.min_norm)


def test_batched_and_sequential_targets_agree(linear):
    model, x, y = linear
    a = FAB("L2", n_targets=4, n_iter=30)(model, x, y, eps=1.0)
    b = FAB("L2", n_targets=4, n_iter=30, batch_targets=False)(model, x, y, eps=1.0)
    assert torch.allclose(a.min_norm, b.min_norm, rtol=1e-10)
    assert torch.equal(a.queries, b.queries)
    assert torch.equal(a.queries, torch.full_like(y, 1 + 4 * 2 * 30 + 1))  # clean pass + 2 per step + success pass


@pytest.mark.parametrize("tm", ["Linf", "L2"])
def test_success_exactly_when_min_norm_within_eps(linear, tm):
    model, x, y = linear
    exact = _exact_min_norm(model, x, y, tm)
    eps = exact.median().item()
    out = FAB(tm, n_targets=9, n_iter=50)(model, x, y, eps=eps)
    assert torch.equal(out.success, out.min_norm <= eps)
    assert 0 < int(out.success.sum()) < len(x)
    assert torch.equal(out.x_adv[~out.success], x[~out.success])
    assert torch.allclose(out.norm[out.success], out.min_norm[out.success])
    # per-point eps
    eps_t = torch.where(torch.arange(len(x)) % 2 == 0, 2.0 * exact, 0.5 * exact)
    out = FAB(tm, n_targets=9, n_iter=50)(model, x, y, eps=eps_t)
    assert torch.equal(out.success, torch.arange(len(x)) % 2 == 0)


def test_early_stop_gives_the_same_verdicts_for_fewer_queries(linear):
    model, x, y = linear
    eps = _exact_min_norm(model, x, y, "Linf").median().item()
    full = FAB("Linf", n_targets=9, n_iter=40)(model, x, y, eps=eps)
    fast = FAB("Linf", n_targets=9, n_iter=40, early_stop_eps=True)(model, x, y, eps=eps)
    assert torch.equal(full.success, fast.success)
    assert bool((fast.queries[fast.success] < full.queries[fast.success]).all())
    assert bool((fast.min_norm[fast.success] <= eps).all())


def test_restarts_keep_the_first_run_and_stay_exact(linear):
    model, x, y = linear
    exact = _exact_min_norm(model, x, y, "L2")
    one = FAB("L2", n_targets=0, n_iter=20)(model, x, y, eps=1.0)
    three = FAB("L2", n_targets=0, n_iter=20, n_restarts=3)(model, x, y, eps=1.0)
    assert bool((three.min_norm <= one.min_norm).all())
    assert bool((three.min_norm >= exact * (1 - 1e-9)).all())
    assert bool((three.min_norm <= exact * 1.01).all())


# ---------------------------------------------------------------- no adversarial, bad input, networks


class _Constant(nn.Module):
    """Logits that do not depend on the input: no attack can succeed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(10, dtype=x.dtype).expand(len(x), 10) + 0.0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("n_targets", [3, 0])
def test_constant_model_gives_infinite_min_norm(n_targets):
    x = torch.rand(5, 1, 8, 8)
    y = torch.full((5,), 9)
    out = FAB("Linf", n_targets=n_targets, n_iter=5)(_Constant(), x, y, eps=1.0)
    assert bool(torch.isinf(out.min_norm).all())
    assert not bool(out.success.any())
    assert torch.equal(out.x_adv, x)


def test_misclassified_points_have_zero_min_norm():
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([9, 3, 9, 0])
    out = FAB("L2", n_targets=3, n_iter=5)(_Constant(), x, y, eps=0.1)
    assert out.min_norm.tolist() == [INF, 0.0, INF, 0.0]
    assert out.success.tolist() == [False, True, False, True]


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="beta"):
        FAB("Linf", beta=1.0)
    with pytest.raises(ValueError, match="alpha_max"):
        FAB("Linf", alpha_max=2.0)
    with pytest.raises(ValueError, match="eta"):
        FAB("Linf", eta=0.5)
    with pytest.raises(ValueError, match="n_iter"):
        FAB("Linf", n_iter=0)
    with pytest.raises(ValueError, match="classes"):
        FAB("Linf", n_targets=10, n_iter=1)(_Constant(), torch.rand(2, 1, 8, 8), torch.tensor([9, 9]), eps=0.1)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("tm, eps", [("Linf", 0.05), ("L2", 0.3)])
def test_feasible_and_deterministic_on_a_network(cnn, tm, eps):
    model, x, y = cnn
    attack = FAB(tm, n_targets=3, n_iter=15, n_restarts=2, seed=3)
    a, b = attack(model, x, y, eps=eps), attack(model, x, y, eps=eps)  # the base class asserts feasibility
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.min_norm, b.min_norm)
    with torch.no_grad():
        assert bool((model(a.x_adv[a.success]).argmax(1) != y[a.success]).all())
    assert bool(torch.isfinite(a.min_norm).any())
    untargeted = FAB(tm, n_targets=0, n_iter=15, seed=3)(model, x, y, eps=eps)
    assert bool(torch.isfinite(untargeted.min_norm).any())


@pytest.mark.parametrize("max_rows", [None, 1, 40, 80])
def test_bounded_batches_agree_with_one_batch(linear, max_rows):
    """max_rows stacks as many targets as fit (at least one); min norms as with one stacked batch."""
    model, x, y = linear
    full = FAB("L2", n_targets=4, n_iter=30, max_rows=None)(model, x, y, eps=1.0)
    bounded = FAB("L2", n_targets=4, n_iter=30, max_rows=max_rows)(model, x, y, eps=1.0)
    assert torch.allclose(full.min_norm, bounded.min_norm, rtol=1e-10)
    assert torch.equal(full.queries, bounded.queries)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_max_rows_is_refused(bad):
    with pytest.raises(ValueError, match="max_rows"):
        FAB("Linf", max_rows=bad)


# ---------------------------------------------------------------- targets, steps and accounting


def _scaled_linear_problem():
    """The linear problem with class weights scaled from 0.32x to 3.2x: the class closest in the
    input space is then often not the one with the second-highest logit, so a targeted run and an
    untargeted one give different answers."""
    model, x, _ = _linear_problem()
    with torch.no_grad():
        model[1].weight.mul_(torch.logspace(-0.5, 0.5, 10, dtype=torch.float64)[:, None])
        y = model(x).argmax(1)
    return model, x, y


def _per_target_distance(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, tm: str) -> torch.Tensor:
    """(n, k): the exact distance from each point to the boundary with each class (inf for y)."""
    w, b = model[1].weight.detach(), model[1].bias.detach()
    z = x.flatten(1) @ w.T + b
    dist = (z.gather(1, y[:, None]) - z) / (w[y][:, None, :] - w[None]).norm(p=DUAL[tm], dim=2).clamp_min(1e-300)
    return dist.scatter(1, y[:, None], INF)


def _second_class(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).sort(dim=1, descending=True).indices[:, 1]


@pytest.mark.parametrize("tm", ["Linf", "L2"])
def test_fab_t_reaches_the_boundary_of_its_target_not_the_nearest_one(tm):
    model, x, y = _scaled_linear_problem()
    dist = _per_target_distance(model, x, y, tm)
    to_target = dist.gather(1, _second_class(model, x)[:, None]).squeeze(1)
    nearest = dist.min(dim=1).values
    elsewhere = nearest < 0.8 * to_target
    assert int(elsewhere.sum()) >= 10, "the problem must have points whose nearest class is not the target"
    out = FAB(tm, n_targets=1)(model, x, y, eps=1.0)
    assert bool((out.min_norm >= to_target * (1 - 1e-9)).all())
    assert bool((out.min_norm <= to_target * 1.01).all())
    # untargeted FAB, on the same points, goes to the nearest boundary
    untargeted = FAB(tm, n_targets=0)(model, x, y, eps=1.0)
    assert bool((untargeted.min_norm >= nearest * (1 - 1e-9)).all())
    assert bool((untargeted.min_norm <= nearest * 1.01).all())


def test_fab_untargeted_ignores_a_class_that_duplicates_the_true_one():
    """A class whose weights equal the true class's has no boundary to reach (w = 0): its
    linearised distance must count as infinite, never as the nearest."""
    model, x, y = _scaled_linear_problem()
    true = int(y.mode().values)
    twin = next(k for k in range(10) if not bool((y == k).any()))
    with torch.no_grad():
        model[1].weight[twin] = model[1].weight[true]
        model[1].bias[twin] = model[1].bias[true] - 5.0  # below the true class everywhere: labels unchanged
        assert torch.equal(model(x).argmax(1), y)
    exact = _per_target_distance(model, x, y, "L2").min(dim=1).values
    out = FAB("L2", n_targets=0, n_iter=50)(model, x, y, eps=1.0)
    assert int((y == true).sum()) >= 10
    assert bool((out.min_norm <= exact * 1.01).all())


def _reference_fab_t(model, x, y, target, n_iter, alpha_max=0.1, eta=1.05, beta=0.9):
    """The FAB-T iteration written out for a linear model in L2 with the box inactive: the
    linearisation is exact, and the projections are the closed forms r w / ||w||^2."""
    w_all, b_all = model[1].weight.detach(), model[1].bias.detach()
    x0 = x.flatten(1)
    w = w_all[target] - w_all[y]                        # gradient of g = z_t - z_y
    c = b_all[target] - b_all[y]
    best = torch.full((len(x),), INF, dtype=x.dtype)
    cur = x0.clone()
    for _ in range(n_iter):
        g_cur = (cur * w).sum(1) + c
        sq = (w * w).sum(1, keepdim=True)
        d_cur = -g_cur[:, None] * w / sq
        d_orig = -((x0 * w).sum(1) + c)[:, None] * w / sq
        n_cur, n_orig = d_cur.norm(dim=1), d_orig.norm(dim=1)
        alpha = (n_cur / (n_cur + n_orig)).clamp(max=alpha_max)[:, None]
        new = ((1 - alpha) * (cur + eta * d_cur) + alpha * (x0 + eta * d_orig)).clamp(0, 1)
        adv = (new @ w_all.T + b_all).argmax(1) != y
        dist = (new - x0).norm(dim=1)
        best = torch.where(adv & (dist < best), dist, best)
        cur = torch.where(adv[:, None], (1 - beta) * x0 + beta * new, new)
    return best


@pytest.mark.parametrize("n_iter", [1, 2, 5])
def test_fab_t_steps_follow_the_algorithm(n_iter):
    model, x, y = _scaled_linear_problem()
    target = _second_class(model, x)
    reference = _reference_fab_t(model, x, y, target, n_iter)
    out = FAB("L2", n_targets=1, n_iter=n_iter)(model, x, y, eps=1.0)
    assert torch.allclose(out.min_norm, reference, rtol=1e-9)
    if n_iter == 1:  # one step lands at eta times the distance to the target's boundary
        to_target = _per_target_distance(model, x, y, "L2").gather(1, target[:, None]).squeeze(1)
        assert torch.allclose(out.min_norm, 1.05 * to_target, rtol=1e-9)


class CountingModel(nn.Module):
    """Counts the calls and the rows it is asked to classify."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls, self.rows = inner, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls, self.rows = self.calls + 1, self.rows + len(x)
        return self.inner(x)


@pytest.mark.parametrize("settings", [
    dict(n_targets=4), dict(n_targets=4, batch_targets=False), dict(n_targets=0),
    dict(n_targets=4, early_stop_eps=True), dict(n_targets=0, early_stop_eps=True),
    dict(n_targets=3, max_rows=80, early_stop_eps=True),
])
def test_queries_count_every_row_the_model_saw(linear, settings):
    """Per point, queries are the forward passes spent on it: summed, every row the model saw."""
    model, x, y = linear
    counting = CountingModel(model)
    eps = _exact_min_norm(model, x, y, "L2").median().item()
    out = FAB("L2", n_iter=12, **settings)(counting, x, y, eps=eps)
    assert int(out.queries.sum()) == counting.rows


def test_targets_run_as_one_batch_unless_told_otherwise(linear):
    model, x, y = linear
    calls = {}
    for batch in (True, False):
        counting = CountingModel(model)
        FAB("L2", n_targets=4, n_iter=30, batch_targets=batch)(counting, x, y, eps=1.0)
        calls[batch] = counting.calls
    # the clean pass, two passes per step (per target when run one by one), the success pass
    assert calls == {True: 1 + 2 * 30 + 1, False: 1 + 4 * 2 * 30 + 1}
    counting = CountingModel(model)
    FAB("L2", n_targets=4, n_iter=30)(counting, x, y, eps=1.0)  # batch_targets is the default
    assert counting.calls == 1 + 2 * 30 + 1


def test_untargeted_queries_and_a_single_point(linear):
    model, x, y = linear
    out = FAB("L2", n_targets=0, n_iter=20)(model, x, y, eps=1.0)
    assert torch.equal(out.queries, torch.full_like(y, 1 + 2 * 20 + 1))
    exact = _exact_min_norm(model, x[:1], y[:1], "L2")
    one = FAB("L2", n_targets=0)(model, x[:1], y[:1], eps=1.0)
    assert bool(one.success.all()) and float(one.min_norm[0]) <= float(exact[0]) * 1.01


@pytest.mark.parametrize("n_targets", [1, 0])
def test_early_stop_when_every_point_falls_at_the_first_step(linear, n_targets):
    model, x, y = linear
    for n_iter in (2, 10):
        out = FAB("L2", n_targets=n_targets, n_iter=n_iter, early_stop_eps=True)(model, x, y, eps=1.0)
        assert bool(out.success.all())
        assert torch.equal(out.queries, torch.full_like(y, 1 + 2 + 1))  # clean, one step, success
    # targets run one after the other: the later ones find every point done and cost nothing
    out = FAB("L2", n_targets=3, batch_targets=False, early_stop_eps=True)(model, x, y, eps=1.0)
    assert torch.equal(out.queries, torch.full_like(y, 1 + 2 + 1))


@pytest.mark.parametrize("tm", ["Linf", "L2"])
def test_early_stop_keeps_the_targets_of_the_rows_left(tm):
    model, x, y = _scaled_linear_problem()
    to_target = _per_target_distance(model, x, y, tm).gather(1, _second_class(model, x)[:, None]).squeeze(1)
    eps = to_target.median().item()
    out = FAB(tm, n_targets=1, n_iter=40, early_stop_eps=True)(model, x, y, eps=eps)
    assert not bool(out.success[to_target > eps].any())
    assert bool(out.success[to_target * 1.01 < eps].all())


def test_early_stop_runs_the_last_point_to_the_end(linear):
    """With one point left unbroken, its run goes on to the last step (and is counted so)."""
    model, x, y = linear
    exact = _exact_min_norm(model, x, y, "L2")
    top2 = exact.topk(2).values
    eps = float(top2.mean())  # every point but the farthest one falls within eps
    out = FAB("L2", n_targets=0, n_iter=15, early_stop_eps=True)(model, x, y, eps=eps)
    last = exact.argmax()
    assert int(out.success.sum()) == len(x) - 1 and not bool(out.success[last])
    assert int(out.queries[last]) == 1 + 2 * 15 + 1
    assert float(out.min_norm[last]) <= float(exact[last]) * 1.01


def test_a_min_norm_exactly_at_eps_counts_as_success(linear):
    model, x, y = linear
    first = FAB("L2", n_targets=2, n_iter=20)(model, x, y, eps=1.0)
    again = FAB("L2", n_targets=2, n_iter=20)(model, x, y, eps=first.min_norm)
    assert torch.equal(again.min_norm, first.min_norm)
    assert bool(again.success.all())


def test_all_points_misclassified_costs_no_step():
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 3, 5])
    for n_targets in (3, 0):
        out = FAB("L2", n_targets=n_targets, n_iter=5)(_Constant(), x, y, eps=0.1)
        assert out.min_norm.tolist() == [0.0, 0.0, 0.0]
        assert out.queries.tolist() == [2, 2, 2]  # the clean pass and the success pass


def test_restarts_start_within_half_the_best_norm(linear, monkeypatch):
    model, x, y = linear
    attack = FAB("L2", n_targets=0, n_iter=10, n_restarts=2)
    first = FAB("L2", n_targets=0, n_iter=10)(model, x, y, eps=0.5)
    radii = []
    original = attack.threat_model.random_start

    def recording(x_orig, radius, generator):
        radii.append(radius.clone())
        return original(x_orig, radius, generator)

    monkeypatch.setattr(attack.threat_model, "random_start", recording)
    attack(model, x, y, eps=0.5)
    assert len(radii) == 1
    assert torch.allclose(radii[0], torch.minimum(first.min_norm, torch.tensor(0.5, dtype=x.dtype)) / 2)


def test_settings_at_their_bounds_and_the_defaults():
    FAB("Linf", alpha_max=0.0), FAB("Linf", alpha_max=1.0), FAB("Linf", eta=1.0)
    with pytest.raises(ValueError, match="beta"):
        FAB("Linf", beta=0.0)
    with pytest.raises(ValueError, match="n_restarts"):
        FAB("Linf", n_restarts=0)
    with pytest.raises(ValueError, match="n_targets"):
        FAB("Linf", n_targets=-1)
    with pytest.raises(ValueError, match="needs at least 11 classes, the model has 10"):
        FAB("Linf", n_targets=10, n_iter=1)(_Constant(), torch.rand(2, 1, 8, 8), torch.tensor([9, 9]), eps=0.1)
    from benchmark.threat_models import L2

    class L1(L2):
        p = 1.0

    with pytest.raises(ValueError, match="FAB supports the Linf and L2 threat models"):
        FAB(L1())
    fab = FAB("Linf")
    assert (fab.n_iter, fab.n_restarts, fab.n_targets, fab.seed) == (100, 1, 9, 0)
    assert (fab.batch_targets, fab.early_stop_eps, fab.max_rows) == (True, False, "auto")
