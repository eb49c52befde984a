"""Shared fixtures: a linear classifier whose minimal adversarial perturbations are known in closed form."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

# The suite runs on a few shared CPU cores: one thread per process avoids oversubscription,
# which slows the small tensors used here several times over.
torch.set_num_threads(1)


@dataclass
class LinearProblem:
    """f(x) = W flatten(x) + b on inputs of shape (n, 1, side, side), with labels = the clean prediction."""

    model: nn.Module
    x: Tensor
    y: Tensor

    def min_perturbation(self, p: float) -> Tensor:
        """Per point, the smallest Lp norm (p = inf or 2) of a perturbation reaching another class, box ignored.

        Reaching class t needs (z_y - z_t) / ||w_y - w_t||_q with q the dual exponent of p.
        """
        return self.per_target(p).min(dim=1).values

    def per_target(self, p: float) -> Tensor:
        """(n, classes) matrix of the smallest Lp norm reaching each class (inf for the true class)."""
        weight = self.model.linear.weight.detach()
        with torch.no_grad():
            z = self.model(self.x)
        z_y = z.gather(1, self.y[:, None])
        diff = weight[self.y][:, None, :] - weight[None, :, :]  # (n, classes, d): w_y - w_t
        dual = diff.abs().sum(-1) if p == float("inf") else diff.norm(dim=-1)
        dist = (z_y - z) / dual.clamp_min(1e-12)
        return dist.scatter(1, self.y[:, None], float("inf"))


class LinearModel(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture
def linear_model() -> Callable[..., LinearProblem]:
    """Factory: ``linear_model(n=64, num_classes=10, side=8, seed=0, scale=10.0)``.

    Inputs lie in [0.4, 0.6] and the bias centres the logits there, so that the labels are spread
    over the classes and small perturbations never meet the box [0, 1]. ``scale`` multiplies the
    weights: it leaves the minimal perturbations unchanged and sharpens the softmax (at 10, the
    cross-entropy maximiser in the eps-ball is misclassified whenever some point of the ball is).
    """

    def make(n: int = 64, num_classes: int = 10, side: int = 8, seed: int = 0, scale: float = 10.0) -> LinearProblem:
        g = torch.Generator().manual_seed(seed)
        dim = side * side
        model = LinearModel(dim, num_classes)
        with torch.no_grad():
            model.linear.weight.copy_(scale * torch.randn(num_classes, dim, generator=g))
            model.linear.bias.copy_(-model.linear.weight.sum(1) * 0.5)
        model.eval()
        x = 0.4 + 0.2 * torch.rand(n, 1, side, side, generator=g)
        with torch.no_grad():
            y = model(x).argmax(1)
        return LinearProblem(model, x, y)

    return make
