"""APGD against known answers: linear models (closed-form minimal perturbations), a hand-made
model for the target order, randomised models (EOT), and torchattacks' independent APGD."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchmark.attacks.apgd import APGD, checkpoints
from benchmark.attacks.base import TOLERANCE
from benchmark.threat_models import get_threat_model
from test_square import CountingModel

P = {"Linf": float("inf"), "L2": 2.0}


def split_around_eps(problem, threat: str):
    """Points whose minimal perturbation is < 0.9 eps or > 1.1 eps, eps the median; and which are below."""
    r = problem.min_perturbation(P[threat])
    eps = float(r.median())
    keep = ((r / eps - 1).abs() > 0.1).nonzero().flatten()
    return problem.x[keep], problem.y[keep], eps, r[keep] < eps


def test_checkpoints_follow_the_protocol() -> None:
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(4) == [1, 2, 3]  # ceil(0.22 * 4) = 1 is the first checkpoint
    assert checkpoints(1000)[:3] == [220, 410, 570]
    for n in (1, 5, 10, 37, 250):
        marks = checkpoints(n)
        assert marks == sorted(set(marks)) and all(0 < w < n for w in marks)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
@pytest.mark.parametrize("settings", [
    {"loss": "ce"},
    {"loss": "dlr"},
    {"loss": "dlr", "n_targets": 9},
    {"loss": "dlr", "n_targets": 9, "batch_targets": False},
    {"loss": "ce", "n_targets": 3, "n_restarts": 2},
], ids=["ce", "dlr", "t-dlr", "t-dlr-sequential", "t-ce-restarts"])
def test_breaks_exactly_the_points_below_eps_on_a_linear_model(linear_model, threat, settings, seed=0) -> None:
    # A sharp softmax (scale 100): with a flat one the cross-entropy's maximiser in the ball can be a
    # correctly classified point although the ball holds adversarial ones (a property of the loss,
    # which torchattacks' APGD-CE shares; the reason the protocol adds the DLR loss).
    problem = linear_model(n=120, scale=100.0, seed=seed)
    x, y, eps, below = split_around_eps(problem, threat)
    assert 20 < int(below.sum()) < len(x) - 20  # both kinds are well represented
    out = APGD(threat, n_iter=50, **settings)(problem.model, x, y, eps)
    assert torch.equal(out.success, below)
    assert bool((out.norm <= eps + TOLERANCE).all())


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_stays_in_the_box_and_the_ball(threat) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    x = torch.rand(32, 1, 8, 8).round()  # many pixels on the faces of the box
    y = torch.randint(0, 10, (32,))
    eps = torch.linspace(0.05, 2.0, 32)  # one radius per point, some larger than the box allows
    out = APGD(threat, n_iter=20, n_targets=2, loss="dlr")(model, x, y, eps)
    tm = get_threat_model(threat)
    assert bool(tm.within(out.x_adv, x, eps, 1e-6).all())
    assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1


def test_same_seed_is_bit_identical_and_the_seed_matters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    runs = [APGD("L2", n_iter=5, n_restarts=2, seed=s)(model, x, y, 0.3) for s in (0, 0, 1)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].queries, runs[1].queries)
    assert not torch.equal(runs[0].x_adv, runs[2].x_adv)
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = APGD("Linf", n_iter=5, n_targets=3, loss="dlr")(model, x, y, 0.05, generator=gen_a)
    b = APGD("Linf", n_iter=5, n_targets=3, loss="dlr")(model, x, y, 0.05, generator=gen_b)
    assert torch.equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("n_targets, n_restarts, batch", [(0, 1, True), (0, 3, True), (4, 2, True), (4, 2, False)])
def test_queries_count_every_forward_pass(linear_model, n_targets, n_restarts, batch) -> None:
    problem = linear_model(n=60)
    r = problem.min_perturbation(float("inf"))
    eps = float(r.median())
    y = problem.y.clone()
    y[0] = (y[0] + 1) % 10  # misclassified from the start
    n_iter, eot = 12, 2
    attack = APGD("Linf", loss="dlr", n_iter=n_iter, n_restarts=n_restarts, n_targets=n_targets,
                  eot_iter=eot, batch_targets=batch)
    out = attack(problem.model, problem.x, y, eps)
    runs = max(n_targets, 1) * n_restarts
    # clean pass + (n_iter + 1) passes of eot samples per run + the base class's check
    full = 1 + runs * (n_iter + 1) * eot + 1
    assert out.queries[0] == 2 and bool(out.success[0])
    robust = (r > 1.1 * eps) & (torch.arange(60) > 0)
    assert bool((out.queries[robust] == full).all())
    broken = out.success & (torch.arange(60) > 0)
    assert bool((out.queries[broken] >= 2 + eot).all()) and bool((out.queries[broken] < full).all())


def _ordered_model() -> nn.Module:
    """4 classes on 16 inputs. Near x = 0.5 the logits are 1, 0.9, 0.5, 0 (class 0 first), but class 1
    lies at Linf distance 1 and class 2 at Linf distance 0.06, reached only near one vertex of the ball."""
    signs = torch.tensor([1.0, -1.0]).repeat(8)
    c = 0.5 / (16 * 0.06)
    weight = torch.zeros(4, 16)
    weight[1, 0], weight[2], weight[3, 0] = 0.1, c * signs, -0.1
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        model[1].weight.copy_(weight)
        model[1].bias.copy_(torch.tensor([1.0, 0.9, 0.5, 0.0]) - 0.5 * weight.sum(1))
    return model


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("batch", [True, False])
def test_targets_follow_the_clean_logit_order(loss, batch) -> None:
    model = _ordered_model()
    x = 0.5 + 0.001 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    assert torch.equal(model(x).argsort(1, descending=True), torch.arange(4).expand(8, 4))
    second_only = APGD("Linf", loss=loss, n_iter=20, n_targets=1, batch_targets=batch)(model, x, y, 0.1)
    assert not bool(second_only.success.any())
    two = APGD("Linf", loss=loss, n_iter=20, n_targets=2, batch_targets=batch)(model, x, y, 0.1)
    assert bool(two.success.all())
    assert bool((model(two.x_adv).argmax(1) == 2).all())


class LogitNoise(nn.Module):
    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return logits + self.sigma * torch.randn_like(logits)


class GradientNoise(nn.Module):
    """Logits of a linear model, but each pass's input gradient carries a large zero-mean noise."""

    def __init__(self, linear: nn.Linear, sigma: float) -> None:
        super().__init__()
        self.linear, self.sigma = linear, sigma

    def forward(self, x: Tensor) -> Tensor:
        d = (x - x.detach()).flatten(1)  # zero in value, identity in gradient
        noise = self.sigma * torch.randn(x.shape[0], self.linear.out_features, d.shape[1])
        return self.linear(x.flatten(1)) + torch.einsum("nkd,nd->nk", noise, d)


@pytest.mark.parametrize("threat", ["Linf", "L2"])
def test_eot_on_randomised_models(linear_model, threat) -> None:
    problem = linear_model(n=120)
    r = problem.min_perturbation(P[threat])
    eps = float(r.median())
    # far enough from the boundary, on both sides, that the logit noise never decides
    easy, hard = (r > 0.2 * eps) & (r < 0.7 * eps), r > 1.5 * eps
    torch.manual_seed(0)
    noisy = LogitNoise(problem.model, sigma=0.05)
    out = APGD(threat, n_iter=30, eot_iter=5)(noisy, problem.x, problem.y, eps)
    with torch.no_grad():  # judged by the noiseless model: a found point may sit just past the boundary
        fooled = problem.model(out.x_adv).argmax(1) != problem.y
    assert bool(fooled[easy].all()) and not bool(out.success[hard].any())
    assert int(out.queries.max()) == 1 + 31 * 5 + 1
    masked = GradientNoise(problem.model.linear, sigma=50.0)
    x, y = problem.x[easy], problem.y[easy]
    torch.manual_seed(0)
    single = APGD(threat, n_iter=30)(masked, x, y, eps)
    torch.manual_seed(0)
    averaged = APGD(threat, n_iter=30, eot_iter=20)(masked, x, y, eps)
    assert bool(averaged.success.all())
    assert int(single.success.sum()) < len(x)


def test_bad_settings_and_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: ce, dlr"):
        APGD("Linf", loss="hinge")
    with pytest.raises(ValueError, match="^n_iter must be a positive integer, got 0$"):
        APGD("Linf", n_iter=0)
    with pytest.raises(ValueError, match="^n_restarts must be a positive integer, got 0$"):
        APGD("Linf", n_restarts=0)
    with pytest.raises(ValueError, match="^eot_iter must be a positive integer, got 1.5$"):
        APGD("Linf", eot_iter=1.5)
    APGD("Linf", rho=0.0), APGD("Linf", rho=1.0)  # both ends of [0, 1] are allowed
    apgd = APGD("Linf")
    assert (apgd.loss, apgd.n_iter, apgd.n_restarts, apgd.rho) == ("ce", 100, 1, 0.75)
    assert (apgd.n_targets, apgd.eot_iter, apgd.seed, apgd.batch_targets) == (0, 1, 0, True)
    with pytest.raises(ValueError, match="n_targets"):
        APGD("Linf", n_targets=-1)
    with pytest.raises(ValueError, match="rho"):
        APGD("Linf", rho=1.5)
    with pytest.raises(ValueError, match="unknown threat model"):
        APGD("L7")
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        APGD("Linf", loss="dlr", n_targets=2)(model, x, y, 0.1)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        APGD("Linf", loss="ce", n_targets=3)(model, x, y, 0.1)
    with pytest.raises(ValueError, match="needs at least 3 classes"):
        APGD("Linf", loss="dlr")(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), x, y, 0.1)
    with pytest.raises(ValueError, match="inputs must lie in"):
        APGD("Linf")(model, x + 1, y, 0.1)


def test_at_least_as_strong_as_torchattacks_apgd() -> None:
    """An independent implementation on a small trained MLP: robust accuracy at most 1 point higher."""
    torchattacks = pytest.importorskip("torchattacks")
    from benchmark.data import load_dataset
    from model_zoo.architectures.digits import DigitsMLP

    torch.manual_seed(0)
    x_all, y_all = load_dataset("digits", "train")
    x_train, y_train, x, y = x_all[:-200], y_all[:-200], x_all[-200:], y_all[-200:]
    model = DigitsMLP(hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(40):  # full batch, a fraction of a second
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    model.eval()
    for threat, eps in (("Linf", 0.05), ("L2", 0.5)):
        ours = APGD(threat, loss="ce", n_iter=100)(model, x, y, eps)
        theirs = torchattacks.APGD(model, norm=threat, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)(x, y)
        with torch.no_grad():
            their_robust = (model(theirs).argmax(1) == y).float().mean().item()
        our_robust = (~ours.success).float().mean().item()
        assert 0.2 < their_robust < 0.95, "the comparison needs a model that is neither broken nor untouched"
        assert our_robust <= their_robust + 0.01, f"{threat}: robench {our_robust:.3f} vs torchattacks {their_robust:.3f}"


@pytest.mark.parametrize("max_rows", [1, 16, 24])
def test_bounded_batches_of_copies(max_rows) -> None:
    """max_rows stacks as many target runs as fit (at least one), later ones on the points left:
    deterministic for a setting, identical to one batch when everything fits, and as strong here."""
    model = _ordered_model()
    x = 0.5 + 0.001 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    attack = APGD("Linf", loss="dlr", n_iter=20, n_targets=3, max_rows=max_rows)
    first, second = attack(model, x, y, 0.1), attack(model, x, y, 0.1)
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.queries, second.queries)
    assert bool(first.success.all())
    assert bool((model(first.x_adv).argmax(1) == 2).all())
    fits = APGD("Linf", loss="dlr", n_iter=20, n_targets=3, max_rows=24)(model, x, y, 0.1)
    unbounded = APGD("Linf", loss="dlr", n_iter=20, n_targets=3, max_rows=None)(model, x, y, 0.1)
    assert torch.equal(fits.x_adv, unbounded.x_adv) and torch.equal(fits.queries, unbounded.queries)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_max_rows_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="max_rows"):
        APGD("Linf", max_rows=bad)


def test_auto_row_cap_stays_within_the_handed_batch_except_for_tiny_inputs() -> None:
    """"auto" never stacks more rows than the attack was handed, unless the inputs are tiny (digits):
    then up to 512 rows on a CPU (cache-bound) and 4,096 on a GPU; an explicit cap or None wins."""
    from benchmark.attacks._common import auto_max_rows, checked_max_rows, runs_per_batch

    digits = torch.zeros(100, 1, 8, 8)
    assert auto_max_rows(digits) == 512 and runs_per_batch("auto", 100, 9, digits) == 5
    assert runs_per_batch("auto", 40, 9, digits[:40]) == 9
    assert runs_per_batch("auto", 464, 9, torch.zeros(464, 1, 8, 8)) == 1  # at least one run
    assert auto_max_rows(torch.zeros(1000, 1, 8, 8)) == 1000  # the handed batch, when larger
    gpu_digits = torch.zeros(100, 1, 8, 8, device="meta")  # any device but the CPU gets the GPU budget
    assert auto_max_rows(gpu_digits) == 4096 and runs_per_batch("auto", 100, 9, gpu_digits) == 9
    imagenet = torch.zeros(16, 3, 224, 224, device="meta")
    assert auto_max_rows(imagenet) == 16
    assert runs_per_batch("auto", 16, 9, imagenet) == 1 and runs_per_batch("auto", 5, 9, imagenet) == 3
    assert auto_max_rows(torch.zeros(200, 3, 32, 32)) == 200 and auto_max_rows(torch.zeros(4, 3, 32, 32)) == 10
    assert runs_per_batch(24, 8, 9, digits) == 3 and runs_per_batch(None, 10_000, 9, digits) == 9
    # the edges: no point, one point, one-element inputs, runs of a single point
    assert auto_max_rows(digits[:0]) == 0 and auto_max_rows(digits[:1]) == 512
    assert auto_max_rows(torch.zeros(3, 1)) == 512 * 64
    assert runs_per_batch(5, 1, 9, digits) == 5 and runs_per_batch(5, 0, 9, digits) == 5
    assert checked_max_rows("auto") == "auto" and checked_max_rows(None) is None and checked_max_rows(64.0) == 64
    assert APGD("Linf").max_rows == "auto"
    for bad in ("big", 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_rows"):
            checked_max_rows(bad)


class _LargestBatch(nn.Module):
    """A fixed random linear classifier on 3x32x32 inputs that remembers the largest batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3 * 32 * 32, 10, generator=g) * 0.01
        self.largest = 0

    def forward(self, x: Tensor) -> Tensor:
        self.largest = max(self.largest, len(x))
        return x.flatten(1) @ self.w


def test_stacked_targets_of_larger_images_stay_within_the_handed_batch() -> None:
    """On 3x32x32 inputs "auto" allows max(8 handed points, 32,768 / 3,072 = 10) rows: the nine
    targets are attacked a few at a time, never all 72 copies at once (APGD-T and FAB-T)."""
    from benchmark.attacks.fab import FAB

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = _LargestBatch()
    y = model(x).argmax(1)
    for attack in (APGD("Linf", loss="dlr", n_targets=9, n_iter=5), FAB("Linf", n_targets=9, n_iter=5)):
        model.largest = 0
        attack(model, x, y, 0.001)
        assert 8 <= model.largest <= 10, type(attack).__name__
    model.largest = 0
    APGD("Linf", loss="dlr", n_targets=9, n_iter=5, max_rows=None)(model, x, y, 0.001)
    assert model.largest == 72  # no cap: every target stacked


class Wiggly(nn.Module):
    """A bumpy 10-class model on 1x4x4 inputs, float64, whose class 0 always wins by more than 6:
    the loss goes up and down along a run, so the step-size schedule is exercised, and no point is ever broken."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w1 = torch.randn(16, 32, generator=g, dtype=torch.float64) * 6
        self.w2 = torch.randn(32, 10, generator=g, dtype=torch.float64) / 16
        self.bonus = torch.zeros(10, dtype=torch.float64)
        self.bonus[0] = 10.0

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x.flatten(1) @ self.w1) @ self.w2 + self.bonus


def reference_apgd(model: nn.Module, threat: str, x: Tensor, y: Tensor, eps: float, start: Tensor, n_iter: int,
                   rho: float = 0.75, alpha: float = 0.75) -> tuple[Tensor, Tensor]:
    """APGD as the paper states it, for copies that are never misclassified: the best-loss iterate and its loss."""
    tm = get_threat_model(threat)

    def loss_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(z), y, reduction="none")
        return loss.detach(), torch.autograd.grad(loss.sum(), z)[0]

    n, shape = len(x), (-1,) + (1,) * (x.ndim - 1)
    eta = torch.full((n,), 2 * eps, dtype=x.dtype)
    x_cur = x_prev = start
    loss, grad = loss_grad(start)
    best, best_x, best_grad = loss, start, grad
    loss_prev, loss_at_mark = loss, loss
    count, halved, last = torch.zeros(n), torch.zeros(n, dtype=torch.bool), 0
    for k in range(1, n_iter + 1):
        z = tm.project(x_cur + eta.view(shape) * tm.steepest_direction(grad), x, eps)
        if k > 1:
            z = tm.project(x_cur + alpha * (z - x_cur) + (1 - alpha) * (x_cur - x_prev), x, eps)
        x_prev, x_cur = x_cur, z
        loss, grad = loss_grad(x_cur)
        count = count + (loss > loss_prev)
        loss_prev = loss
        up = loss > best
        best = torch.where(up, loss, best)
        best_x, best_grad = torch.where(up.view(shape), x_cur, best_x), torch.where(up.view(shape), grad, best_grad)
        if k in checkpoints(n_iter):
            h = (count <= rho * (k - last)) | (~halved & (best <= loss_at_mark))
            eta = torch.where(h, eta / 2, eta)
            x_cur, x_prev = torch.where(h.view(shape), best_x, x_cur), torch.where(h.view(shape), best_x, x_prev)
            grad = torch.where(h.view(shape), best_grad, grad)
            loss_prev = torch.where(h, best, loss_prev)
            count, loss_at_mark, halved, last = torch.zeros(n), best, h, k
    return best_x, best


@pytest.mark.parametrize("threat,eps", [("Linf", 0.05), ("L2", 0.3)])
@pytest.mark.parametrize("rho,restarts", [(0.75, 1), (0.5, 1), (0.75, 3)])
def test_follows_the_reference_step_by_step(threat: str, eps: float, rho: float, restarts: int) -> None:
    model, n = Wiggly(), 40
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = torch.zeros(n, dtype=torch.long)
    attack = APGD(threat, loss="ce", n_iter=60, rho=rho, n_restarts=restarts)
    # the restarts of a point are stacked copies, their starts drawn together
    copies = x.repeat(restarts, 1, 1, 1)
    start = get_threat_model(threat).random_start(copies, torch.full((len(copies),), eps, dtype=torch.float64),
                                                  attack.generator("cpu"))
    best_x, best_loss = reference_apgd(model, threat, copies, y.repeat(restarts), eps, start, n_iter=60, rho=rho)
    pick = best_loss.float().view(restarts, n).argmax(0)  # per point, the copy with the highest loss (float32, first on a tie)
    expected = best_x.view(restarts, n, 1, 4, 4)[pick, torch.arange(n)]
    out = attack(model, x, y, eps)
    assert not out.success.any() and (out.queries == 1 + restarts * 61 + 1).all()
    torch.testing.assert_close(out.x_adv, expected, atol=1e-12, rtol=0)
    start_loss = nn.functional.cross_entropy(model(start), y.repeat(restarts), reduction="none")
    assert (best_loss > start_loss).all()  # every copy climbed


def test_checkpoints_are_whole_iterations_for_any_budget() -> None:
    # ceil(p * 60) for p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93 (0.99 * 60 rounds up to the last step)
    assert checkpoints(60) == [14, 25, 35, 42, 48, 53, 56]
    assert all(isinstance(w, int) for w in checkpoints(37))


def test_every_counted_query_is_a_forward_pass_with_eot() -> None:
    x = 0.3 + 0.4 * torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    model = CountingModel(Wiggly())
    out = APGD("Linf", n_iter=7, eot_iter=3)(model, x, torch.zeros(5, dtype=torch.long), 0.05)
    assert (out.queries == 1 + 8 * 3 + 1).all() and model.rows == int(out.queries.sum())


class KnowsOnlyTheCleanPoints(nn.Module):
    """Right on the clean points it was given, wrong everywhere else: every random start breaks it."""

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.x = x

    def forward(self, z: Tensor) -> Tensor:
        clean = ((z[:, None] - self.x[None]).flatten(2).abs().amax(2) == 0).any(1)
        logits = torch.stack([clean.double(), (~clean).double(), torch.zeros(len(z), dtype=torch.float64)], 1)
        return logits + 0 * z.flatten(1).sum(1, keepdim=True)  # a graph, with a zero gradient


def test_a_point_broken_at_its_random_start_costs_two_queries() -> None:
    x = 0.3 + 0.4 * torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = APGD("L2", n_iter=10)(KnowsOnlyTheCleanPoints(x), x, torch.zeros(4, dtype=torch.long), 0.1)
    assert out.success.all() and (out.queries == 1 + 1 + 1).all()  # clean pass, the start, the success check


def test_apgd_ce_runs_on_a_two_class_model(linear_model) -> None:
    """Cross-entropy needs two classes only (DLR needs three, targeted DLR four)."""
    problem = linear_model(n=16, num_classes=2)
    out = APGD("Linf", loss="ce", n_iter=10)(problem.model, problem.x, problem.y, 0.05)
    assert out.success.shape == (16,)
    with pytest.raises(ValueError, match="needs at least 3 classes"):
        APGD("Linf", loss="dlr", n_iter=10)(problem.model, problem.x, problem.y, 0.05)


class CallCounter(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.inner(x)


def test_targets_run_as_one_batch_unless_told_otherwise(linear_model) -> None:
    """APGD-T's targets are stacked into one batch by default: one pass per step for all of them."""
    problem = linear_model(n=6)
    calls = {}
    for batch in (True, False):
        model = CallCounter(problem.model)
        APGD("Linf", loss="dlr", n_targets=3, n_iter=10, batch_targets=batch)(model, problem.x, problem.y, 1e-4)
        calls[batch] = model.calls
    # the clean pass; the start's pass and one per step (per target when one by one); the success pass
    assert calls == {True: 1 + (1 + 10) + 1, False: 1 + 3 * (1 + 10) + 1}


def test_a_single_point_is_attacked(linear_model) -> None:
    problem = linear_model(n=1)
    out = APGD("L2", n_iter=20)(problem.model, problem.x, problem.y, 10.0)
    assert bool(out.success.all()) and int(out.queries[0]) > 2


@pytest.mark.parametrize("threat", ["Linf", "L2"])
@pytest.mark.parametrize("settings", [{"loss": "ce"}, {"loss": "ce", "n_restarts": 2}], ids=["ce", "ce-restarts"])
def test_a_point_with_a_zero_gradient_stops_with_the_result_of_all_its_steps(linear_model, monkeypatch, threat,
                                                                           settings) -> None:
    """A saturated softmax (weights x 300) gives an exactly zero cross-entropy gradient on points far from
    every boundary: APGD leaves them after one pass, with what running every step gives."""
    problem = linear_model(n=60, scale=300.0)
    x, y = problem.x, problem.y
    eps = float(problem.min_perturbation(P[threat]).median())
    attack = APGD(threat, n_iter=30, **settings)
    short = attack(problem.model, x, y, eps)
    monkeypatch.setattr(APGD, "_drop_stuck", lambda self, c, k, found: c)
    full = attack(problem.model, x, y, eps)
    assert torch.equal(short.success, full.success) and torch.equal(short.x_adv[full.success], full.x_adv[full.success])
    assert 0 < int(full.success.sum()) < len(x)
    copies = settings.get("n_restarts", 1)
    if copies == 1:  # with restarts, of two iterates of equal loss (both 0, saturated) either may be the one kept
        assert torch.equal(short.x_adv, full.x_adv)
    # the clean pass, one pass per copy at its random start (where the gradient was zero), the success check
    # (a point broken at its random start costs as much, and is not one of them)
    stopped = (short.queries == 1 + copies + 1) & ~short.success
    assert int(stopped.sum()) >= 5
    assert bool((full.queries[stopped] == 1 + copies * (30 + 1) + 1).all())
    assert bool((short.queries <= full.queries).all())


def test_averaged_gradients_are_never_taken_as_stuck(linear_model) -> None:
    """With eot_iter > 1 a zero gradient may be luck of the draw: every step is taken."""
    problem = linear_model(n=20, scale=1e4)
    robust = problem.min_perturbation(float("inf")) > 0.01
    out = APGD("Linf", n_iter=10, loss="ce", eot_iter=2)(problem.model, problem.x[robust], problem.y[robust], 0.01)
    assert bool((out.queries == 1 + 2 * 11 + 1).all())
