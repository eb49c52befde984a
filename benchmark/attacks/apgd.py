"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and an adaptive step size.

Each copy of a point starts at a random point of the eps-ball and takes ``n_iter`` steps of
size eta (2 * eps at first). At the checkpoints w_j the step of a copy is halved when its loss
rose in at most ``rho`` of the steps since w_{j-1}, or when its step was not halved at w_{j-1}
and its best loss did not improve since then; a halved copy restarts from its best-loss iterate.

Targeted runs (``n_targets > 0``) aim at the class with the k-th highest clean logit,
k = 2 .. n_targets + 1, or, with ``target_order="first_order"`` (MALT), at the class with the
(k-1)-th nearest decision boundary to first order (``_common.first_order_ranking``). The runs (targets x restarts) are either stacked into one batch of
copies (``batch_targets=True``, at most ``max_rows`` copies per batch, "auto": as many as the
batch handed over, more for tiny inputs, see ``_common.auto_max_rows``:
as many runs as fit are stacked, the next ones attack only the points still unbroken) or run one
after another.
A point is dropped from the batch, all its copies together, as soon as one copy is misclassified.

A copy whose gradient is exactly zero where it stands, with no momentum and a best iterate whose
gradient is zero too, can never move again (every step, momentum and restart from the best iterate
leaves it in place), so it leaves the batch at once with the result the remaining steps would give
(among a point's copies of exactly equal best loss, the one kept can then be another one):
where a model masks its gradients (a saturated softmax), APGD-CE spends one pass on such a point
instead of n_iter + 1. Only with ``eot_iter == 1``: averaged gradients of a randomised model can
differ from one pass to the next.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from ..threat_models import ThreatModel
from ._common import checked_max_rows, first_order_ranking, kth_class, loss_and_grad, runs_per_batch
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
    best_loss: Tensor  # float32: loss of the x_adv kept for points not done
    queries: Tensor  # forward passes spent


@dataclass
class _Copies:
    """State of the copies still under attack; every tensor is indexed by copy along dim 0."""

    owner: Tensor  # index of the point each copy attacks
    x0: Tensor
    y: Tensor
    eps: Tensor
    target: Tensor | None
    eta: Tensor  # step size, shaped to broadcast over the input
    x_cur: Tensor
    x_prev: Tensor
    grad: Tensor
    loss: Tensor
    loss_prev: Tensor
    x_best: Tensor  # highest-loss iterate and its gradient
    grad_best: Tensor
    loss_best: Tensor
    loss_at_mark: Tensor  # best loss at the last checkpoint
    count: Tensor  # steps since the last checkpoint in which the loss rose
    halved: Tensor  # eta was halved at the last checkpoint

    def select(self, keep: Tensor) -> "_Copies":
        return _Copies(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[keep]
                          for f in fields(self)})


#: how a targeted APGD ranks its targets: by the clean logits (the paper's APGD-T: the k-th highest
#: logit is the k-th target) or by first-order distance to each class boundary (MALT)
TARGET_ORDERS = ("logits", "first_order")


class APGD(FixedBudgetAttack):
    """Auto-PGD with the cross-entropy or DLR loss, untargeted or targeted, Linf or L2.

    Returns per point the first misclassified iterate found, else the highest-loss iterate of all
    its copies. Queries count the clean forward pass plus, per copy, n_iter + 1 gradient
    evaluations of ``eot_iter`` passes each (fewer once the point is broken).
    """

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
        max_rows: int | str | None = "auto",
        target_order: str = "logits",
    ) -> None:
        super().__init__(threat_model, seed)
        if target_order not in TARGET_ORDERS:
            raise ValueError(f"unknown target_order {target_order!r}; known: {', '.join(TARGET_ORDERS)}")
        self.target_order = target_order
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
        self.max_rows = checked_max_rows(max_rows)

    def classes_needed(self) -> int:
        """n targets need n + 1 classes; DLR needs 3 (its denominator uses the third logit), targeted DLR 4."""
        needed = max(self.n_targets + 1, 2)
        if self.loss == "dlr":
            needed = max(needed, 4 if self.n_targets else 3)
        return needed

    def _check_classes(self, num_classes: int) -> None:
        needed = self.classes_needed()
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
            best_loss=torch.full((len(x),), float("-inf"), device=x.device, dtype=torch.float32),
            queries=torch.ones(len(x), dtype=torch.long, device=x.device),
        )
        ranking = None
        if self.n_targets and self.target_order == "first_order":
            ranking = first_order_ranking(model, x, y, self.threat_model)
            found.queries += clean_logits.shape[1]  # the ranking: one backward pass per class
        ranks: list[int | None] = list(range(2, self.n_targets + 2)) if self.n_targets else [None]
        runs = [k for k in ranks for _ in range(self.n_restarts)]
        while runs:
            todo = (~found.done).nonzero().flatten()
            if todo.numel() == 0:
                break
            size = runs_per_batch(self.max_rows, len(todo), len(runs), x) if self.batch_targets else 1
            group, runs = runs[:size], runs[size:]
            owner = todo.repeat(len(group))
            target = None
            if self.n_targets:
                target = torch.cat([kth_class(clean_logits[todo], k) if ranking is None else ranking[todo, k - 2]
                                    for k in group])
            self._attack(model, x, y, eps, owner, target, generator, found)
        return RunOutput(found.x_adv, found.queries)

    def _attack(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, owner: Tensor,
        target: Tensor | None, generator: torch.Generator, found: _Found,
    ) -> None:
        """Run APGD on the copies x[owner] (one target each), writing what it finds into ``found``."""
        tm, loss_fn = self.threat_model, LOSSES[self.loss]
        x0, eps_c, y_c = x[owner], eps[owner], y[owner]
        start = tm.random_start(x0, eps_c, generator)
        loss, grad, logits = loss_and_grad(model, start, y_c, loss_fn, target, self.eot_iter)
        zeros = torch.zeros(len(owner), device=x.device)
        c: _Copies | None = _Copies(
            owner, x0, y_c, eps_c, target, eta=(2.0 * eps_c).view((-1,) + (1,) * (x.ndim - 1)),
            x_cur=start, x_prev=start, grad=grad, loss=loss, loss_prev=loss, x_best=start, grad_best=grad,
            loss_best=loss, loss_at_mark=loss, count=zeros, halved=zeros.bool(),
        )
        c = self._drop_fooled(c, logits, 0, found)
        c = self._drop_stuck(c, 0, found)
        marks, last_mark = set(checkpoints(self.n_iter)), 0
        for k in range(1, self.n_iter + 1):
            if c is None:
                return
            z = tm.project(c.x_cur + c.eta * tm.steepest_direction(c.grad), c.x0, c.eps)
            if k > 1:  # the first step has no momentum
                z = tm.project(c.x_cur + ALPHA * (z - c.x_cur) + (1 - ALPHA) * (c.x_cur - c.x_prev), c.x0, c.eps)
            c.x_prev, c.x_cur = c.x_cur, z
            c.loss, c.grad, logits = loss_and_grad(model, c.x_cur, c.y, loss_fn, c.target, self.eot_iter)
            c = self._drop_fooled(c, logits, k, found)
            if c is None:
                return
            c.count += c.loss > c.loss_prev
            c.loss_prev = c.loss
            better = c.loss > c.loss_best
            c.loss_best = torch.where(better, c.loss, c.loss_best)
            better = better.view_as(c.eta)
            c.x_best, c.grad_best = torch.where(better, c.x_cur, c.x_best), torch.where(better, c.grad, c.grad_best)
            if k in marks:
                halve = (c.count <= self.rho * (k - last_mark)) | (~c.halved & (c.loss_best <= c.loss_at_mark))
                h = halve.view_as(c.eta)
                c.eta = torch.where(h, c.eta / 2, c.eta)
                # restart from the best iterate, with no momentum on the next step
                c.x_cur, c.x_prev = torch.where(h, c.x_best, c.x_cur), torch.where(h, c.x_best, c.x_prev)
                c.grad = torch.where(h, c.grad_best, c.grad)
                c.loss_prev = torch.where(halve, c.loss_best, c.loss_prev)
                c.count.zero_()
                c.loss_at_mark, c.halved, last_mark = c.loss_best, halve, k
            c = self._drop_stuck(c, k, found)
        if c is not None:
            self._keep_best(c, found, self.n_iter)

    def _drop_fooled(self, c: _Copies, logits: Tensor, k: int, found: _Found) -> _Copies | None:
        """Record the misclassified iterates (iterate k) and drop every copy of the points they break."""
        fooled = logits.argmax(1) != c.y
        if not bool(fooled.any()):
            return c
        idx = fooled.nonzero().flatten()
        points, first = _first_of_each(c.owner[idx], len(found.done))
        found.x_adv[points] = c.x_cur[idx[first]]
        found.done[points] = True
        dropped = found.done[c.owner]
        found.queries.index_add_(0, c.owner[dropped], self._passes(c.owner[dropped], k))
        keep = (~dropped).nonzero().flatten()
        return c.select(keep) if keep.numel() else None

    def _drop_stuck(self, c: _Copies | None, k: int, found: _Found) -> _Copies | None:
        """Finish (as :meth:`_keep_best` after step k) the copies that cannot move again: zero gradient at
        the current and at the best iterate, and no momentum (the current iterate is the previous one)."""
        if c is None or self.eot_iter != 1:
            return c
        stuck = ((c.grad == 0).flatten(1).all(1) & (c.grad_best == 0).flatten(1).all(1)
                 & (c.x_cur == c.x_prev).flatten(1).all(1))
        if not bool(stuck.any()):
            return c
        self._keep_best(c.select(stuck.nonzero().flatten()), found, k)
        keep = (~stuck).nonzero().flatten()
        return c.select(keep) if keep.numel() else None

    def _keep_best(self, c: _Copies, found: _Found, k: int) -> None:
        """After step k (the last one, or the last one that could move them): count the copies' passes, and
        for each point still robust keep the highest-loss iterate of its copies if it beats the earlier runs'."""
        found.queries.index_add_(0, c.owner, self._passes(c.owner, k))
        loss = c.loss_best.to(found.best_loss.dtype)
        top = torch.full_like(found.best_loss, float("-inf")).scatter_reduce_(0, c.owner, loss, reduce="amax")
        idx = ((loss == top[c.owner]) & (loss > found.best_loss[c.owner])).nonzero().flatten()
        points, first = _first_of_each(c.owner[idx], len(found.done))
        found.x_adv[points] = c.x_best[idx[first]]
        found.best_loss[points] = loss[idx[first]]

    def _passes(self, owner: Tensor, k: int) -> Tensor:
        """Forward passes spent by each of these copies after evaluating iterates 0..k."""
        return torch.full_like(owner, (k + 1) * self.eot_iter)
