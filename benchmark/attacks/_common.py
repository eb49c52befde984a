"""Small helpers shared by the gradient attacks."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..threat_models import ThreatModel

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


def first_order_distances(model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel) -> Tensor:
    """(n, classes): each point's distance to every other class's decision boundary to first order, inf for y.

    The distance to class t's boundary is (z_y - z_t) / ||grad_x (z_y - z_t)||_q, q the dual norm of the
    threat model's (1 for Linf, 2 for L2): exact for a linear model (MALT, Melamed, Yehudai & Shamir 2024,
    rank targets so). Costs one forward pass and one backward pass per class."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        classes = logits.shape[1]
        grads = [torch.autograd.grad(logits[:, t].sum(), xr, retain_graph=t < classes - 1)[0].flatten(1)
                 for t in range(classes)]
    logits, grad = logits.detach(), torch.stack(grads, 1)  # (n, classes, d)
    gap = logits.gather(1, y[:, None]) - logits
    diff = grad.gather(1, y[:, None, None].expand(-1, 1, grad.shape[2])) - grad
    dual = diff.abs().sum(2) if threat_model.p == float("inf") else diff.norm(dim=2)
    return (gap / dual.clamp_min(1e-12)).scatter(1, y[:, None], float("inf"))


def first_order_ranking(model: nn.Module, x: Tensor, y: Tensor, threat_model: ThreatModel) -> Tensor:
    """(n, classes - 1): the other classes of each point, nearest decision boundary to first order first
    (:func:`first_order_distances`)."""
    distance = first_order_distances(model, x, y, threat_model)
    return distance.argsort(1)[:, : distance.shape[1] - 1]


#: "auto" cap on the rows of one stacked batch of APGD-T / FAB-T, as input elements per device type.
#: Stacking never exceeds the batch the attack was handed (which the caller has shown to fit in
#: memory: its clean pass, and in the protocol APGD-CE's forward+backward, ran on at least as many
#: rows), except for inputs so small that this budget holds more rows: the 8x8 digits (512 rows on
#: a CPU, where a larger batch outgrows the caches: one thread, DigitsCNN, 464 points x 2 targets per
#: batch took 1.35x longer than one target at a time; 4,096 rows elsewhere, where more rows fill a
#: GPU better). A 3x32x32 image gets 10 / 85 rows, a 3x224x224 one none: there stacking only fills
#: the rows that broken points have freed. (ResNet-50 at 224x224 keeps about 90 MB per row for its
#: backward pass: a fixed cap of hundreds of rows would exhaust any device's memory.)
CPU_AUTO_ELEMENTS = 512 * 64
GPU_AUTO_ELEMENTS = 4096 * 64


def auto_max_rows(x: Tensor) -> int:
    """The "auto" row cap for a batch ``x`` handed to an attack (see :data:`CPU_AUTO_ELEMENTS`)."""
    budget = CPU_AUTO_ELEMENTS if x.device.type == "cpu" else GPU_AUTO_ELEMENTS
    return max(len(x), budget // max(x[0].numel(), 1)) if len(x) else 0


def checked_max_rows(max_rows: int | str | None) -> int | str | None:
    """``max_rows`` as given to APGD or FAB: a positive integer, None (no cap) or "auto" (by device)."""
    if max_rows is None or max_rows == "auto":
        return max_rows
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, float)) or int(max_rows) != max_rows or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, None or 'auto', got {max_rows!r}")
    return int(max_rows)


def runs_per_batch(max_rows: int | str | None, n_points: int, n_runs: int, x: Tensor) -> int:
    """How many runs (targets, restarts) of ``n_points`` copies each to stack into one batch,
    for an attack handed the batch ``x`` (which "auto" bounds the rows by)."""
    if max_rows is None:
        return n_runs
    cap = auto_max_rows(x) if max_rows == "auto" else int(max_rows)
    return max(1, min(n_runs, cap // max(n_points, 1)))
