"""Small helpers shared by the gradient attacks."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

LossFn = Callable[..., Tensor]


def loss_and_grad(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, target: Tensor | None = None, eot_iter: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-point loss, its input gradient and the logits at ``x``.

    With ``eot_iter > 1`` (randomised models) the loss, gradient and logits are averaged over that
    many forward/backward passes (Expectation over Transformation).
    """
    loss_sum = grad_sum = logits_sum = None
    for _ in range(eot_iter):
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            loss = loss_fn(logits, y) if target is None else loss_fn(logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), xr)
        loss, logits = loss.detach(), logits.detach()
        if loss_sum is None:
            loss_sum, grad_sum, logits_sum = loss, grad, logits
        else:
            loss_sum, grad_sum, logits_sum = loss_sum + loss, grad_sum + grad, logits_sum + logits
    if eot_iter == 1:
        return loss_sum, grad_sum, logits_sum
    return loss_sum / eot_iter, grad_sum / eot_iter, logits_sum / eot_iter


def kth_class(logits: Tensor, k: int) -> Tensor:
    """The class with the k-th highest logit (k = 1 is the top class)."""
    return logits.sort(dim=1, descending=True).indices[:, k - 1]
