"""Per-point losses used by the attacks. Every function returns a tensor of shape (n,).

Conventions: attacks *maximise* these losses.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cross_entropy", "dlr", "margin", "targeted_margin", "LOSSES"]


def cross_entropy(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Cross-entropy of the true class (untargeted) or minus that of the target (targeted)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _best_other(logits: Tensor, y: Tensor) -> Tensor:
    """Largest logit among the classes other than y."""
    masked = logits.clone()
    masked.scatter_(1, y[:, None], float("-inf"))
    return masked.amax(dim=1)


def dlr(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), untargeted unless ``target`` is given.

    Untargeted:  -(z_y - max_{i != y} z_i) / (z_p1 - z_p3 + 1e-12)
    Targeted:    -(z_y - z_t) / (z_p1 - (z_p3 + z_p4) / 2 + 1e-12)
    where z_p1 >= z_p2 >= ... are the sorted logits.
    """
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        return -(z_y - _best_other(logits, y)) / (top[:, 0] - top[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{k != y} z_k: positive while the point is classified correctly."""
    return logits.gather(1, y[:, None]).squeeze(1) - _best_other(logits, y)


def targeted_margin(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """z_y - z_t: the quantity FAB drives to zero."""
    return logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)


LOSSES = {"ce": cross_entropy, "dlr": dlr}
