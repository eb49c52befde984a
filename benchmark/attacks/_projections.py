"""Minimum-norm projection onto a hyperplane inside the box [0, 1] (used by FAB).

Problem, per row of a batch of flattened points ``x`` (shape (n, d)):

    minimise ||delta||_p  subject to  <w, delta> = r  and  0 <= x + delta <= 1

for p = inf or p = 2. After flipping the sign of (w, r) so that r >= 0, every optimal
coordinate moves in the direction of sign(w_i), by at most its room ``cap_i`` (1 - x_i
upwards, x_i downwards). Both norms then reduce to one monotone 1-D search:

* Linf: delta_i = sign(w_i) * min(t, cap_i); the reached value sum_i |w_i| min(t, cap_i)
  grows with the radius t.
* L2 (KKT): delta_i = sign(w_i) * min(lam |w_i|, cap_i); the reached value
  sum_i w_i^2 min(lam, cap_i / |w_i|) grows with the multiplier lam.

Both have the form  H(s) = sum_i slope_i * min(s, b_i)  with breakpoints b_i, which is
piecewise linear. Sorting the breakpoints gives H at each of them in closed form, so the
segment holding H(s) = r and then s itself are found exactly (no iterative search).
When the hyperplane misses the box (r exceeds what the box allows), the box point that
gets closest to it is returned: every coordinate moved by its full room.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["project_onto_hyperplane_in_box", "dual_norm"]


def dual_norm(v: Tensor, p: float) -> Tensor:
    """Per-row dual norm ||v||_q (1/p + 1/q = 1) of a (n, d) tensor; Linf -> L1, L2 -> L2."""
    if p == float("inf"):
        return v.abs().sum(dim=1)
    if p == 2:
        return v.norm(p=2, dim=1)
    raise ValueError(f"only p = inf and p = 2 are supported, got p = {p}")


def project_onto_hyperplane_in_box(x: Tensor, w: Tensor, r: Tensor, p: float) -> Tensor:
    """The perturbation of smallest Lp norm with ``<w, delta> = r`` keeping ``x + delta`` in [0, 1].

    ``x`` and ``w`` have shape (n, d) (``x`` inside [0, 1]), ``r`` shape (n,); ``p`` is
    ``float('inf')`` or 2. Returns ``delta`` of shape (n, d). Rows where the hyperplane does
    not meet the box get the box point that comes closest to it (``<w, delta>`` as near
    to ``r`` as the box allows); rows with ``w = 0`` get ``delta = 0``.
    """
    if x.ndim != 2 or w.shape != x.shape or r.shape != x.shape[:1]:
        raise ValueError(f"expected x, w of shape (n, d) and r of shape (n,), got {tuple(x.shape)}, "
                         f"{tuple(w.shape)}, {tuple(r.shape)}")
    if p not in (2, float("inf")):
        raise ValueError(f"only p = inf and p = 2 are supported, got p = {p}")
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)
    w = w * flip[:, None]
    r = r.abs()
    a = w.abs()
    moving = a > 0
    # room along the direction sign(w_i)
    cap = torch.where(w > 0, 1.0 - x, x)
    if p == 2:
        slope = a * a
        breaks = torch.where(moving, cap / torch.where(moving, a, 1.0), float("inf"))
    else:
        slope = a
        breaks = torch.where(moving, cap, float("inf"))
    breaks, order = breaks.sort(dim=1, stable=True)
    slope = slope.gather(1, order)
    # H at breakpoint k: sum_{j<k} slope_j b_j (saturated) + b_k * sum_{j>=k} slope_j (still growing)
    saturated = torch.where(torch.isinf(breaks), 0.0, slope * breaks)
    sat_before = torch.cumsum(saturated, dim=1) - saturated
    free_from = slope.flip(1).cumsum(dim=1).flip(1)
    reached = sat_before + torch.where(free_from > 0, breaks * free_from, 0.0)
    k = (reached < r[:, None]).sum(dim=1, keepdim=True)
    feasible = k.squeeze(1) < x.shape[1]
    k = k.clamp(max=x.shape[1] - 1)
    free_k = free_from.gather(1, k).squeeze(1)
    s = (r - sat_before.gather(1, k).squeeze(1)).clamp_min(0.0) / free_k.clamp_min(torch.finfo(x.dtype).tiny)
    s = torch.where(feasible, s, float("inf"))[:, None]
    step = s * a if p == 2 else s.expand_as(a)
    return torch.where(moving, torch.sign(w) * torch.minimum(step, cap), 0.0)
