"""The one interface every attack shares.

``attack(model, x, y, eps=...)`` returns an :class:`AttackOutput`. The base class's
``__call__`` is the only entry point: it validates the inputs, calls the subclass's
``run``, checks that every returned point is feasible (in [0, 1] and within eps),
and computes success with one extra forward pass. Subclasses implement ``run`` only.

Two families, as in Foolbox: :class:`FixedBudgetAttack` (APGD, PGD, FGSM, Square)
searches inside a given eps; :class:`MinimumNormAttack` (FAB) searches for the
smallest perturbation and reports its norm, success then meaning "found within eps".
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..seeding import seeded_generator
from ..threat_models import ThreatModel, get_threat_model

__all__ = ["Attack", "FixedBudgetAttack", "MinimumNormAttack", "AttackOutput", "RunOutput", "BoundsError"]

#: tolerance on the budget and the box when checking adversarial examples
TOLERANCE = 1e-5


class BoundsError(AssertionError):
    """An attack returned a point outside [0, 1] or outside the eps-ball."""


@dataclass
class RunOutput:
    """What a subclass's ``run`` returns."""

    x_adv: Tensor
    #: forward passes spent per point (a backward pass is not counted separately)
    queries: Tensor | None = None
    #: for minimum-norm attacks: the smallest adversarial norm found per point (inf if none)
    min_norm: Tensor | None = None


@dataclass
class AttackOutput:
    x_adv: Tensor
    #: the model misclassifies x_adv (and, for minimum-norm attacks, its norm is <= eps)
    success: Tensor
    #: ||x_adv - x|| in the threat model's norm
    norm: Tensor
    queries: Tensor
    #: minimum-norm attacks: the smallest adversarial norm found, inf where none was found
    min_norm: Tensor | None = None
    #: the model's logits at x_adv are NaN or infinite: no verdict (such a point is never a success)
    non_finite: Tensor | None = None


def predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


class Attack(ABC):
    """Base class; subclasses set their settings in ``__init__`` and implement ``run``."""

    #: short name used in records and on the site
    name: str = "attack"
    #: queries only the model's outputs, never its gradients: when such an attack breaks points that
    #: the gradient attacks missed, the evaluation is flagged (gradient masking)
    black_box: bool = False

    def __init__(self, threat_model: str | ThreatModel, seed: int = 0) -> None:
        self.threat_model = get_threat_model(threat_model)
        self.seed = int(seed)

    def classes_needed(self) -> int:
        """The fewest classes a model must output for this attack, with these settings, to run."""
        return 2

    def generator(self, device: torch.device | str, offset: int = 0) -> torch.Generator:
        """A fresh generator seeded from the attack's seed (and an offset, e.g. a chunk index)."""
        return seeded_generator(self.seed, offset=offset, device=device)

    @abstractmethod
    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator) -> RunOutput:
        """Search for adversarial examples. ``eps`` has shape (n,)."""

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *, generator: torch.Generator | None = None
    ) -> AttackOutput:
        if not torch.is_floating_point(x):
            raise TypeError(f"inputs must be a float tensor in [0, 1], got dtype {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"inputs must lie in [0, 1], got range [{x.min().item():.4g}, {x.max().item():.4g}]")
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
        if x.shape[0] == 0:
            empty = torch.zeros(0, device=x.device)
            return AttackOutput(x.clone(), empty.bool(), empty, empty.long(), empty if self.is_minimum_norm else None,
                                empty.bool())
        gen = generator if generator is not None else self.generator(x.device)
        out = self.run(model, x, y, eps_t, gen)
        x_adv = out.x_adv.detach()
        ok = self.threat_model.within(x_adv, x, eps_t, TOLERANCE)
        if not bool(ok.all()):
            bad = (~ok).nonzero().flatten()[:5].tolist()
            raise BoundsError(f"{self.name} returned points outside [0,1] or the {self.threat_model} ball of eps at indices {bad}")
        norm = self.threat_model.norm(x_adv - x)
        with torch.no_grad():
            logits = model(x_adv)
        finite = torch.isfinite(logits).all(dim=1)
        success = (logits.argmax(dim=1) != y) & finite  # an all-NaN row's argmax is class 0: not a verdict
        queries = out.queries if out.queries is not None else torch.zeros_like(y)
        return AttackOutput(x_adv, success, norm, queries + 1, out.min_norm, ~finite)

    is_minimum_norm = False

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "threat_model")
        return f"{type(self).__name__}({self.threat_model}, {settings})"


class FixedBudgetAttack(Attack, ABC):
    """Searches inside the eps-ball for a misclassified point."""


class MinimumNormAttack(Attack, ABC):
    """Searches for the smallest adversarial perturbation; ``run`` sets ``min_norm``.

    ``run`` must return in ``x_adv`` the smallest adversarial point found when its norm
    is <= eps and the original x otherwise, so that the returned batch is always feasible.
    """

    is_minimum_norm = True
