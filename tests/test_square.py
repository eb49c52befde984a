"""Square Attack: known answers on linear models, a flat-gradient model, budgets, feasibility, determinism."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchmark.attacks.pgd import PGD
import benchmark.attacks.square as square_module
from benchmark.attacks.square import (
    MAX_LINF_CHANNELS, MAX_PROPOSALS, MIN_PASS_ROWS, Square, _l2_pattern, _window, nested_rectangles, p_schedule, pass_rows,
    proposals_per_point, window_side,
)
from benchmark.threat_models import L2, Linf

torch.set_num_threads(1)

DUAL = {"Linf": 1, "L2": 2}  # the dual norm of the threat model's norm, for the linear closed form


class LinearModel(nn.Module):
    def __init__(self, d: int = 64, k: int = 10, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w, self.b = torch.randn(k, d, generator=g), torch.randn(k, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w.T + self.b


class Quantised(nn.Module):
    """A linear model on inputs rounded to steps of 1/64: its input gradient is exactly zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * 64) / 64)


class ChaoticRobust(nn.Module):
    """Class 0 always wins by a margin in [8, 12] that changes erratically with the input.

    Each of the 5 logits is the sine of its own projection of the input, so the margin
    ``10 + z_0 - max_k z_k`` moves with every pixel and a random update lowers it about half the
    time: Square keeps accepting updates and never breaks a point.
    """

    def forward(self, x: Tensor) -> Tensor:
        pixel = torch.arange(x[0].numel(), dtype=x.dtype, device=x.device)
        projections = torch.cos(pixel[:, None] * torch.arange(1, 6, dtype=x.dtype, device=x.device) * 0.7)
        z = torch.sin(1000 * x.flatten(1) @ projections)
        return torch.cat([10 + z[:, :1], z[:, 1:]], dim=1)


class CountingModel(nn.Module):
    """Counts the rows it is asked to classify."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.inner(x)


class NoProjectionLinf(Linf):
    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        return x_adv


class NoProjectionL2(L2):
    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        return x_adv


def minimal_perturbation(model: LinearModel, x: Tensor, y: Tensor, dual: int) -> Tensor:
    """Exact smallest perturbation that misclassifies a linear model (box ignored): min_t (z_y-z_t)/||w_y-w_t||_*."""
    z = model(x)
    gap = z.gather(1, y[:, None]) - z
    dist = gap / (model.w[y][:, None, :] - model.w[None]).norm(p=dual, dim=2).clamp_min(1e-12)
    dist[torch.arange(len(x)), y] = float("inf")
    return dist.min(dim=1).values


def interior_points(n: int, seed: int = 0) -> Tensor:
    """Points in [0.3, 0.7]^64: no perturbation within the test budgets reaches the box."""
    return 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# Linf search over the vertices finds any point with slack; L2 random search must align the perturbation
# with w_y - w_t in 64 dims, which 3,000 queries reliably do to a cosine above 0.6 (checked on 50 draws).
@pytest.mark.parametrize("threat,eps,n_queries,reach", [("Linf", 0.05, 1000, 0.7), ("L2", 0.3, 3000, 0.6)])
def test_linear_model_closed_form(threat: str, eps: float, n_queries: int, reach: float) -> None:
    model, x = LinearModel(), interior_points(100)
    y = model(x).argmax(1)
    d_min = minimal_perturbation(model, x, y, DUAL[threat])
    out = Square(threat, n_queries=n_queries)(model, x, y, eps)
    impossible, easy = d_min > eps * (1 + 1e-4), d_min < reach * eps
    assert impossible.sum() >= 5 and easy.sum() >= 10  # both groups are populated
    assert not out.success[impossible].any()  # provably robust points are never "broken"
    assert out.success[easy].all()
    assert (out.queries[easy] <= n_queries).all()


@pytest.mark.parametrize("threat,eps", [("Linf", 0.1), ("L2", 0.5)])
def test_breaks_a_model_with_zero_gradient(threat: str, eps: float) -> None:
    inner, x = LinearModel(seed=1), interior_points(40, seed=1)
    model = Quantised(inner)
    y = model(x).argmax(1)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xr).logsumexp(1).sum(), xr)
    assert (grad == 0).all()
    assert not PGD(threat, n_iter=20, random_start=False)(model, x, y, eps).success.any()
    # the rounding moves each coordinate by <= 1/128, so points with a large slack are breakable
    easy = minimal_perturbation(inner, x, y, DUAL[threat]) < 0.5 * eps
    assert easy.sum() >= 10
    out = Square(threat, n_queries=1000)(model, x, y, eps)
    assert out.success[easy].all()


def moved_from_the_start(attack: Square, model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor) -> tuple[Tensor, Tensor]:
    """The attack's output and, per point, whether it left its initial perturbation (an update was accepted).

    A one-query run with the same seed stops right after the initial perturbation.
    """
    out = attack(model, x, y, eps)
    start = Square(attack.threat_model, n_queries=1, p_init=attack.p_init, seed=attack.seed)(model, x, y, eps)
    return out, (out.x_adv != start.x_adv).flatten(1).any(1)


@pytest.mark.parametrize("threat_model", [NoProjectionLinf(), NoProjectionL2()], ids=["Linf", "L2"])
def test_updates_are_feasible_without_the_final_projection(threat_model: Linf | L2) -> None:
    # inputs touching the box (exact 0s and 1s) and one eps per point; __call__ raises BoundsError if infeasible
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    x[:, :, :4] = x[:, :, :4].round()
    eps = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.3, 0.5]) * (1 if threat_model.p == float("inf") else 5)
    y = torch.zeros(6, dtype=torch.long)
    out, moved = moved_from_the_start(Square(threat_model, n_queries=300), ChaoticRobust(), x, y, eps)
    assert moved.all()  # the points checked are accepted updates, not the initial perturbation
    assert (out.norm <= eps + 1e-5).all()


@pytest.mark.parametrize("threat,eps", [("Linf", 0.1), ("L2", 1.0)])
def test_perturbation_uses_the_whole_budget_in_the_interior(threat: str, eps: float) -> None:
    x = 0.4 + 0.2 * torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out, moved = moved_from_the_start(Square(threat, n_queries=300), ChaoticRobust(), x, torch.zeros(4, dtype=torch.long), eps)
    assert moved.all()
    delta = out.x_adv - x
    if threat == "Linf":
        assert torch.allclose(delta.abs(), torch.full_like(delta, eps), atol=1e-6)  # every pixel at +-eps
    else:
        assert torch.allclose(out.norm, torch.full((4,), eps), rtol=1e-4)  # mass moved, norm kept at eps


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_query_counting(threat: str, monkeypatch) -> None:
    lin, x = LinearModel(seed=4), interior_points(30, seed=4)
    z = lin(x)
    y = z.argmax(1)
    y[:10] = z.argmin(1)[:10]  # misclassified by a wide margin: broken by the first query
    model = CountingModel(lin)
    attack = Square(threat, n_queries=200)
    eps = torch.full((30,), 0.02 if threat == "Linf" else 0.1)
    monkeypatch.setattr(square_module, "MAX_PROPOSALS", 1)  # one proposal per point and pass
    run = attack.run(model, x, y, eps, attack.generator("cpu"))
    assert (run.queries[:10] == 1).all()
    assert model.rows == int(run.queries.sum())  # every forward row is counted, nothing else
    monkeypatch.undo()  # several proposals per pass once few points remain: the same queries counted
    model.rows = 0
    again = attack.run(model, x, y, eps, attack.generator("cpu"))
    assert torch.equal(again.queries, run.queries) and torch.equal(again.x_adv, run.x_adv)
    assert model.rows >= int(run.queries.sum())  # the proposals after an accepted one are thrown away
    assert ((run.queries >= 1) & (run.queries <= 200)).all()
    # points still robust after the run spent the whole budget
    still_robust = lin(run.x_adv).argmax(1) == y
    assert still_robust.any() and (run.queries[still_robust] == 200).all()
    out = attack(lin, x, y, eps)  # the base class adds its success check
    assert torch.equal(out.queries, run.queries + 1)


@pytest.mark.parametrize("threat,eps", [("Linf", 0.05), ("L2", 0.5)])
@pytest.mark.parametrize("most", [2, 7, 64])
def test_proposals_queried_together_give_the_result_of_one_at_a_time(monkeypatch, threat, eps, most) -> None:
    """Whatever the proposals per point and pass, each point's accepted updates, final point and queries
    are those of one proposal per pass; only the passes are fewer."""
    lin, x = LinearModel(seed=2), interior_points(24, seed=2)
    y = lin(x).argmax(1)
    attack = Square(threat, n_queries=300)
    calls = []
    model = CallCounter(lin, calls)
    monkeypatch.setattr(square_module, "MAX_PROPOSALS", 1)
    one = attack(model, x, y, eps)
    passes_one = len(calls)
    monkeypatch.setattr(square_module, "MAX_PROPOSALS", most)
    calls.clear()
    many = attack(model, x, y, eps)
    assert torch.equal(one.x_adv, many.x_adv) and torch.equal(one.queries, many.queries)
    assert torch.equal(one.success, many.success) and 0 < int(one.success.sum()) < len(x)
    assert len(calls) < passes_one


def test_one_point_left_shares_its_passes_with_its_next_proposals() -> None:
    """A batch of 64 with one robust point: its 1,000 queries take 1000 / 64 passes, not 1,000."""
    x = interior_points(64)
    y = torch.zeros(64, dtype=torch.long)
    y[1:] = 1  # ConstantLogits(0.5) says class 0: every point but the first is misclassified from the start
    calls = []
    out = Square("Linf", n_queries=1000)(CallCounter(ConstantLogits(0.5), calls), x, y, 0.1)
    assert int(out.queries[0]) == 1000 + 1 and bool((out.queries[1:] == 2).all())
    assert calls[0] == 64 and len(calls) - 2 == -(-999 // 64)  # the first pass, the rounds, the success check


def test_proposals_per_point_fill_the_rows_of_a_pass() -> None:
    assert proposals_per_point(500, 500) == 1 and proposals_per_point(251, 500) == 1
    assert proposals_per_point(250, 500) == 2 and proposals_per_point(1, 500) == MAX_PROPOSALS
    assert proposals_per_point(3, 10) == 3 and proposals_per_point(0, 10) == 10
    # a pass may hold the handed batch, and at least MIN_PASS_ROWS rows of small inputs, not of ImageNet's
    assert pass_rows(torch.zeros(500, 1, 8, 8)) == 500 and pass_rows(torch.zeros(1, 1, 8, 8)) == MIN_PASS_ROWS
    assert pass_rows(torch.zeros(1, 3, 32, 32)) == 10  # the CPU's budget for 3x32x32 inputs
    assert pass_rows(torch.zeros(2, 3, 224, 224)) == 2


class CallCounter(nn.Module):
    """Records the rows of every forward pass."""

    def __init__(self, inner: nn.Module, calls: list[int]) -> None:
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(len(x))
        return self.inner(x)


class ConstantLogits(nn.Module):
    """The same logits for every input: class 0 leads class 1 by ``lead`` (0: a tie, which is not class 1's win)."""

    def __init__(self, lead: float) -> None:
        super().__init__()
        self.lead = lead

    def forward(self, x: Tensor) -> Tensor:
        z = torch.zeros(len(x), 3, dtype=x.dtype)
        z[:, 0] = self.lead
        return z


@pytest.mark.parametrize("n", [1, 3])
def test_restarts_spend_the_budget_again_on_robust_points(n: int) -> None:
    x, y = interior_points(n), torch.zeros(n, dtype=torch.long)
    out = Square("Linf", n_queries=50, n_restarts=3).run(ChaoticRobust(), x, y, torch.full((n,), 0.1), torch.Generator().manual_seed(0))
    assert (out.queries == 150).all()
    # a small positive margin is still robust: every restart runs again
    out = Square("Linf", n_queries=20, n_restarts=3).run(ConstantLogits(0.5), x, y, torch.full((n,), 0.1), torch.Generator().manual_seed(0))
    assert (out.queries == 60).all()


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_only_a_lower_margin_is_accepted(threat: str) -> None:
    # a model whose margin never changes: no update is an improvement, so the initial perturbation stays
    x, y = interior_points(4), torch.zeros(4, dtype=torch.long)
    _, moved = moved_from_the_start(Square(threat, n_queries=30), ConstantLogits(0.5), x, y, 0.1)
    assert not moved.any()


def test_a_margin_of_zero_counts_as_broken() -> None:
    # class 1 ties with class 0, the argmax: point labelled 1 is misclassified from the first query on
    x, y = interior_points(2), torch.ones(2, dtype=torch.long)
    out = Square("L2", n_queries=100, n_restarts=2)(ConstantLogits(0.0), x, y, 0.5)
    assert out.success.all() and (out.queries == 2).all()  # one query, plus the base class's check


def test_points_broken_in_the_first_restart_end_the_run() -> None:
    lin, x = LinearModel(seed=4), interior_points(6, seed=4)
    y = lin(x).argmin(1)  # misclassified by a wide margin
    out = Square("Linf", n_queries=50, n_restarts=3)(lin, x, y, 0.05)
    assert out.success.all() and (out.queries == 2).all()


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_determinism(threat: str) -> None:
    x, y = interior_points(8), torch.zeros(8, dtype=torch.long)
    eps = 0.05 if threat == "Linf" else 0.5
    a = Square(threat, n_queries=100, seed=7)(ChaoticRobust(), x, y, eps)
    b = Square(threat, n_queries=100, seed=7)(ChaoticRobust(), x, y, eps)
    c = Square(threat, n_queries=100, seed=8)(ChaoticRobust(), x, y, eps)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_p_schedule_and_window_side() -> None:
    assert p_schedule(1, 10_000, 0.8) == p_schedule(10, 10_000, 0.8) == 0.8
    assert p_schedule(11, 10_000, 0.8) == p_schedule(50, 10_000, 0.8) == 0.4
    assert p_schedule(51, 10_000, 0.8) == 0.2
    assert p_schedule(8001, 10_000, 0.8) == 0.8 / 2**9
    # other budgets: the iteration index is rescaled to a 10,000-query run
    assert p_schedule(5, 5000, 0.8) == 0.8 and p_schedule(6, 5000, 0.8) == 0.4
    assert p_schedule(4999, 5000, 0.8) == 0.8 / 2**9
    assert window_side(0.8, 32, 32, 1) == 29 and window_side(0.8, 224, 224, 1) == 200
    assert window_side(0.8, 8, 8, 1) == 7 and window_side(1.0, 8, 8, 1) == 7  # at most h - 1
    assert window_side(0.8 / 2**9, 8, 8, 1) == 1 and window_side(0.8 / 2**9, 8, 8, 3) == 3


@pytest.mark.parametrize("side,h,w", [(1, 8, 8), (3, 8, 8), (2, 5, 7)])
def test_window_masks_are_the_square_at_each_corner(side: int, h: int, w: int) -> None:
    tops, lefts = torch.meshgrid(torch.arange(h - side + 1), torch.arange(w - side + 1), indexing="ij")
    masks = _window(tops.flatten(), lefts.flatten(), side, h, w)
    assert masks.shape == ((h - side + 1) * (w - side + 1), 1, h, w)
    assert (masks.flatten(1).sum(1) == side * side).all()
    for top, left, mask in zip(tops.flatten().tolist(), lefts.flatten().tolist(), masks[:, 0]):
        rows, cols = mask.nonzero().unbind(1)
        assert (rows.min(), cols.min(), rows.max(), cols.max()) == (top, left, top + side - 1, left + side - 1)


@pytest.mark.parametrize("threat,eps", [("Linf", 4 / 255), ("L2", 0.5)])
def test_imagenet_sized_inputs_down_to_the_smallest_window(threat: str, eps: float) -> None:
    # a 10-query run goes down the whole p schedule (windows of side 200 down to 9): the window
    # masks must stay small (a table of every 9x9 window of a 224x224 image would take 2.3 GB)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    out = Square(threat, n_queries=10)(ChaoticRobust(), x, torch.zeros(2, dtype=torch.long), eps)
    assert (out.norm <= eps + 1e-5).all() and (out.queries == 11).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_linf_update_never_wastes_a_query(channels: int) -> None:
    # x_best at +eps everywhere: a draw of all + signs would leave it as it is, so some channel must flip
    x = 0.3 + 0.4 * torch.rand(200, channels, 6, 6, generator=torch.Generator().manual_seed(5))
    eps4 = torch.full((200, 1, 1, 1), 0.1)
    x_plus, x_minus = x + eps4, x - eps4
    gen = torch.Generator().manual_seed(0)
    attack = Square("Linf")
    changed_channels = []
    for side in (1, 2, 5):
        new = attack._update_linf(x_plus, x_minus, x_plus, side, torch.rand(200, 4, generator=gen))
        moved = new != x_plus
        assert moved.flatten(1).any(1).all()
        assert torch.allclose(new[moved], x_minus[moved])  # flipped pixels sit at -eps, the rest stay at +eps
        changed_channels.append(moved.flatten(2).any(2))
    if channels > 1:  # a uniformly chosen non-empty set: single channels and several together both occur
        counts = torch.cat(changed_channels).sum(1)
        assert (counts == 1).any() and (counts == channels).any()


def _mid_points(n: int, c: int, h: int, w: int, seed: int = 0) -> Tensor:
    return 0.3 + 0.4 * torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_windows_reach_every_pixel(threat: str) -> None:
    # from the clean point every draw changes exactly its window (L2: the first window W1, which gets the
    # pattern); over many draws the smallest windows must land on every pixel, the borders included
    n, h, w = 3000, 7, 9
    x = _mid_points(n, 2, h, w)
    eps4, gen = torch.full((n, 1, 1, 1), 0.1), torch.Generator().manual_seed(1)
    attack = Square(threat)
    if threat == "Linf":
        new, side = attack._update_linf(x + eps4, x - eps4, x, 1, torch.rand(n, 4, generator=gen)), 1
    else:
        new, side = attack._update_l2(x, eps4, x, 3, torch.rand(n, 5 + 2, generator=gen)), 3
    moved = (new != x).any(1)  # (n, h, w)
    assert (moved.flatten(1).sum(1) == side * side).all()  # one side x side window per point
    hits = moved.sum(0).float()
    assert (hits > 0).all()
    if threat == "Linf":  # a uniformly placed pixel: each one about n / (h * w) times
        assert (hits - n / (h * w)).abs().max() < 0.35 * n / (h * w)


def _pattern_counts(patterns: Tensor, bits: int) -> Tensor:
    codes = (patterns.long() * (2 ** torch.arange(bits))).sum(1)
    return torch.bincount(codes, minlength=2**bits)


def test_linf_window_signs_are_uniform_over_every_channel_pattern() -> None:
    n, c = 16000, 3
    x = _mid_points(n, c, 4, 4)
    eps4 = torch.full((n, 1, 1, 1), 0.1)
    new = Square("Linf")._update_linf(x + eps4, x - eps4, x, 1, torch.rand(n, 4, generator=torch.Generator().manual_seed(2)))
    delta = (new - x).flatten(2)
    plus = (delta > 0).any(2)  # per point and channel: the window moved to +eps
    assert ((delta != 0).sum(2) == 1).all()  # one pixel per channel, at +eps or -eps
    counts = _pattern_counts(plus, c)
    assert (counts - n / 8).abs().max() < 0.1 * n / 8  # all 8 sign patterns, equally often


def test_linf_flips_are_uniform_over_the_non_empty_channel_sets() -> None:
    # x_best at +eps everywhere: a draw of all + is redrawn as a uniform non-empty flip, so the set of
    # channels that move to -eps is uniform over the 7 non-empty sets (1/8 + 1/8 * 1/7 = 1/7 each)
    n, c = 28000, 3
    x = _mid_points(n, c, 4, 4)
    eps4 = torch.full((n, 1, 1, 1), 0.1)
    new = Square("Linf")._update_linf(x + eps4, x - eps4, x + eps4, 1,
                                      torch.rand(n, 4, generator=torch.Generator().manual_seed(3)))
    moved = (new != x + eps4).flatten(2).any(2)
    counts = _pattern_counts(moved, c)
    assert counts[0] == 0
    assert (counts[1:] - n / 7).abs().max() < 0.06 * n / 7


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_determinism_with_several_channels(threat: str) -> None:
    # with one channel the Linf flip has a single choice; with three every draw must come from the seeded generator
    x, y = _mid_points(6, 3, 8, 8), torch.zeros(6, dtype=torch.long)
    eps = 0.05 if threat == "Linf" else 0.5
    a = Square(threat, n_queries=100, seed=7)(ChaoticRobust(), x, y, eps)
    torch.manual_seed(123)  # the global generator must play no part
    b = Square(threat, n_queries=100, seed=7)(ChaoticRobust(), x, y, eps)
    assert torch.equal(a.x_adv, b.x_adv)


def test_l2_initial_perturbation_is_tiled_and_has_norm_eps() -> None:
    # 32x32: tiles of side 32 // 5 = 6, each the unit pattern with one random sign per tile and channel
    x, eps = _mid_points(4, 2, 32, 32), 3.0
    start = Square("L2", n_queries=1)(ChaoticRobust(), x, torch.zeros(4, dtype=torch.long), eps)
    torch.testing.assert_close(start.norm, torch.full((4,), eps), atol=1e-4, rtol=0)
    delta, pattern = start.x_adv - x, _l2_pattern(6, torch.device("cpu"), torch.float32)
    for top, left in [(0, 0), (6, 0), (0, 24), (24, 24)]:
        block = delta[:, :, top:top + 6, left:left + 6]
        signs = torch.sign(block[:, :, :1, :1] / pattern[0, 0])
        unit = block / block.flatten(2).norm(dim=2)[:, :, None, None]
        torch.testing.assert_close(unit, signs * pattern, atol=1e-5, rtol=0)
    # 8x8 digits: tiles of the smallest side, 3
    small = Square("L2", n_queries=1)(ChaoticRobust(), _mid_points(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), 0.8)
    block = (small.x_adv - _mid_points(2, 1, 8, 8))[:, :, :3, :3]
    unit = block / block.flatten(2).norm(dim=2)[:, :, None, None]
    pattern3 = _l2_pattern(3, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(unit.abs(), pattern3.abs().expand_as(unit), atol=1e-5, rtol=0)


def test_l2_update_follows_the_window_formula() -> None:
    """One L2 update recomputed from its definition, with the two windows read off the result.

    W1 is where the perturbation changed, W2 \\ W1 where it was emptied; per channel i the new content of
    W1 is a_i * normalise(rho_i * eta + nu_W1,i / ||nu_W1,i||) with eta the unit pattern (or its transpose),
    rho_i = +-1 and a_i^2 = ||nu_(W1 u W2),i||^2 + (eps^2 - ||nu||^2) / c; everything else is kept.
    """
    n, c, h, w, side, eps = 300, 3, 10, 10, 4, 0.5
    gen = torch.Generator().manual_seed(4)
    x = _mid_points(n, c, h, w, seed=4)
    nu = torch.randn(n, c, h, w, generator=gen)
    nu = nu * (0.6 * eps / nu.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)  # inside the ball: some budget unused
    new = Square("L2")._update_l2(x, torch.full((n, 1, 1, 1), eps), x + nu, side, torch.rand(n, 5 + c, generator=gen)) - x
    pattern = _l2_pattern(side, torch.device("cpu"), torch.float32)
    transposed = 0
    for k in range(n):
        d, e = nu[k], new[k]
        changed = ((e - d).abs() > 1e-5).any(0)  # (x + nu) - x is nu only up to rounding
        w2_only = changed & (e.abs() < 1e-6).all(0)  # emptied
        w1 = changed & ~w2_only
        rows, cols = w1.nonzero().unbind(1)
        top, left = int(rows.min()), int(cols.min())
        assert w1.sum() == side * side and w1[top:top + side, left:left + side].all()
        union = w1 | w2_only
        torch.testing.assert_close(e[:, ~union], d[:, ~union], atol=1e-6, rtol=0)
        a = ((d[:, union] ** 2).sum(1) + (eps**2 - (d**2).sum()) / c).sqrt()
        content = e[:, top:top + side, left:left + side]
        torch.testing.assert_close(content.flatten(1).norm(dim=1), a, atol=1e-5, rtol=1e-5)
        unit_nu = d[:, top:top + side, left:left + side]
        unit_nu = unit_nu / unit_nu.flatten(1).norm(dim=1).view(-1, 1, 1)
        matches = []
        for eta in (pattern, pattern.T):
            fits = [min(float((content[i] / a[i] - v / v.norm()).abs().max()) for v in (eta + unit_nu[i], -eta + unit_nu[i]))
                    for i in range(c)]
            matches.append(max(fits) < 1e-4)
        assert matches[0] != matches[1] or torch.equal(pattern, pattern.T)
        transposed += matches[1]
        assert (e**2).sum().sqrt() == pytest.approx(eps, rel=1e-5)
    assert abs(transposed - n / 2) < 0.15 * n  # the pattern is transposed half of the time


def test_nested_rectangles_pattern() -> None:
    block = nested_rectangles(5, 5)
    assert torch.allclose(block[2, 2], torch.tensor(1 + 1 / 4 + 1 / 9, dtype=torch.float64))
    assert torch.allclose(block[0, 0], torch.tensor(1 / 9, dtype=torch.float64))
    assert torch.equal(block, block.T) and torch.equal(block, block.flip(0))


@pytest.mark.parametrize("threat,shape", [("Linf", (2, 1, 2, 2)), ("Linf", (2, 16, 5, 5)), ("L2", (2, 1, 4, 4)),
                                          ("Linf", (2, 3, 4, 16)), ("L2", (2, 1, 16, 5))])
def test_smallest_and_non_square_images(threat: str, shape: tuple[int, ...]) -> None:
    # Linf needs 2x2 pixels and handles up to 16 channels, L2 needs 4x4; windows fit the shorter side
    x = 0.3 + 0.4 * torch.rand(*shape, generator=torch.Generator().manual_seed(8))
    out, moved = moved_from_the_start(Square(threat, n_queries=40), ChaoticRobust(), x, torch.zeros(2, dtype=torch.long), 0.1)
    assert moved.all() and (out.queries == 41).all()


@pytest.mark.parametrize("threat,smallest", [("Linf", 1), ("L2", 3)])
def test_windows_shrink_to_the_smallest_side(threat: str, smallest: int, monkeypatch) -> None:
    # a 10-query run ends with the smallest windows: the last query differs from the closest earlier one
    # in at most one smallest window (Linf: one pixel) or, for L2, two (W1 refilled, W2 emptied)
    monkeypatch.setattr(square_module, "MAX_PROPOSALS", 1)  # one pass per update, all points together
    class Recorder(ChaoticRobust):
        def __init__(self) -> None:
            super().__init__()
            self.queries: list[Tensor] = []

        def forward(self, x: Tensor) -> Tensor:
            self.queries.append(x.clone())
            return super().forward(x)

    model, n = Recorder(), 20
    x = _mid_points(n, 1, 8, 8, seed=8)
    Square(threat, n_queries=10).run(model, x, torch.zeros(n, dtype=torch.long), torch.full((n,), 0.3), torch.Generator().manual_seed(0))
    last, earlier = model.queries[-1], torch.stack(model.queries[:-1])  # (q, n, 1, 8, 8)
    changed = (earlier != last).flatten(2).sum(2).min(0).values  # per point, pixels changed from the closest earlier query
    assert (changed <= (1 if threat == "Linf" else 2 * smallest * smallest)).all()


def test_bad_settings_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="n_queries"):
        Square("Linf", n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        Square("Linf", p_init=1.5)
    with pytest.raises(ValueError, match=r"at least 4x4 pixels, got \(3, 3\)"):
        Square("L2")(ChaoticRobust(), torch.rand(2, 1, 3, 3), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match=r"at least 4x4 pixels, got \(3, 16\)"):
        Square("L2")(ChaoticRobust(), torch.rand(2, 1, 3, 16), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="at least 2x2"):
        Square("Linf")(ChaoticRobust(), torch.rand(2, 1, 1, 5), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="at most 16 channels, got 17"):
        Square("Linf")(ChaoticRobust(), torch.rand(2, MAX_LINF_CHANNELS + 1, 8, 8), torch.zeros(2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"\(n, c, h, w\)"):
        Square("Linf")(ChaoticRobust(), torch.rand(2, 64), torch.zeros(2, dtype=torch.long), 0.1)


def test_settings_at_their_bounds_and_the_defaults() -> None:
    Square("Linf", p_init=1.0)  # the first window may cover the whole image
    with pytest.raises(ValueError, match=r"p_init must be in \(0, 1\], got 0.0"):
        Square("Linf", p_init=0.0)
    with pytest.raises(ValueError, match="n_restarts must be >= 1, got 0"):
        Square("Linf", n_restarts=0)
    square = Square("L2")
    assert (square.n_queries, square.p_init, square.n_restarts, square.seed) == (5000, 0.8, 1, 0)


@pytest.fixture(scope="module")
def digits_mlp() -> tuple[nn.Module, Tensor, Tensor]:
    """A small MLP trained for a few seconds on the digits train split, with 100 test points it gets right."""
    from benchmark.data import load_dataset
    from model_zoo.architectures.digits import DigitsMLP

    x_train, y_train = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = DigitsMLP(hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        for batch in torch.randperm(len(x_train)).split(128):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    x, y = load_dataset("digits", "test")
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return model, x[right][:100], y[right][:100]


@pytest.mark.parametrize("threat,eps", [("Linf", 0.05), ("L2", 0.25)])
def test_at_least_as_strong_as_torchattacks(digits_mlp: tuple[nn.Module, Tensor, Tensor], threat: str, eps: float) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_mlp
    ours = Square(threat, n_queries=1000)(model, x, y, eps).success.float().mean()
    x_theirs = torchattacks.Square(model, norm=threat, eps=eps, n_queries=1000, p_init=0.8, seed=0)(x, y)
    with torch.no_grad():
        theirs = (model(x_theirs).argmax(1) != y).float().mean()
    assert 0 < ours < 1  # the comparison is not decided by a trivial budget
    assert 1 - ours <= 1 - theirs + 0.02  # robust accuracy: ours at most theirs + 2 points
