"""Checks for flawed evaluations (PROTOCOL.md section 3), run before attacking.

Each check that fires becomes a flag on the result. ``FLAG_EXPLANATIONS`` holds the
sentence shown on the site and in the CLI summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FLAG_EXPLANATIONS", "CheckResult", "run_checks", "black_box_check", "BLACK_BOX_THRESHOLD"]

FLAG_EXPLANATIONS: dict[str, str] = {
    "randomness": "The model's outputs change between forward passes of the same input: it is randomised, "
    "so gradients should be averaged over several samples (the 'rand' protocol version).",
    "softmax_output": "The model returns probabilities (non-negative, rows summing to 1) instead of logits; "
    "cross-entropy gradients can vanish, hiding adversarial examples.",
    "test_time_optimisation": "The forward pass itself runs autograd (an optimisation at test time); "
    "white-box gradients may not reflect the real decision function.",
    "zero_gradients": "Some points have an input gradient that is exactly zero (quantisation or saturation): "
    "gradient attacks are blind there.",
    "too_few_classes": "The model has too few classes for some attacks of the protocol (DLR needs 3, targeted DLR 4); "
    "those attacks were skipped or run with fewer targets.",
    "black_box_beats_white_box": "The black-box Square attack broke points that every gradient attack missed: "
    "a sign of gradient masking, so the robust accuracy of white-box attacks alone would be too high.",
}

#: the field's rule of thumb: more than 0.2 points of robust accuracy
BLACK_BOX_THRESHOLD = 0.002


@dataclass
class CheckResult:
    name: str
    fired: bool
    details: dict[str, Any] = field(default_factory=dict)


class _AutogradProbe:
    """Detects autograd being used inside a forward pass run under no_grad."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = torch.autograd.grad

    def __enter__(self) -> "_AutogradProbe":
        def counting_grad(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self._original(*args, **kwargs)

        torch.autograd.grad = counting_grad
        self._backward = torch.Tensor.backward

        def counting_backward(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self._backward(tensor, *args, **kwargs)

        torch.Tensor.backward = counting_backward
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.autograd.grad = self._original
        torch.Tensor.backward = self._backward


def run_checks(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, n_targets: int = 9) -> list[CheckResult]:
    """Run the pre-attack checks on a small batch (a few dozen points are enough)."""
    results = []
    with torch.no_grad():
        first = model(x)
        second = model(x)
    diff = (first - second).abs().max().item()
    results.append(CheckResult("randomness", diff > 0, {"max_logit_difference": diff,
                                                       "prediction_changes": int((first.argmax(1) != second.argmax(1)).sum())}))

    row_sums = first.sum(dim=1)
    is_softmax = bool((first >= 0).all()) and bool(torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4))
    results.append(CheckResult("softmax_output", is_softmax, {}))

    with _AutogradProbe() as probe, torch.no_grad():
        model(x)
    results.append(CheckResult("test_time_optimisation", probe.calls > 0, {"autograd_calls": probe.calls}))

    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    zero = (grad.reshape(len(x), -1).abs().amax(1) == 0)
    results.append(CheckResult("zero_gradients", bool(zero.any()), {"fraction_zero": zero.float().mean().item()}))

    few = num_classes < 4 or n_targets + 1 > num_classes
    results.append(CheckResult("too_few_classes", few, {"num_classes": num_classes}))
    return results


def black_box_check(broken_by: list[str | None], n: int, black_box: str = "square") -> CheckResult:
    """Square broke more than BLACK_BOX_THRESHOLD of the points that all gradient attacks missed."""
    share = sum(1 for b in broken_by if b == black_box) / max(n, 1)
    return CheckResult("black_box_beats_white_box", share > BLACK_BOX_THRESHOLD, {"share_only_black_box": share})


def choose_version(model: nn.Module, dataset: str, device: str | None = None, n: int = 32) -> str:
    """The protocol version for ``--version auto``: 'rand' for a randomised model, else 'standard'."""
    from .data import load_dataset

    x, y = load_dataset(dataset, "test", n_examples=n)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.eval().to(dev)
    with torch.no_grad():
        randomised = not torch.equal(model(x.to(dev)), model(x.to(dev)))
    return "rand" if randomised else "standard"
