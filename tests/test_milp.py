"""Exact verification against known answers: the exact minimum of a small ReLU network's margin (enumerated
activation patterns), a linear model, the L2 ball's branch and bound against a grid search and against
samples of the ball, and a network with an adversarial region hidden from gradient attacks, which the
program must find in either norm."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from benchmark.bounds import certify, input_box, to_network
from benchmark.milp import BROKEN, ROBUST, UNDECIDED, model_classifier, verify_point
from benchmark.threat_models import get_threat_model
from test_bounds import _exact_minimum, _seeded


def _decide(model, x, y, eps, threat="Linf", **kwargs):
    shape = tuple(x.shape[1:])
    net = to_network(model, shape)
    cert = certify(net, x, y, threat, eps)
    low, high = input_box(x, get_threat_model(threat), eps)
    results = []
    for i in range(len(x)):
        bounds = [(lo[i], hi[i]) for lo, hi in cert.layer_bounds]
        results.append(verify_point(net, x[i], int(y[i]), bounds, low[i], high[i], model_classifier(model, shape),
                                    l2_eps=eps if threat == "L2" else None, **kwargs))
    return cert, results


def test_the_program_decides_every_point_as_the_enumeration_does():
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2)), seed=13).double()
    torch.manual_seed(13)  # a network whose decision boundary crosses the square
    x = torch.rand(40, 1, 1, 2, dtype=torch.float64)
    y = model(x).argmax(1)
    eps = 0.15
    cert, results = _decide(model.float(), x.float(), y, eps)
    low, high = input_box(x, get_threat_model("Linf"), eps)
    w1, b1 = model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()
    w2, b2 = model[3].weight.detach().double().numpy(), model[3].bias.detach().double().numpy()
    statuses = {ROBUST: 0, BROKEN: 0}
    for i, result in enumerate(results):
        exact = _exact_minimum(w1, b1, w2[y[i]] - w2[1 - y[i]], b2[y[i]] - b2[1 - y[i]], low[i].numpy(), high[i].numpy())
        if abs(exact) < 1e-5:
            continue  # on the decision boundary: either answer is within rounding
        assert result.status == (ROBUST if exact > 0 else BROKEN), (i, exact, result)
        statuses[result.status] += 1
        if result.status == BROKEN:
            assert (result.x_adv >= low[i].numpy() - 1e-6).all() and (result.x_adv <= high[i].numpy() + 1e-6).all()
            with torch.no_grad():
                assert model(torch.from_numpy(result.x_adv).float().reshape(1, 1, 1, 2)).argmax(1).item() != y[i]
        if cert.certified[i]:
            assert result.status == ROBUST  # the program never contradicts a certificate
    assert statuses[ROBUST] > 0 and statuses[BROKEN] > 0 and (~cert.certified).sum() > 0



def _pooled_minimum(a, b, c, d, low, high, relu):
    """min over the box of  d + sum_k c_k f(max_i (a_k x_i + b_k)), f = relu or the identity: a 1x1 convolution's
    channels k, each max-pooled over all pixels i, by enumerating each channel's argmax and ReLU state (an LP each)."""
    n, channels = len(low), len(a)
    best = np.inf
    for winners in itertools.product(range(n), repeat=channels):
        for states in itertools.product((0, 1) if relu else (None,), repeat=channels):
            a_ub, b_ub, cost, const = [], [], np.zeros(n), d
            for k, (i, on) in enumerate(zip(winners, states)):
                for j in set(range(n)) - {i}:  # a_k (x_j - x_i) <= 0: pixel i holds the channel's maximum
                    row = np.zeros(n)
                    row[j], row[i] = a[k], -a[k]
                    a_ub.append(row)
                    b_ub.append(0.0)
                if on is not None:
                    row = np.zeros(n)
                    row[i] = -a[k] if on else a[k]  # on: a_k x_i + b_k >= 0; off: <= 0
                    a_ub.append(row)
                    b_ub.append(b[k] if on else -b[k])
                if on is not False:
                    cost[i] += c[k] * a[k]
                    const += c[k] * b[k]
            res = linprog(cost, A_ub=np.array(a_ub), b_ub=np.array(b_ub), bounds=list(zip(low, high)), method="highs")
            if res.status == 0:
                best = min(best, res.fun + const)
    return best


@pytest.mark.parametrize("relu", [True, False])
def test_max_pooling_is_decided_as_the_enumeration_does_with_a_binary_per_unstable_relu(relu):
    """MaxPool2d becomes pairwise maxima, max(p, q) = q + relu(p - q): layers whose units partly pass
    through (q) and partly meet a ReLU; the program must treat each kind as such (without a ReLU before
    the pooling, units that pass through take negative values too)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU() if relu else nn.Identity(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2, 2)).eval()
    with torch.no_grad():  # class 0 when the brightest pixel is bright, class 1 when the darkest is dark
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model[0].bias.copy_(torch.tensor([-0.3, 0.7]))
        model[4].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        model[4].bias.zero_()
    torch.manual_seed(4)
    x = torch.rand(16, 1, 2, 2)
    y = model(x).argmax(1)
    eps = 0.1
    cert, results = _decide(model, x, y, eps)
    low, high = input_box(x.double(), get_threat_model("Linf"), eps)
    a, b = model[0].weight.detach().double().flatten().numpy(), model[0].bias.detach().double().numpy()
    w, v = model[4].weight.detach().double().numpy(), model[4].bias.detach().double().numpy()
    net = to_network(model, (1, 2, 2))
    decided = {ROBUST: 0, BROKEN: 0}
    for i, result in enumerate(results):
        unstable = sum(int(((lo[i] < 0) & (hi[i] > 0) & mask).sum()) for (lo, hi), mask in zip(cert.layer_bounds, net.relu))
        assert result.binaries == unstable and result.time_s > 0  # none for always-on, always-off or passing units
        c, d = w[y[i]] - w[1 - y[i]], v[y[i]] - v[1 - y[i]]
        exact = _pooled_minimum(a, b, c, d, low[i].flatten().numpy(), high[i].flatten().numpy(), relu)
        if abs(exact) < 1e-5:
            continue
        assert result.status == (ROBUST if exact > 0 else BROKEN), (i, exact, result)
        decided[result.status] += 1
    assert decided[ROBUST] and decided[BROKEN]
    passing_across_zero = sum(int(((lo < 0) & (hi > 0) & ~mask).sum()) for (lo, hi), mask in zip(cert.layer_bounds, net.relu))
    assert passing_across_zero > 0 if not relu else passing_across_zero == 0

    eps = 0.6
    eps = 0.6

@pytest.mark.parametrize("threat, eps", [("Linf", 0.1), ("L2", 0.2)])
def test_on_a_linear_model_exact_equals_certified(threat, eps):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = 0.3 + 0.4 * torch.rand(25, 1, 2, 2)  # the ball stays inside [0, 1]: the closed form holds for L2
    y = model(x).argmax(1)
    cert, results = _decide(model, x, y, eps, threat=threat)
    assert [r.status == ROBUST for r in results] == cert.certified.tolist()
    assert 0 < sum(r.status == ROBUST for r in results) < len(x)
    if threat == "L2":  # the nearest boundary of a linear model: min over t of margin_t / ||w_y - w_t||
        w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
        for i, result in enumerate(results):
            logits = w @ x[i].reshape(-1).double() + b
            distance = min(float((logits[y[i]] - logits[t]) / (w[y[i]] - w[t]).norm()) for t in range(3) if t != y[i])
            assert result.status == (ROBUST if distance > eps else BROKEN)


class HiddenRegion(nn.Module):
    """Class 0 everywhere on digits-shaped inputs, except where pixels 0, 9 and 18 are all above 0.9: there
    class 1 wins. At a point with those pixels at 0.5 every gradient is zero (the ReLU is off)."""

    def __init__(self) -> None:
        super().__init__()
        self.flat, self.hidden, self.out = nn.Flatten(), nn.Linear(64, 1), nn.Linear(1, 2)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.hidden.weight.zero_()
            self.hidden.weight[0, [0, 9, 18]] = 1.0
            self.hidden.bias.fill_(-2.7)  # > 0 only when the three pixels sum above 2.7
            self.out.weight.copy_(torch.tensor([[0.0], [100.0]]))
            self.out.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.out(self.relu(self.hidden(self.flat(x))))


def test_the_program_finds_an_adversarial_region_gradient_attacks_miss():
    from benchmark.attacks.apgd import APGD

    model = HiddenRegion().eval()
    x = torch.full((1, 1, 8, 8), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    eps = 0.45  # the three pixels can reach 0.95 each: the region is inside the ball
    attack = APGD("Linf", loss="ce", n_iter=100, n_restarts=5, seed=0)
    assert not bool(attack(model, x, y, eps).success.any())  # zero gradients: APGD never moves
    cert, (result,) = _decide(model, x, y, eps)
    assert not cert.certified[0] and result.status == BROKEN and result.target == 1
    assert (result.x_adv[[0, 9, 18]] > 0.9).all() and np.abs(result.x_adv - 0.5).max() <= eps + 1e-9
    _, (safe,) = _decide(model, x, y, 0.35)  # 0.85 each at most: the region is out of reach
    assert safe.status == ROBUST


def test_the_l2_search_agrees_with_a_grid_search_of_the_disc():
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                  nn.Linear(8, 2)), seed=26)
    torch.manual_seed(26)  # a boundary that crosses the square
    x = torch.rand(40, 1, 1, 2)
    y = model(x).argmax(1)
    eps, steps = 0.2, 401
    cert, results = _decide(model, x, y, eps, threat="L2")
    offsets = torch.stack(torch.meshgrid(torch.linspace(-eps, eps, steps), torch.linspace(-eps, eps, steps),
                                         indexing="ij"), -1).reshape(-1, 2)
    spacing = 2 * eps / (steps - 1)
    checked = {ROBUST: 0, BROKEN: 0}
    for i, result in enumerate(results):
        grid = x[i].reshape(1, 2) + offsets
        inside = ((grid >= 0) & (grid <= 1)).all(1)
        with torch.no_grad():
            wrong = model(grid.reshape(-1, 1, 1, 2)).argmax(1) != y[i]
        distances = offsets.norm(dim=1)[wrong & inside]
        nearest = float(distances.min()) if len(distances) else float("inf")  # the grid's nearest wrong label
        assert result.status != UNDECIDED, result.reason
        if nearest < eps:  # a grid point of the ball is misclassified: the truth is "broken"
            assert result.status == BROKEN, (i, nearest)
        elif nearest > eps + 2 * spacing:  # nothing wrong within a grid step beyond the ball: "robust"
            assert result.status == ROBUST, (i, nearest)
        else:
            continue
        checked[result.status] += 1
    assert checked[ROBUST] > int(cert.certified.sum()) and checked[BROKEN] > 0


def test_the_l2_search_finds_the_hidden_region_at_its_exact_distance():
    model = HiddenRegion().eval()  # the region starts where the three pixels sum to 2.7: 0.4 more each
    x = torch.full((1, 1, 8, 8), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    distance = 0.4 * 3 ** 0.5
    _, (broken,) = _decide(model, x, y, distance * 1.02, threat="L2")
    assert broken.status == BROKEN and np.linalg.norm(broken.x_adv - 0.5) <= distance * 1.02 + 1e-9
    _, (safe,) = _decide(model, x, y, distance * 0.98, threat="L2")
    assert safe.status == ROBUST
    assert broken.reason == safe.reason == ""  # a reason is kept (and shown) for undecided points only


def test_an_l2_node_highs_cannot_solve_is_split_and_the_point_still_decided(monkeypatch):
    """A node whose QP HiGHS ends with an error (after the looser retry) is split at its loosest ReLU, so the
    answer is the one a solved node gives; with no ReLU left to split, the point is undecided, and says why."""
    import benchmark.l2_exact as l2_exact

    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)), seed=14)
    torch.manual_seed(14)
    x = 0.2 + 0.6 * torch.rand(30, 1, 1, 3)
    y = model(x).argmax(1)
    _, plain = _decide(model, x, y, 0.4, threat="L2")
    real_solve, calls = l2_exact._solve, []

    def root_fails(solver, deadline, eps):
        calls.append(solver)
        status, prune = real_solve(solver, deadline, eps)
        first_of_its_program = calls.count(solver) == 1  # each class t gets its own solver: its root node
        return ("kSolveError", prune) if first_of_its_program else (status, prune)

    monkeypatch.setattr(l2_exact, "_solve", root_fails)
    _, split = _decide(model, x, y, 0.4, threat="L2")
    assert [r.status for r in split] == [r.status for r in plain] and len(calls) > 0
    assert {ROBUST, BROKEN} <= {r.status for r in plain}

    monkeypatch.setattr(l2_exact, "_solve", lambda solver, deadline, eps: ("kSolveError", 0.0))
    _, failed = _decide(model, x, y, 0.4, threat="L2")
    assert all(r.status == UNDECIDED and "HiGHS stopped with kSolveError on class" in r.reason for r in failed)

def test_the_l2_ball_is_decided_as_samples_of_it_say():
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)), seed=14)
    torch.manual_seed(14)
    x = 0.2 + 0.6 * torch.rand(30, 1, 1, 3)
    y = model(x).argmax(1)
    eps = 0.4
    cert, results = _decide(model, x, y, eps, threat="L2")
    directions = torch.randn(20000, 3)
    directions = directions / directions.norm(dim=1, keepdim=True) * eps * torch.rand(20000, 1) ** (1 / 3)
    decided = {ROBUST: 0, BROKEN: 0}
    for i, result in enumerate(results):
        samples = (x[i].reshape(1, 3) + directions).clamp(0, 1)
        with torch.no_grad():
            sampled_break = bool((model(samples.reshape(-1, 1, 1, 3)).argmax(1) != y[i]).any())
        assert result.status != UNDECIDED, result.reason
        decided[result.status] += 1
        if result.status == ROBUST:
            assert not sampled_break  # a proof: no sample of the ball breaks the point
        else:
            assert np.linalg.norm(result.x_adv - x[i].reshape(-1).numpy()) <= eps * (1 + 1e-6)
        if cert.certified[i]:
            assert result.status == ROBUST
    assert decided[ROBUST] > int(cert.certified.sum()) and decided[BROKEN]  # the program proves what CROWN cannot


def test_a_point_the_program_cannot_finish_in_time_is_undecided():
    model = _seeded(nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                  nn.Linear(64, 10)), seed=8)
    x = torch.rand(1, 1, 8, 8)
    y = model(x).argmax(1)
    _, (result,) = _decide(model, x, y, 0.3, time_limit=1e-3)
    assert result.status == UNDECIDED and "time limit" in result.reason and result.binaries > 0
    _, (ball,) = _decide(model, x, y, 1.0, threat="L2", time_limit=1e-3)
    assert ball.status == UNDECIDED and ball.reason == "time limit of 0.001 s" and ball.binaries > 0


def test_a_counterexample_the_model_itself_does_not_confirm_is_not_counted():
    model = HiddenRegion().eval()
    x = torch.full((1, 1, 8, 8), 0.5)
    net = to_network(model, (1, 8, 8))
    cert = certify(net, x, torch.zeros(1, dtype=torch.long), "Linf", 0.45)
    low, high = input_box(x, get_threat_model("Linf"), 0.45)
    result = verify_point(net, x[0], 0, [(lo[0], hi[0]) for lo, hi in cert.layer_bounds], low[0], high[0],
                          classify=lambda _: 0)  # a model that, unlike the network read, keeps every label
    assert result.status == UNDECIDED and "still classified 0 by the model" in result.reason
    assert result.binaries > 0 and result.time_s > 0  # the record's per-point figures


class _StubSolver:
    """Stands in for HiGHS: answers the given statuses in turn and records the options set."""

    def __init__(self, statuses):
        self.statuses, self.options, self.cleared = list(statuses), [], 0

    def setOptionValue(self, name, value):
        self.options.append((name, value))

    def getRunTime(self):
        return 2.0

    def run(self):
        self.status = self.statuses.pop(0)

    def getModelStatus(self):
        return self.status

    def clearSolver(self):
        self.cleared += 1


def test_a_node_highs_ends_inexactly_is_solved_again_looser_and_pruned_only_well_above_the_ball():
    import time

    import highspy

    from benchmark.l2_exact import _DEFAULT_TOLERANCE, _LOOSE, _LOOSE_PRUNE, _PRUNE, _solve

    statuses = highspy.HighsModelStatus
    solver = _StubSolver([statuses.kOptimal])
    assert _solve(solver, time.perf_counter() + 10, 0.5) == ("optimal", 0.25 * (1 + _PRUNE))
    name, limit = solver.options[0]
    assert name == "time_limit" and 11.9 < limit <= 12.0  # the instance's 2 s of runs plus the 10 s left
    solver = _StubSolver([statuses.kSolveError, statuses.kOptimal])
    assert _solve(solver, time.perf_counter() + 10, 0.5) == ("optimal", 0.25 * (1 + _LOOSE_PRUNE))
    assert solver.cleared == 1 and solver.options[1:] == [("primal_feasibility_tolerance", _LOOSE),
                                                          ("primal_feasibility_tolerance", _DEFAULT_TOLERANCE)]
    solver = _StubSolver([statuses.kSolveError, statuses.kSolveError])
    assert _solve(solver, time.perf_counter() + 10, 0.5)[0] == "kSolveError"  # the caller splits the node
    for status, name in ((statuses.kInfeasible, "infeasible"), (statuses.kTimeLimit, "time limit")):
        assert _solve(_StubSolver([status]), time.perf_counter() + 10, 0.5)[0] == name


def test_each_run_gets_the_time_left_on_top_of_the_instances_earlier_runs():
    from benchmark.milp import set_time_left

    solver = _StubSolver([])
    set_time_left(solver, 3.0)  # the stub's instance has run 2 s already
    set_time_left(solver, -1.0)  # nothing left: the shortest run HiGHS takes, not a limit already passed
    assert solver.options == [("time_limit", 5.0), ("time_limit", 2.001)]


def test_a_boundary_just_beyond_the_ball_within_the_tolerance_is_too_close_to_call():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    eps = 0.2
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        gap = model[1].weight[0].norm()  # the margin's gradient: distance to the boundary = margin / its norm
        model[1].bias.copy_(torch.tensor([float(eps * (1 + 2e-4) * gap - model[1].weight[0].sum() * 0.5), 0.0]))
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    _, (result,) = _decide(model, x, y, eps, threat="L2")
    assert result.status == UNDECIDED and "beyond the ball's edge" in result.reason and "too close to call" in result.reason
    _, (far,) = _decide(model, x, y, eps * 0.99, threat="L2")  # 1% inside: clearly robust
    _, (near,) = _decide(model, x, y, eps * 1.01, threat="L2")  # the boundary 1% inside the ball: broken
    assert far.status == ROBUST and near.status == BROKEN


def test_a_margin_whose_minimum_is_exactly_zero_is_too_close_to_call():
    """The smallest margin over the box is 0 (the boundary passes through the box's corner, all in exact binary
    fractions): neither a proof (it must be above the proof margin) nor a counterexample (it must be below 0)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2)).eval()
    with torch.no_grad():  # margin z_0 - z_1 = 2 x - 0.5: zero at x = 0.25
        model[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[1].bias.copy_(torch.tensor([-0.25, 0.25]))
    x, y = torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, dtype=torch.long)
    _, (edge,) = _decide(model, x, y, 0.25)
    assert edge.status == UNDECIDED and "the margin to class 1 reaches 0.00e+00, within the proof margin of 0" in edge.reason
    _, (inside,) = _decide(model, x, y, 0.125)
    _, (beyond,) = _decide(model, x, y, 0.375)
    assert inside.status == ROBUST and beyond.status == BROKEN
