"""Threat models: the norm, the eps-ball projection and the steepest-ascent step.

A threat model is an object, not a string branched on in every attack. Every
projection lands in the eps-ball around ``x`` intersected with the box [0, 1].
``eps`` may be a float or a tensor of shape (n,) holding one radius per point.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from fractions import Fraction

import torch
from torch import Tensor

__all__ = ["ThreatModel", "Linf", "L2", "THREAT_MODELS", "get_threat_model", "parse_eps"]


def _per_point(eps: float | Tensor, x: Tensor) -> Tensor:
    """Broadcast eps (scalar or shape (n,)) to shape (n, 1, 1, ...) of x."""
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.ndim == 0:
        eps_t = eps_t.expand(x.shape[0])
    return eps_t.view(-1, *([1] * (x.ndim - 1)))


def _flat(t: Tensor) -> Tensor:
    return t.flatten(1)


class ThreatModel(ABC):
    """An Lp threat model on inputs in [0, 1]."""

    name: str
    #: the exponent of the norm (float('inf') for Linf)
    p: float

    @abstractmethod
    def norm(self, delta: Tensor) -> Tensor:
        """Per-point norm of a batch of perturbations, shape (n,)."""

    @abstractmethod
    def project_ball(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """Project perturbations onto the eps-ball (ignoring the box)."""

    @abstractmethod
    def steepest_direction(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for a given gradient."""

    @abstractmethod
    def random_delta(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None) -> Tensor:
        """A random perturbation on the sphere of radius eps (before box clipping)."""

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        """Project ``x_adv`` onto the eps-ball around ``x`` intersected with [0, 1].

        Clipping to the box after the ball projection never increases the norm,
        since x lies in the box and clipping shrinks every coordinate of the
        perturbation towards zero; so the result is always feasible.
        """
        delta = self.project_ball(x_adv - x, eps)
        return (x + delta).clamp_(0.0, 1.0)

    def random_start(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A feasible random starting point: clip(x + random point of the sphere)."""
        return (x + self.random_delta(x, eps, generator)).clamp(0.0, 1.0)

    def within(self, x_adv: Tensor, x: Tensor, eps: float | Tensor, tol: float = 1e-5) -> Tensor:
        """Per-point check that x_adv is in [0,1] and within eps of x (with tolerance)."""
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
        in_box = (_flat(x_adv) >= -tol).all(1) & (_flat(x_adv) <= 1 + tol).all(1)
        return in_box & (self.norm(x_adv - x) <= eps_t + tol)

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThreatModel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class Linf(ThreatModel):
    name = "Linf"
    p = float("inf")

    def norm(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().amax(dim=1)

    def project_ball(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        e = _per_point(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def steepest_direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def random_delta(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None) -> Tensor:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        # rescale so that each point's perturbation has Linf norm exactly eps
        u = u / _flat(u).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        return u * _per_point(eps, x)


class L2(ThreatModel):
    name = "L2"
    p = 2.0

    def norm(self, delta: Tensor) -> Tensor:
        return _flat(delta).norm(p=2, dim=1)

    def project_ball(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        e = _per_point(eps, delta)
        n = self.norm(delta).view(e.shape)
        factor = torch.minimum(torch.ones_like(n), e / n.clamp_min(1e-12))
        return delta * factor

    def steepest_direction(self, grad: Tensor) -> Tensor:
        n = self.norm(grad).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        return grad / n

    def random_delta(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None) -> Tensor:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.steepest_direction(g) * _per_point(eps, x)


THREAT_MODELS: dict[str, ThreatModel] = {tm.name: tm for tm in (Linf(), L2())}


def get_threat_model(name: str | ThreatModel) -> ThreatModel:
    """Look a threat model up by name (case-insensitive)."""
    if isinstance(name, ThreatModel):
        return name
    for key, tm in THREAT_MODELS.items():
        if key.lower() == str(name).lower():
            return tm
    raise ValueError(f"unknown threat model {name!r}; known: {', '.join(THREAT_MODELS)}")


def parse_eps(value: str | float | int) -> float:
    """Read an eps written as a number or a fraction such as '8/255'."""
    try:
        eps = float(value) if isinstance(value, (int, float)) else float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"eps {value!r} is not a number or a fraction like '8/255'") from exc
    except OverflowError:
        raise ValueError(f"eps {value!r} is too large to be a budget") from None
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {value!r}")
    if not math.isfinite(eps):
        raise ValueError(f"eps must be finite, got {value!r}")
    return eps
