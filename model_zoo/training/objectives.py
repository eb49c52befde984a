"""Training losses the recipes need beyond plain cross-entropy.

Each returns a per-point tensor of shape (n,) (the recipes average it), so that the same
function serves both as a training loss and, with ``loss_and_grad``, as an attack loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.attacks._common import loss_and_grad
from benchmark.threat_models import ThreatModel

__all__ = ["soft_cross_entropy", "kl_from_reference", "input_gradient_penalty", "trades_adversary"]


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """-sum_k p_k log softmax(logits)_k: cross-entropy against soft labels (defensive distillation)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1)


def kl_from_reference(logits: Tensor, reference_probs: Tensor) -> Tensor:
    """KL(p || softmax(logits)) = sum_k p_k (log p_k - log q_k), with 0 log 0 = 0 (TRADES' robust term)."""
    log_q = F.log_softmax(logits, dim=1)
    log_p = torch.log(reference_probs.clamp_min(1e-30))
    return (reference_probs * (log_p - log_q)).sum(dim=1)


def input_gradient_penalty(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-point cross-entropy and squared L2 norm of its input gradient, differentiable in the weights.

    The penalty of Ross & Doshi-Velez (2018): ||d CE(f(x), y) / dx||_2^2, computed by double
    backpropagation (the gradient graph is kept so that the penalty can itself be minimised).
    """
    xr = x.detach().requires_grad_(True)
    ce = F.cross_entropy(model(xr), y, reduction="none")
    (grad,) = torch.autograd.grad(ce.sum(), xr, create_graph=True)
    return ce, grad.flatten(1).pow(2).sum(dim=1)


def trades_adversary(
    model: nn.Module,
    x: Tensor,
    eps: float,
    threat_model: ThreatModel,
    n_iter: int,
    step_size: float,
    generator: torch.Generator,
    init_scale: float = 1e-3,
) -> Tensor:
    """TRADES' inner maximisation: ascend KL(f(x) || f(x')) over x' in the eps-ball (Zhang et al. 2019).

    Starts at x + ``init_scale`` * N(0, I) (the paper's small Gaussian start, since the KL's gradient
    vanishes at x' = x) and takes ``n_iter`` steepest-ascent steps of ``step_size * eps``, each
    projected onto the eps-ball intersected with [0, 1]. Returns x' detached.
    """
    with torch.no_grad():
        reference = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    x_adv = threat_model.project(x + init_scale * noise, x, eps)
    for _ in range(n_iter):
        _, grad, _ = loss_and_grad(model, x_adv, reference, kl_from_reference)
        x_adv = threat_model.project(x_adv + step_size * eps * threat_model.steepest_direction(grad), x, eps)
    return x_adv.detach()
