"""Baselines outside the protocol: FGSM and PGD with a fixed step (Madry et al. 2018).

They are the attacks most papers report; the protocol's numbers are compared with them
(a large gap between PGD-CE and the standard protocol is a sign of gradient masking).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..threat_models import ThreatModel
from ._common import loss_and_grad
from .base import FixedBudgetAttack, RunOutput
from .losses import LOSSES

__all__ = ["PGD", "FGSM"]


class PGD(FixedBudgetAttack):
    """Projected gradient ascent on a loss with a constant step ``step_size * eps``.

    ``early_stop`` keeps the first misclassified iterate of each point and stops attacking it
    (what an evaluation wants); without it every point runs all steps and the last iterate is
    returned (what adversarial training wants). Either way a point whose gradient is exactly zero
    where it stands (a saturated softmax) would never move again: it stops there, its iterate final.
    """

    name = "pgd"

    def __init__(
        self,
        threat_model: str | ThreatModel,
        n_iter: int = 10,
        step_size: float = 0.25,
        loss: str = "ce",
        random_start: bool = True,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(threat_model, seed)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
        if int(n_iter) != n_iter or n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be positive (a fraction of eps), got {step_size!r}")
        self.n_iter, self.step_size, self.loss = int(n_iter), float(step_size), loss
        self.random_start, self.early_stop = bool(random_start), bool(early_stop)

    def classes_needed(self) -> int:
        """DLR needs 3 classes (its denominator uses the third logit); cross-entropy 2."""
        return 3 if self.loss == "dlr" else 2

    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator) -> RunOutput:
        tm, loss_fn = self.threat_model, LOSSES[self.loss]
        x_adv = tm.random_start(x, eps, generator) if self.random_start else x.clone()
        best = x_adv.clone()
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        active = torch.arange(len(x), device=x.device)
        step = (self.step_size * eps).view(-1, *([1] * (x.ndim - 1)))
        for _ in range(self.n_iter):
            if active.numel() == 0:
                break
            xa = x_adv[active]
            _, grad, logits = loss_and_grad(model, xa, y[active], loss_fn)
            queries[active] += 1
            if self.early_stop:
                fooled = logits.argmax(1) != y[active]
                best[active[fooled]] = xa[fooled]
                keep = ~fooled
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
            stuck = (grad == 0).flatten(1).all(1)
            if bool(stuck.any()):
                best[active[stuck]] = xa[stuck]
                keep = ~stuck
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
            xa = tm.project(xa + step[active] * tm.steepest_direction(grad), x[active], eps[active])
            x_adv[active] = xa
            if not self.early_stop:
                best[active] = xa
        if self.early_stop:
            best[active] = x_adv[active]
        return RunOutput(best, queries)


class FGSM(PGD):
    """One signed-gradient step of size eps from the clean point (Goodfellow et al. 2015)."""

    name = "fgsm"

    def __init__(self, threat_model: str | ThreatModel, loss: str = "ce", seed: int = 0) -> None:
        super().__init__(threat_model, n_iter=1, step_size=1.0, loss=loss, random_start=False, early_stop=False, seed=seed)
