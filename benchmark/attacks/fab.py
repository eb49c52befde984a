"""FAB: the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), targeted and untargeted.

A minimum-norm attack. Each step linearises the decision function g = z_t - z_y around the
current iterate, projects both the iterate and the original point onto the linearised
boundary {g = 0} inside [0, 1] with the minimum-norm projection of the threat model's norm,
mixes the two projections (weight alpha towards the original point) and extrapolates by eta.
Every adversarial iterate is recorded when it is the smallest so far, and the iterate then
steps back towards the original: x = (1 - beta) x_orig + beta x.

* ``n_targets > 0`` (FAB-T): run k = 2 .. n_targets + 1 attacks the class with the k-th
  highest clean logit; one forward and one backward pass linearise per step.
* ``n_targets = 0`` (FAB): each step picks, among all classes t != y, the one whose
  linearised boundary is closest; this needs the full Jacobian of the logits (one backward
  pass per class per step), so it is K times dearer and meant for few classes.

Each step also spends one gradient-free forward pass to test the new iterate, so a step costs
two forward passes (both counted in ``queries``) and one backward pass (K untargeted).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..threat_models import ThreatModel
from ._common import checked_max_rows, kth_class, loss_and_grad, runs_per_batch
from ._projections import dual_norm, project_onto_hyperplane_in_box
from .base import MinimumNormAttack, RunOutput, predict
from .losses import targeted_margin

__all__ = ["FAB"]


def _view(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-row (n,) tensor to broadcast against a batch ``like``."""
    return t.view(-1, *([1] * (like.ndim - 1)))


def _logit_jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (n, K) and their input Jacobian (n, K, *x.shape[1:]) from one forward pass."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        n_classes = logits.shape[1]
        rows = [torch.autograd.grad(logits[:, k].sum(), xr, retain_graph=k < n_classes - 1)[0]
                for k in range(n_classes)]
    return logits.detach(), torch.stack(rows, dim=1)


class FAB(MinimumNormAttack):
    """Fast Adaptive Boundary attack; ``min_norm`` is the smallest adversarial norm found.

    ``early_stop_eps`` lets a point stop as soon as one of its runs finds an adversarial
    point within eps: enough for robust accuracy (and much cheaper), but then ``min_norm``
    is only an upper bound of the attack's full result, unfit for robustness curves.
    ``batch_targets`` runs the target classes as one batch of n * n_targets rows (faster on
    a GPU, n_targets times the memory), at most ``max_rows`` rows per batch (as many targets
    as fit; None: no bound; "auto": the batch handed over, more for tiny inputs, see
    ``_common.auto_max_rows``); the result is
    the same up to float rounding.
    """

    name = "fab"

    def __init__(
        self,
        threat_model: str | ThreatModel,
        n_iter: int = 100,
        n_restarts: int = 1,
        n_targets: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int = 0,
        batch_targets: bool = True,
        early_stop_eps: bool = False,
        max_rows: int | str | None = "auto",
    ) -> None:
        super().__init__(threat_model, seed)
        if self.threat_model.p not in (2.0, float("inf")):
            raise ValueError(f"FAB supports the Linf and L2 threat models, got {self.threat_model}")
        if int(n_iter) < 1 or int(n_restarts) < 1 or int(n_targets) < 0:
            raise ValueError(f"need n_iter >= 1, n_restarts >= 1, n_targets >= 0; got {n_iter}, {n_restarts}, {n_targets}")
        if not 0.0 <= alpha_max <= 1.0:
            raise ValueError(f"alpha_max must lie in [0, 1], got {alpha_max}")
        if not eta >= 1.0:
            raise ValueError(f"eta (extrapolation) must be >= 1, got {eta}")
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta (step back) must lie in (0, 1), got {beta}")
        self.n_iter, self.n_restarts, self.n_targets = int(n_iter), int(n_restarts), int(n_targets)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.batch_targets, self.early_stop_eps = bool(batch_targets), bool(early_stop_eps)
        self.max_rows = checked_max_rows(max_rows)

    def classes_needed(self) -> int:
        """n targets need n + 1 classes (the untargeted attack, 2)."""
        return max(self.n_targets + 1, 2)

    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator) -> RunOutput:
        with torch.no_grad():
            logits = model(x)
        if logits.shape[1] < self.classes_needed():
            raise ValueError(f"n_targets={self.n_targets} needs at least {self.classes_needed()} classes, "
                             f"the model has {logits.shape[1]}")
        queries = torch.ones(len(x), dtype=torch.long, device=x.device)
        # a point misclassified when clean is adversarial at distance 0 and is not attacked
        min_norm = torch.where(logits.argmax(1) != y, 0.0, float("inf")).to(x.dtype)
        best = x.clone()
        targets = torch.stack([kth_class(logits, k) for k in range(2, self.n_targets + 2)]) if self.n_targets else None
        for restart in range(self.n_restarts):
            left = self.n_targets
            while left or targets is None:
                todo = (min_norm > eps) if self.early_stop_eps else (min_norm > 0)
                pts = todo.nonzero().flatten()
                if pts.numel() == 0:
                    break
                if targets is None:
                    group = None
                else:
                    size = runs_per_batch(self.max_rows, len(pts), left, x) if self.batch_targets else 1
                    group, left = targets[self.n_targets - left:self.n_targets - left + size], left - size
                copies = 1 if group is None else group.shape[0]
                rows = pts.repeat(copies)
                x_orig = x[rows]
                if restart == 0:
                    x_start = x_orig
                else:  # a random start near x_orig, within half the best norm found so far
                    radius = torch.minimum(min_norm[rows], eps[rows]) / 2
                    x_start = self.threat_model.random_start(x_orig, radius, generator)
                target = None if group is None else group[:, pts].flatten()
                norm, adv, q = self._attack_rows(model, x_orig, x_start, y[rows], target, eps[rows], rows, len(x))
                queries.index_add_(0, rows, q)
                norm, adv = norm.view(copies, -1), adv.view(copies, -1, *x.shape[1:])
                norm, which = norm.min(dim=0)
                adv = adv[which, torch.arange(len(pts), device=x.device)]
                better = norm < min_norm[pts]
                min_norm[pts] = torch.where(better, norm, min_norm[pts])
                best[pts] = torch.where(_view(better, adv), adv, best[pts])
                if group is None:
                    break
        x_adv = torch.where(_view(min_norm <= eps, x), best, x)
        return RunOutput(x_adv, queries, min_norm)

    def _linearise(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """Value g(x) (n,) and gradient (n, d) of the decision function to push over zero."""
        if target is not None:
            margin, grad, _ = loss_and_grad(model, x, y, targeted_margin, target)
            return -margin, -grad.flatten(1)
        logits, jac = _logit_jacobian(model, x)
        idx = torch.arange(len(x), device=x.device)
        g = logits - logits[idx, y][:, None]
        w = (jac - jac[idx, y][:, None]).flatten(2)
        dist = g.abs() / (dual_norm(w.flatten(0, 1), self.threat_model.p).view(g.shape) + 1e-12)
        dist[idx, y] = float("inf")
        t = dist.argmin(dim=1)
        return g[idx, t], w[idx, t]

    def _attack_rows(
        self, model: nn.Module, x_orig: Tensor, x_start: Tensor, y: Tensor, target: Tensor | None,
        eps: Tensor, point: Tensor, n_points: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One FAB run per row; returns the smallest adversarial norm (inf if none), its point
        and the forward passes spent, per row. ``point`` maps rows to points (early stop)."""
        tm, n = self.threat_model, len(x_orig)
        out_norm = torch.full((n,), float("inf"), dtype=x_orig.dtype, device=x_orig.device)
        out_adv, out_q = x_orig.clone(), torch.zeros(n, dtype=torch.long, device=x_orig.device)
        live = torch.arange(n, device=x_orig.device)  # rows still running (early stop drops some)
        best_norm, best_adv, x_cur = out_norm.clone(), x_orig.clone(), x_start.clone()
        done_points = torch.zeros(n_points, dtype=torch.bool, device=x_orig.device)
        for it in range(self.n_iter):
            g0, w = self._linearise(model, x_cur, y, target)
            # project the iterate and the original point onto {z : g0 + <w, z - x_cur> = 0}
            shift = (w * (x_orig - x_cur).flatten(1)).sum(1)
            delta = project_onto_hyperplane_in_box(
                torch.cat([x_cur, x_orig]).flatten(1), torch.cat([w, w]), torch.cat([-g0, -g0 - shift]), tm.p
            ).view(2, *x_cur.shape)
            d_cur, d_orig = delta[0], delta[1]
            n_cur, n_orig = tm.norm(d_cur), tm.norm(d_orig)
            alpha = _view((n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(max=self.alpha_max), x_cur)
            x_new = ((1 - alpha) * (x_cur + self.eta * d_cur) + alpha * (x_orig + self.eta * d_orig)).clamp(0.0, 1.0)
            adv = predict(model, x_new) != y
            dist = tm.norm(x_new - x_orig)
            better = adv & (dist < best_norm)
            best_norm = torch.where(better, dist, best_norm)
            best_adv = torch.where(_view(better, x_new), x_new, best_adv)
            x_cur = torch.where(_view(adv, x_new), (1 - self.beta) * x_orig + self.beta * x_new, x_new)
            if self.early_stop_eps and it + 1 < self.n_iter:
                hits = torch.zeros(n_points, device=x_orig.device).index_add_(0, point[live], (best_norm <= eps).float())
                done_points |= hits > 0
                stop = done_points[point[live]]
                if bool(stop.any()):  # the only host sync of a step, and only with early_stop_eps
                    out_norm[live[stop]], out_adv[live[stop]] = best_norm[stop], best_adv[stop]
                    out_q[live[stop]] = 2 * (it + 1)
                    keep = ~stop
                    live, best_norm, best_adv, x_cur = live[keep], best_norm[keep], best_adv[keep], x_cur[keep]
                    x_orig, y, eps = x_orig[keep], y[keep], eps[keep]
                    target = None if target is None else target[keep]
                    if live.numel() == 0:
                        break
        out_norm[live], out_adv[live], out_q[live] = best_norm, best_adv, 2 * (it + 1)
        return out_norm, out_adv, out_q
