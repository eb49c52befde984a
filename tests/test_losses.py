"""The attacks' losses on logits with known values."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.attacks import losses
from benchmark.attacks.losses import LOSSES, cross_entropy, dlr, margin, targeted_margin

# sorted logits z_p1..z_p5 = 5, 3, 2, 1, 0 (shuffled so that no rule can lean on the order)
LOGITS = torch.tensor([[2.0, 5.0, 0.0, 3.0, 1.0]])


@pytest.mark.parametrize("y,expected", [(1, -(5 - 3) / (5 - 2)), (3, -(3 - 5) / (5 - 2)), (2, -(0 - 5) / (5 - 2))])
def test_dlr_untargeted(y, expected):
    assert dlr(LOGITS, torch.tensor([y])).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("y,t,expected", [(1, 4, -(5 - 1) / (5 - (2 + 1) / 2)), (3, 1, -(3 - 5) / (5 - (2 + 1) / 2))])
def test_dlr_targeted(y, t, expected):
    assert dlr(LOGITS, torch.tensor([y]), torch.tensor([t])).item() == pytest.approx(expected, rel=1e-6)


def test_dlr_is_invariant_to_shift_and_scale_of_the_logits():
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y, t = torch.arange(6), (torch.arange(6) + 3) % 10
    for loss in (lambda l: dlr(l, y), lambda l: dlr(l, y, t)):
        torch.testing.assert_close(loss(7 * z - 2), loss(z), rtol=1e-5, atol=1e-6)


def test_margins_and_cross_entropy():
    y, t = torch.tensor([3]), torch.tensor([4])
    assert margin(LOGITS, y).item() == 3 - 5
    assert margin(LOGITS, torch.tensor([1])).item() == 5 - 3
    assert targeted_margin(LOGITS, y, t).item() == 3 - 1
    log_z = math.log(sum(math.exp(v) for v in (5, 3, 2, 1, 0)))
    assert cross_entropy(LOGITS, y).item() == pytest.approx(log_z - 3, rel=1e-6)
    assert cross_entropy(LOGITS, y, t).item() == pytest.approx(-(log_z - 1), rel=1e-6)


def test_losses_by_name_and_exports():
    assert LOSSES == {"ce": cross_entropy, "dlr": dlr}
    assert all(hasattr(losses, name) for name in losses.__all__)
