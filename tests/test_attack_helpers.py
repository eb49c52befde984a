"""The attacks' shared helpers: the loss-and-gradient pass with Expectation over Transformation."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from benchmark.attacks._common import kth_class, loss_and_grad
from benchmark.attacks.losses import cross_entropy, targeted_margin


class Counting(nn.Module):
    """A fixed linear map that counts its forward passes; ``noise`` adds seeded Gaussian noise to the logits."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(64, 10, generator=g, dtype=torch.float64))
        self.noise, self.calls = noise, 0
        self.draws = torch.Generator().manual_seed(1)

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        z = x.flatten(1) @ self.weight
        if self.noise:
            z = z + self.noise * torch.randn(z.shape, generator=self.draws, dtype=z.dtype)
        return z


def _inputs() -> tuple[Tensor, Tensor]:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return x, torch.tensor([0, 1, 2, 3, 4, 5])


def test_one_pass_without_eot():
    x, y = _inputs()
    model = Counting()
    loss, grad, logits = loss_and_grad(model, x, y, cross_entropy)
    assert model.calls == 1
    xr = x.clone().requires_grad_(True)
    expected = cross_entropy(model(xr), y)
    assert torch.allclose(loss, expected.detach())
    assert torch.allclose(grad, torch.autograd.grad(expected.sum(), xr)[0])
    assert torch.allclose(logits, model(x).detach())


def test_eot_averages_as_many_passes_as_asked():
    """A deterministic model: the average of k equal passes is one pass; k passes are made."""
    x, y = _inputs()
    target = kth_class(Counting()(x), 2)
    for k in (2, 3):
        one, model = Counting(), Counting()
        ref = loss_and_grad(one, x, y, targeted_margin, target)
        avg = loss_and_grad(model, x, y, targeted_margin, target, eot_iter=k)
        assert model.calls == k
        for a, b in zip(avg, ref):
            assert torch.allclose(a, b, rtol=1e-12)


def test_eot_is_the_mean_over_the_draws():
    x, y = _inputs()
    noisy = Counting(noise=1.0)
    loss, grad, logits = loss_and_grad(noisy, x, y, cross_entropy, eot_iter=4)
    replay = Counting(noise=1.0)  # the same stream of draws, pass by pass
    parts = [loss_and_grad(replay, x, y, cross_entropy) for _ in range(4)]
    assert torch.allclose(loss, sum(p[0] for p in parts) / 4)
    assert torch.allclose(grad, sum(p[1] for p in parts) / 4)
    assert torch.allclose(logits, sum(p[2] for p in parts) / 4)
