"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and an adaptive step size.

Each copy of a point starts at a random point of the eps-ball and takes ``n_iter`` steps of
size eta (2 * eps at first). At the checkpoints w_j the step of a copy is halved when its loss
rose in at most ``rho`` of the steps since w_{j-1}, or when its step was not halved at w_{j-1}
and its best loss did not improve since then; a halved copy restarts from its best-loss iterate.

Targeted runs (``n_targets > 0``) aim at the class with the k-th highest clean logit,
k = 2 .. n_targets + 1. The runs (targets x restarts) are either stacked into one batch of
copies (``batch_targets=True``) or run one after another on the points still unbroken.
A point is dropped from the batch, all its copies together, as soon as one copy is misclassified.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..threat_models import ThreatModel
from ._common import kth_class, loss_and_grad
from .base import FixedBudgetAttack, RunOutput
from .losses import LOSSES

__all__ = ["APGD", "checkpoints"]

#: weight of the gradient step against the previous displacement (the momentum is 1 - ALPHA)
ALPHA = 0.75


def checkpoints(n_iter: int) -> list[int]:
    """The iterations w_1 < w_2 < ... (< n_iter) at which the step size may be halved.

    Fractions p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j * N).
    Kept in hundredths as integers so that N = 100 gives exactly 22, 41, 57, 70, 80, 87, 93, 99.
    """
    out, p, gap = [], 22, 22
    while True:
        w = -(-p * n_iter // 100)
        if w >= n_iter:
            return out
        if w > (out[-1] if out else 0):
            out.append(w)
        gap = max(gap - 3, 6)
        p += gap


def _first_of_each(owner: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The distinct values of ``owner`` (in [0, n)) and the position of each one's first occurrence."""
    pos = torch.arange(len(owner), device=owner.device)
    first = torch.full((n,), len(owner), device=owner.device, dtype=torch.long)
    first.scatter_reduce_(0, owner, pos, reduce="amin")
    hit = (first < len(owner)).nonzero().flatten()
    return hit, first[hit]


@dataclass
class _Found:
    """Per-point results shared by all the runs of one call."""

    x_adv: Tensor  # misclassified iterate where done, else the best-loss iterate seen so far
    done: Tensor  # bool: a misclassified point has been found (or x itself is misclassified)
    best_loss: Tensor  # loss of the x_adv kept for points not done
    queries: Tensor  # forward passes spent


class APGD(FixedBudgetAttack):
    """Auto-PGD with the cross-entropy or DLR loss, untargeted or targeted, Linf or L2."""

    name = "apgd"

    def __init__(
        self,
        threat_model: str | ThreatModel,
        loss: str = "ce",
        n_iter: int = 100,
        n_restarts: int = 1,
        rho: float = 0.75,
        n_targets: int = 0,
        eot_iter: int = 1,
        seed: int = 0,
        batch_targets: bool = True,
    ) -> None:
        super().__init__(threat_model, seed)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        for label, value in (("n_iter", n_iter), ("n_restarts", n_restarts), ("eot_iter", eot_iter)):
            if int(value) != value or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if int(n_targets) != n_targets or n_targets < 0:
            raise ValueError(f"n_targets must be a non-negative integer, got {n_targets!r}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must lie in [0, 1], got {rho!r}")
        self.loss, self.n_iter, self.n_restarts, self.rho = loss, int(n_iter), int(n_restarts), float(rho)
        self.n_targets, self.eot_iter, self.batch_targets = int(n_targets), int(eot_iter), bool(batch_targets)

    def _check_classes(self, num_classes: int) -> None:
        needed = max(self.n_targets + 1, 2)
        if self.loss == "dlr":
            needed = max(needed, 4 if self.n_targets else 3)
        if num_classes < needed:
            raise ValueError(
                f"APGD with loss {self.loss!r} and n_targets={self.n_targets} needs at least {needed} classes, "
                f"the model outputs {num_classes}"
            )

    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator) -> RunOutput:
        with torch.no_grad():
            clean_logits = model(x)
        self._check_classes(clean_logits.shape[1])
        found = _Found(
            x_adv=x.clone(),
            done=clean_logits.argmax(1) != y,
            best_loss=torch.full((len(x),), float("-inf"), device=x.device, dtype=x.dtype),
            queries=torch.ones(len(x), dtype=torch.long, device=x.device),
        )
        ranks: list[int | None] = list(range(2, self.n_targets + 2)) if self.n_targets else [None]
        runs = [k for k in ranks for _ in range(self.n_restarts)]
        groups = [runs] if self.batch_targets else [[k] for k in runs]
        for group in groups:
            todo = (~found.done).nonzero().flatten()
            if todo.numel() == 0:
                break
            owner = todo.repeat(len(group))
            target = None
            if self.n_targets:
                target = torch.cat([kth_class(clean_logits[todo], k) for k in group])
            self._attack(model, x, y, eps, owner, target, generator, found)
        return RunOutput(found.x_adv, found.queries)

    def _attack(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, owner: Tensor,
        target: Tensor | None, generator: torch.Generator, found: _Found,
    ) -> None:
        """Run APGD on the copies x[owner] (one target each), writing what it finds into ``found``."""
        tm, loss_fn, n = self.threat_model, LOSSES[self.loss], len(x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        x0, yc, epsc = x[owner], y[owner], eps[owner]
        eta = (2.0 * epsc).view(shape)
        x_cur = tm.random_start(x0, epsc, generator)
        marks, last_mark = set(checkpoints(self.n_iter)), 0
        m = len(owner)
        count = torch.zeros(m, device=x.device)
        halved = torch.zeros(m, dtype=torch.bool, device=x.device)
        loss_best = loss_at_mark = x_best = grad_best = x_prev = loss_prev = None
        for k in range(self.n_iter + 1):
            if k > 0:  # one step from x_cur; the first step has no momentum
                z = tm.project(x_cur + eta * tm.steepest_direction(grad), x0, epsc)
                if k > 1:
                    z = tm.project(x_cur + ALPHA * (z - x_cur) + (1 - ALPHA) * (x_cur - x_prev), x0, epsc)
                x_prev, x_cur = x_cur, z
            loss, grad, logits = loss_and_grad(model, x_cur, yc, loss_fn, target, self.eot_iter)
            fooled = logits.argmax(1) != yc
            if bool(fooled.any()):
                idx = fooled.nonzero().flatten()
                points, first = _first_of_each(owner[idx], n)
                found.x_adv[points] = x_cur[idx[first]]
                found.done[points] = True
                dropped = found.done[owner]
                found.queries.index_add_(0, owner[dropped], self._passes(k, dropped))
                keep = (~dropped).nonzero().flatten()
                if keep.numel() == 0:
                    return
                owner, x0, yc, epsc, eta, x_cur, loss, grad, count, halved = (
                    t[keep] for t in (owner, x0, yc, epsc, eta, x_cur, loss, grad, count, halved))
                target = target[keep] if target is not None else None
                if k > 0:
                    x_prev, loss_prev, x_best, grad_best, loss_best, loss_at_mark = (
                        t[keep] for t in (x_prev, loss_prev, x_best, grad_best, loss_best, loss_at_mark))
            if k == 0:
                x_best, grad_best, loss_best, loss_at_mark = x_cur, grad, loss, loss
                loss_prev = loss
                continue
            count += loss > loss_prev
            loss_prev = loss
            better = loss > loss_best
            loss_best = torch.where(better, loss, loss_best)
            better = better.view(shape)
            x_best, grad_best = torch.where(better, x_cur, x_best), torch.where(better, grad, grad_best)
            if k in marks:
                halve = (count <= self.rho * (k - last_mark)) | (~halved & (loss_best <= loss_at_mark))
                h = halve.view(shape)
                eta = torch.where(h, eta / 2, eta)
                # restart from the best iterate, with no momentum on the next step
                x_cur, x_prev = torch.where(h, x_best, x_cur), torch.where(h, x_best, x_prev)
                grad = torch.where(h, grad_best, grad)
                loss_prev = torch.where(halve, loss_best, loss_prev)
                count.zero_()
                loss_at_mark, halved, last_mark = loss_best, halve, k
        found.queries.index_add_(0, owner, self._passes(self.n_iter, torch.ones_like(owner, dtype=torch.bool)))
        # points still robust: keep the copy with the highest best loss, if higher than earlier runs'
        top = torch.full((n,), float("-inf"), device=x.device, dtype=loss_best.dtype)
        top.scatter_reduce_(0, owner, loss_best, reduce="amax")
        is_top = (loss_best == top[owner]) & (loss_best > found.best_loss[owner])
        idx = is_top.nonzero().flatten()
        points, first = _first_of_each(owner[idx], n)
        found.x_adv[points] = x_best[idx[first]]
        found.best_loss[points] = loss_best[idx[first]]

    def _passes(self, k: int, mask: Tensor) -> Tensor:
        """Forward passes spent by each selected copy after evaluating iterates 0..k."""
        return torch.full((int(mask.sum()),), (k + 1) * self.eot_iter, dtype=torch.long, device=mask.device)
