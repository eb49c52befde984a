"""Local-stability metrics: how a model behaves in a small ball around its test points.

Every function returns one value per point (a tensor of shape (n,)); ``benchmark.analysis``
averages them into the record's ``metrics``. Inputs are [0, 1] batches as everywhere else;
the model must treat the points of a batch independently (eval mode), since several metrics
take the gradient of a sum over the batch.

* :func:`jacobian_norms`: the Frobenius norm of d logits / d x (exact, or by random projections);
* :func:`noise_accuracy`: the share of uniform random perturbations of the ball that leave the
  prediction correct;
* :func:`linearity_gaps`: the error of the first-order Taylor estimate of a logit-difference loss
  at an adversarial point;
* :func:`lipschitz_lower_bounds`: the largest ratio ||f(x') - f(x)||_2 / ||x' - x|| found by
  gradient ascent inside a ball (a lower bound on the local Lipschitz constant).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .attacks._common import loss_and_grad
from .attacks.losses import targeted_margin
from .threat_models import L2, Linf, ThreatModel

__all__ = [
    "EXACT_JACOBIAN_MAX", "jacobian_norms", "uniform_noise", "noise_accuracy", "best_other_class", "linearity_gaps",
    "lipschitz_lower_bounds",
]

#: input size x classes up to which the Jacobian is computed exactly (one backward pass per class)
EXACT_JACOBIAN_MAX = 2 ** 20


def _flat_sq(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).pow(2).sum(1)


def jacobian_norms(
    model: nn.Module, x: Tensor, *, method: str = "auto", n_projections: int = 16, generator: torch.Generator | None = None,
) -> Tensor:
    """Per point, the Frobenius norm of the Jacobian of the logits with respect to the input.

    ``method="exact"`` takes one backward pass per class: ||J||_F^2 = sum_k ||grad z_k||^2.
    ``method="projection"`` averages ||J^T v||^2 over ``n_projections`` Gaussian vectors v
    (unbiased for ||J||_F^2, since E[v v^T] = I) and returns its square root (so slightly biased
    low by Jensen's inequality). ``"auto"`` is exact when input size x classes <= EXACT_JACOBIAN_MAX.
    """
    if method not in ("auto", "exact", "projection"):
        raise ValueError(f"method must be 'auto', 'exact' or 'projection', got {method!r}")
    if n_projections < 1:
        raise ValueError(f"n_projections must be at least 1, got {n_projections}")
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        classes = logits.shape[1]
        if method == "auto":
            method = "exact" if x[0].numel() * classes <= EXACT_JACOBIAN_MAX else "projection"
        rounds = classes if method == "exact" else n_projections
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for k in range(rounds):
            if method == "exact":
                output = logits[:, k].sum()
            else:
                v = torch.randn(logits.shape, generator=generator, device=x.device, dtype=logits.dtype)
                output = (logits * v).sum()
            (grad,) = torch.autograd.grad(output, xr, retain_graph=k < rounds - 1)
            total += _flat_sq(grad)
    if method == "projection":
        total /= n_projections
    return total.sqrt()


def uniform_noise(x: Tensor, threat_model: ThreatModel, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """x plus a random perturbation of the eps-ball, clipped to [0, 1].

    Linf: every pixel uniform in [-eps, eps] (uniform in the cube). L2: uniform on the sphere of
    radius eps (a normalised Gaussian), where nearly all the ball's volume lies in high dimension.
    """
    if isinstance(threat_model, Linf):
        delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    elif isinstance(threat_model, L2):
        delta = threat_model.random_delta(x, eps, generator)
    else:
        raise ValueError(f"uniform noise is defined for the Linf and L2 threat models, got {threat_model}")
    return (x + delta).clamp(0.0, 1.0)


def noise_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel, eps: float, *, n_draws: int = 20,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per point, the share of ``n_draws`` noisy copies (:func:`uniform_noise`) classified correctly."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    correct = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for _ in range(n_draws):
            correct += (model(uniform_noise(x, threat_model, eps, generator)).argmax(1) == y).double()
    return correct / n_draws


def best_other_class(logits: Tensor, y: Tensor) -> Tensor:
    """The class with the largest logit other than y."""
    return logits.scatter(1, y[:, None], float("-inf")).argmax(1)


def linearity_gaps(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    """Per point, |L(x_adv) - L(x) - <grad L(x), x_adv - x>| for L(x') = z_y(x') - z_t(x').

    The class t is the best other class at the clean point, held fixed, so that L is a fixed
    linear function of the logits: the gap is exactly zero for a linear model (the cross-entropy,
    or a max over classes, would not be linear in x even then).
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    with torch.no_grad():
        target = best_other_class(model(x), y)
    loss, grad, _ = loss_and_grad(model, x, y, targeted_margin, target)
    with torch.no_grad():
        loss_adv = targeted_margin(model(x_adv), y, target)
    taylor = loss + (grad * (x_adv - x)).reshape(len(x), -1).sum(1)
    return (loss_adv - taylor).abs()


def _ratio(model: nn.Module, x: Tensor, delta: Tensor, f_x: Tensor, threat_model: ThreatModel) -> Tensor:
    """||f(x + delta) - f(x)||_2 / ||delta|| per point (0 where delta is 0); differentiable in delta."""
    change = (model(x + delta) - f_x).norm(dim=1)
    size = threat_model.norm(delta)
    return torch.where(size > 0, change / size.clamp_min(1e-12), torch.zeros_like(change))


def lipschitz_lower_bounds(
    model: nn.Module, x: Tensor, threat_model: ThreatModel, radius: float, *, n_steps: int = 50,
    step_size: float = 0.25, generator: torch.Generator | None = None,
) -> Tensor:
    """Per point, the largest ||f(x') - f(x)||_2 / ||x' - x|| found in the ``radius``-ball around x.

    Projected gradient ascent on the ratio from a random point of the sphere, with steps in the
    threat model's steepest direction whose size decays from ``step_size * radius`` to 0 along a
    half-cosine (a constant step would circle the maximum), each followed by the projection onto
    the ball and [0, 1]. Every ratio visited is a valid lower bound on the Lipschitz constant of the logits
    (L2 output norm, threat-model input norm) over the ball; the largest one is returned. For a
    linear model with the L2 norm the supremum is the spectral norm of its weight matrix.
    """
    if not radius > 0 or n_steps < 0:
        raise ValueError(f"need radius > 0 and n_steps >= 0, got {radius} and {n_steps}")
    tm = threat_model
    x = x.detach()
    with torch.no_grad():
        f_x = model(x)
    x_cur = tm.random_start(x, radius, generator)
    best = torch.zeros(len(x), dtype=f_x.dtype, device=x.device)
    for step in range(n_steps + 1):
        delta = (x_cur - x).requires_grad_(True)
        with torch.enable_grad():
            ratio = _ratio(model, x, delta, f_x, tm)
            grad = torch.autograd.grad(ratio.sum(), delta)[0] if step < n_steps else None
        best = torch.maximum(best, ratio.detach())
        if grad is not None:
            size = step_size * radius * 0.5 * (1 + math.cos(math.pi * step / n_steps))
            x_cur = tm.project(x_cur + size * tm.steepest_direction(grad), x, radius)
    return best
