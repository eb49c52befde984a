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


#: default cap on the copies one stacked batch of APGD-T / FAB-T holds ("auto"), per device type.
#: On a CPU the per-image cost of a pass grows once a batch outgrows the caches (one thread, DigitsCNN:
#: 464 points x 2 targets per batch took 1.35x longer than one target at a time), so a few hundred
#: rows; elsewhere (GPUs) more rows fill the device better, bounded for memory.
CPU_MAX_ROWS = 512
GPU_MAX_ROWS = 1024


def checked_max_rows(max_rows: int | str | None) -> int | str | None:
    """``max_rows`` as given to APGD or FAB: a positive integer, None (no cap) or "auto" (by device)."""
    if max_rows is None or max_rows == "auto":
        return max_rows
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, float)) or int(max_rows) != max_rows or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, None or 'auto', got {max_rows!r}")
    return int(max_rows)


def runs_per_batch(max_rows: int | str | None, n_points: int, n_runs: int, device: torch.device) -> int:
    """How many runs (targets, restarts) of ``n_points`` copies each to stack into one batch."""
    if max_rows is None:
        return n_runs
    if max_rows == "auto":
        max_rows = CPU_MAX_ROWS if device.type == "cpu" else GPU_MAX_ROWS
    cap = int(max_rows)
    return max(1, min(n_runs, cap // max(n_points, 1)))
