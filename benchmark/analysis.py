"""What the runner adds to a result after the protocol: a baseline, a robustness curve, metrics.

* ``baselines["pgd-ce"]``: robust accuracy under plain PGD on the cross-entropy (the attack most
  papers report); far above the protocol's number, it betrays gradient masking.
* ``curve``: robust accuracy as a function of eps on a grid from 0 to 2 eps, from each point's
  smallest known adversarial norm (FAB's minimal norms and the norms of the points that broke).
* ``metrics``: the local-stability metrics of :mod:`benchmark.metrics`, averaged over points.

Every setting lives in the constants below (written down in docs/trustworthy.md); every random
draw comes from a generator seeded from ``seed``, so the analysis is reproducible.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Collection, Mapping, Sequence

import torch
from torch import Tensor, nn

from . import metrics as local
from .attacks.pgd import PGD
from .analysis_values import METRIC_POINTS, NOISE_DRAWS, PGD_CE_STEPS
from .attacks._common import first_order_distances
from .progress import Progress
from .protocol import AttackEntry, broken_before_minimum_norm, get_protocol
from .record import PointResult
from .seeding import seeded_generator
from .threat_models import ThreatModel, get_threat_model

#: the analysis' parts, in order, as the progress display names them
ANALYSIS_STAGES = ("PGD-CE baseline", "curve search from first-order distances", "local-stability metrics")

__all__ = [
    "ANALYSIS_STAGES",
    "Analysis", "analyse", "PGD_CE", "CURVE_SEARCH_STEPS", "LINEARITY_PGD", "CURVE_STEPS", "METRIC_POINTS", "NOISE_DRAWS",
    "LIPSCHITZ_STEPS", "needs_norm_search", "point_norms", "curve_from_norms", "pgd_ce_accuracy",
    "first_order_targets", "smallest_breaking_levels",
]

#: the PGD-CE baseline: 50 steps of 0.1 eps from a random start, 1 restart (Madry et al. 2018 style)
PGD_CE: Mapping[str, Any] = MappingProxyType({"n_iter": PGD_CE_STEPS, "step_size": 0.1, "loss": "ce", "random_start": True})
#: the curve's search on the points whose minimal norm the protocol does not know (broken before FAB
#: ran): at each grid value a bisection tries, projected ascent of the margin towards the class
#: nearest to first order (exact for a linear model), this many steps of 0.25 e, stopping at the
#: first misclassified iterate
CURVE_SEARCH_STEPS = 10
#: the adversarial points of the local-linearity metric: 10 PGD-CE steps of 0.25 eps, every point to the end
LINEARITY_PGD: Mapping[str, Any] = MappingProxyType({"n_iter": 10, "step_size": 0.25, "loss": "ce", "early_stop": False})
#: the curve's grid: CURVE_STEPS + 1 values from 0 to 2 eps; eps itself is the middle one, exactly
CURVE_STEPS = 20
#: gradient-ascent steps of the Lipschitz lower bound
LIPSCHITZ_STEPS = 20

# generator streams, so that no two parts of the analysis (nor the protocol) share random numbers
_STREAM_PGD, _STREAM_FAB, _STREAM_NOISE, _STREAM_JACOBIAN, _STREAM_LINEARITY, _STREAM_LIPSCHITZ = range(1, 7)


@dataclass
class Analysis:
    #: baseline attack name -> robust accuracy
    baselines: dict[str, float] = field(default_factory=dict)
    #: metric name -> value (means over points)
    metrics: dict[str, float] = field(default_factory=dict)
    #: [[eps, robust accuracy], ...] on the grid 0 .. 2 eps
    curve: list[list[float]] = field(default_factory=list)
    time_s: float = 0.0


def _generator(seed: int, stream: int, offset: int, device: torch.device) -> torch.Generator:
    return seeded_generator(seed, stream=stream, offset=offset, device=device)


def pgd_ce_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel, eps: float, clean_correct: Tensor, *,
    seed: int = 0, device: torch.device, batch_size: int = 500,
) -> float:
    """Robust accuracy under the PGD-CE baseline (:data:`PGD_CE`), attacking the clean-correct points."""
    attack = PGD(threat_model, seed=seed, **PGD_CE)
    robust = 0
    idx = clean_correct.nonzero().flatten()
    for start in range(0, len(idx), batch_size):
        rows = idx[start:start + batch_size]
        gen = _generator(attack.seed, _STREAM_PGD, int(rows[0]), device)
        out = attack(model, x[rows].to(device), y[rows].to(device), eps, generator=gen)
        robust += int((~out.success).sum())
    return robust / len(x)


def needs_norm_search(point: PointResult, blind: Collection[str]) -> bool:
    """Whether a point lacks a minimal norm: clean-correct and broken by one of the ``blind`` entries
    (those that ran before any minimum-norm attack, :func:`benchmark.protocol.broken_before_minimum_norm`:
    they only prove a norm <= eps), or robust with no adversarial norm recorded at all."""
    if not point.clean_correct:
        return False
    if point.broken_by is None:
        return point.min_norm is None
    return point.broken_by in blind


def point_norms(points: Sequence[PointResult], eps: float, extra: Mapping[int, float] | None = None) -> Tensor:
    """Per point, the smallest known adversarial norm, made consistent with the protocol at eps.

    0 for a clean-misclassified point; else the minimum of ``min_norm``, ``norm`` and ``extra``
    (by position in ``points``), inf if none. Then a point the protocol broke gets at most eps and
    a point it left robust gets more than eps (so the curve at eps is the protocol's robust
    accuracy even if an extra attack found more: the protocol's number is what the board reports),
    and a clean-correct point gets more than 0 (so the curve at 0 is the clean accuracy).
    """
    extra = extra or {}
    above_eps, above_zero = math.nextafter(eps, math.inf), math.nextafter(0.0, 1.0)
    out = []
    for i, p in enumerate(points):
        if not p.clean_correct:
            out.append(0.0)
            continue
        known = [v for v in (p.min_norm, p.norm, extra.get(i)) if v is not None]
        r = min(known, default=math.inf)
        r = max(r, above_eps) if p.robust else min(r, eps)
        out.append(max(r, above_zero))
    return torch.tensor(out, dtype=torch.float64)


def curve_grid(eps: float, steps: int = CURVE_STEPS) -> list[float]:
    """``steps + 1`` values from 0 to 2 eps (``steps`` even; eps itself, exactly, in the middle)."""
    if steps < 2 or steps % 2:
        raise ValueError(f"steps must be even and at least 2, got {steps}")
    grid = [float(f"{2 * eps * i / steps:.12g}") for i in range(steps + 1)]  # 0.03, not 0.030000000000000006
    grid[steps // 2] = float(eps)
    return grid


def curve_from_norms(norms: Tensor, eps: float, steps: int = CURVE_STEPS) -> list[list[float]]:
    """[[e, share of points with norm > e], ...] for e on ``steps + 1`` values from 0 to 2 eps.

    A point counts as robust at e when no adversarial example of norm <= e is known. ``steps``
    must be even, so that eps itself (exactly) is the middle value of the grid.
    """
    grid = curve_grid(eps, steps)
    n = max(len(norms), 1)
    return [[e, float((norms > e).sum()) / n] for e in grid]


def first_order_targets(model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel) -> Tensor:
    """Per point, the class whose decision boundary is nearest to first order (exact for a linear model)."""
    return first_order_distances(model, x, y, threat_model).argmin(dim=1)


def _searched_norms(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel, eps: float, points: Sequence[PointResult],
    index: list[int], *, device: torch.device, batch_size: int,
) -> dict[int, float]:
    """For the points at ``index``, the smallest curve-grid value at which the search breaks them: below eps
    for a point the protocol broke (starting from the norm its attack already found), above eps for one it
    left robust without a known norm. Points never broken up to 2 eps are left out."""
    grid = curve_grid(eps)
    middle = len(grid) // 2
    found: dict[int, float] = {}
    for start in range(0, len(index), batch_size):
        rows = index[start:start + batch_size]
        low, high = [], []
        for i in rows:
            p = points[i]
            if p.robust:
                low.append(middle + 1)
                high.append(len(grid) - 1)
            else:
                known = min(v for v in (p.norm, p.min_norm, eps) if v is not None)
                low.append(1)
                high.append(next(k for k, e in enumerate(grid) if e >= known or k == middle))
        rows_t = torch.tensor(rows)
        levels = smallest_breaking_levels(model, x[rows_t].to(device), y[rows_t].to(device), threat_model, grid,
                                          torch.tensor(low), torch.tensor(high))
        for i, k in zip(rows, levels.tolist()):
            if k < len(grid):
                found[i] = grid[k]
    return found


def _breaks(model: nn.Module, x: Tensor, y: Tensor, target: Tensor, threat_model: ThreatModel, e: Tensor) -> Tensor:
    """Whether projected ascent of z_t - z_y (:data:`CURVE_SEARCH_STEPS` steps of 0.25 e from x) misclassifies each point."""
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    active = torch.arange(len(x), device=x.device)
    x_adv = x.clone()
    step = (0.25 * e).view(-1, *([1] * (x.ndim - 1)))
    for _ in range(CURVE_SEARCH_STEPS + 1):
        xa = x_adv[active].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            gain = logits.gather(1, target[active, None]) - logits.gather(1, y[active, None])
            (grad,) = torch.autograd.grad(gain.sum(), xa)
        fooled = logits.detach().argmax(1) != y[active]
        broken[active[fooled]] = True
        keep = ~fooled
        active, xa, grad = active[keep], xa.detach()[keep], grad[keep]
        if active.numel() == 0:
            break
        x_adv[active] = threat_model.project(xa + step[active] * threat_model.steepest_direction(grad), x[active], e[active])
    return broken


def smallest_breaking_levels(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel, grid: Sequence[float], low: Tensor, high: Tensor,
) -> Tensor:
    """Per point, the smallest grid index in [low, high] at which :func:`_breaks` finds an adversarial example
    (the attack is taken as monotone in e); ``len(grid)`` where none is found up to ``high``.
    ``high`` is an index already known to break (then it is never attacked) or ``len(grid) - 1``.

    The search keeps [lo, hi) around the answer and probes, in turn: the grid value nearest the point's
    first-order distance to the boundary (exact for a linear model), its neighbour on the side still open
    (so a right guess settles a point in two tries), then the middle, as a bisection would."""
    levels = torch.as_tensor(grid, dtype=x.dtype, device=x.device)
    distance = first_order_distances(model, x, y, threat_model)
    nearest, target = distance.min(dim=1)
    guess = torch.searchsorted(levels, nearest.to(levels.dtype).contiguous())  # first value >= the distance
    lo, hi = low.clone().to(x.device), high.clone().to(x.device)
    known = hi < len(grid) - 1  # hi already breaks; else it must be tried too
    hi = torch.where(known, hi, torch.full_like(hi, len(grid)))  # len(grid): not broken up to the last value
    last_hit = torch.zeros_like(known)
    tries = 0
    while bool((lo < hi).any()):
        open_ = (lo < hi).nonzero().flatten()
        top = (hi[open_] - 1).clamp_max(len(grid) - 1)
        if tries == 0:
            probe = torch.minimum(torch.maximum(guess[open_], lo[open_]), top)
        elif tries == 1:
            probe = torch.where(last_hit[open_], top, lo[open_])
        else:
            probe = torch.div(lo[open_] + hi[open_], 2, rounding_mode="floor").clamp_max(len(grid) - 1)
        hit = _breaks(model, x[open_], y[open_], target[open_], threat_model, levels[probe])
        hi[open_[hit]] = probe[hit]
        lo[open_[~hit]] = probe[~hit] + 1
        last_hit[open_] = hit
        tries += 1
    return hi


def _local_metrics(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel, eps: float, robust_accuracy: float, *,
    seed: int, device: torch.device, batch_size: int,
) -> dict[str, float]:
    noise_correct = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        gen = _generator(seed, _STREAM_NOISE, start, device)
        noise_correct += float(local.noise_accuracy(model, xb, yb, threat_model, eps, n_draws=NOISE_DRAWS, generator=gen).sum())
    noise_acc = noise_correct / len(x)

    m = min(len(x), METRIC_POINTS)
    pgd = PGD(threat_model, seed=seed, **LINEARITY_PGD)
    jac, gaps, lips = [], [], []
    for start in range(0, m, batch_size):
        xb, yb = x[start:min(start + batch_size, m)].to(device), y[start:min(start + batch_size, m)].to(device)
        jac.append(local.jacobian_norms(model, xb, generator=_generator(seed, _STREAM_JACOBIAN, start, device)))
        x_adv = pgd(model, xb, yb, eps, generator=_generator(pgd.seed, _STREAM_LINEARITY, start, device)).x_adv
        gaps.append(local.linearity_gaps(model, xb, yb, x_adv))
        lips.append(local.lipschitz_lower_bounds(model, xb, threat_model, eps, n_steps=LIPSCHITZ_STEPS,
                                                 generator=_generator(seed, _STREAM_LIPSCHITZ, start, device)))
    return {
        "noise_accuracy": noise_acc,
        "noise_gap": noise_acc - robust_accuracy,
        "jacobian_norm": float(torch.cat(jac).double().mean()),
        "local_linearity": float(torch.cat(gaps).double().mean()),
        "lipschitz_lower_bound": float(torch.cat(lips).double().mean()),
    }


def analyse(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: str | ThreatModel, eps: float, points: Sequence[PointResult],
    *, seed: int = 0, device: str | torch.device | None = None, batch_size: int = 500,
    entries: Sequence[AttackEntry] | None = None, progress: Progress | None = None,
) -> Analysis:
    """Baseline, robustness curve and metrics for a model whose protocol results are ``points``.

    ``points`` are the protocol's per-point results, in the order of ``x``, from the attacks of
    ``entries`` (default: the standard version's). The model is used as given (the runner has put
    it in eval mode on ``device``); ``x``/``y`` may live on the CPU.
    """
    t0 = time.perf_counter()
    if len(points) != len(x) or len(y) != len(x):
        raise ValueError(f"need one point result and one label per input; got {len(x)} inputs, "
                         f"{len(y)} labels, {len(points)} point results")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tm = get_threat_model(threat_model)
    device = torch.device(device) if device is not None else x.device
    eps = float(eps)
    if len(x) == 0:
        return Analysis(time_s=time.perf_counter() - t0)
    clean_correct = torch.tensor([p.clean_correct for p in points])
    robust_accuracy = sum(p.robust for p in points) / len(points)
    shown = progress or Progress(0, enabled=False)
    shown.stage(f"analysis: {ANALYSIS_STAGES[0]}")
    baselines = {"pgd-ce": pgd_ce_accuracy(model, x, y, tm, eps, clean_correct, seed=seed, device=device,
                                           batch_size=batch_size)}
    shown.advance(len(x))
    shown.stage(f"analysis: {ANALYSIS_STAGES[1]}")
    blind = broken_before_minimum_norm(get_protocol("standard") if entries is None else entries)
    todo = [i for i, p in enumerate(points) if needs_norm_search(p, blind)]
    extra = _searched_norms(model, x, y, tm, eps, points, todo, device=device, batch_size=batch_size)
    curve = curve_from_norms(point_norms(points, eps, extra), eps)
    shown.advance(len(x))
    shown.stage(f"analysis: {ANALYSIS_STAGES[2]}")
    metrics = _local_metrics(model, x, y, tm, eps, robust_accuracy, seed=seed, device=device, batch_size=batch_size)
    shown.advance(len(x))
    return Analysis(baselines, metrics, curve, time.perf_counter() - t0)
