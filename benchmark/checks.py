"""Checks for flawed evaluations (docs/trustworthy.md), run before attacking.

Each check returns a :class:`CheckResult`; one that fires becomes a flag on the result, and
``FLAG_EXPLANATIONS`` (declared in ``benchmark.flags``) holds the sentence shown on the site and in the CLI summary. The checks
never change the caller's global random state (a randomised model draws from a forked one).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks.losses import margin
from .flags import FLAG_EXPLANATIONS

__all__ = [
    "FLAG_EXPLANATIONS", "CheckResult", "run_checks", "black_box_check", "non_finite_check", "choose_version",
    "BLACK_BOX_THRESHOLD",
    "RANDOMNESS_PASSES", "RANDOMNESS_RTOL", "check_randomness", "check_softmax_output",
    "check_test_time_optimisation", "check_zero_gradients", "check_too_few_classes",
]

#: the field's rule of thumb: more than 0.2 points (percentage points) of robust accuracy
BLACK_BOX_THRESHOLD = 0.002
#: forward passes of the same batch compared by the randomness check
RANDOMNESS_PASSES = 4
#: logits differing by more than this times (1 + the largest |logit|) count as random; smaller
#: differences are the float noise of non-deterministic kernels, not a randomised model
RANDOMNESS_RTOL = 1e-5
#: tolerance on the row sums of the softmax check
SOFTMAX_ATOL = 1e-4


@dataclass
class CheckResult:
    name: str
    fired: bool
    details: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _forked_rng(device: torch.device) -> Iterator[None]:
    """Draws inside the block leave the global generators (CPU, and the CUDA device used) as they were."""
    devices = []  # the CPU generator is always forked
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        yield


def check_randomness(model: nn.Module, x: Tensor, passes: int = RANDOMNESS_PASSES) -> CheckResult:
    """Fires when ``passes`` forward passes of the same batch give different predictions, or logits
    that differ by more than RANDOMNESS_RTOL * (1 + max |logit|)."""
    if passes < 2:
        raise ValueError(f"the randomness check needs at least 2 passes, got {passes}")
    with _forked_rng(x.device), torch.no_grad():
        outputs = [model(x) for _ in range(passes)]
    first = outputs[0]
    diff = max(float((o - first).abs().max()) for o in outputs[1:])
    changes = sum(int((o.argmax(1) != first.argmax(1)).sum()) for o in outputs[1:])
    tolerance = RANDOMNESS_RTOL * (1.0 + float(first.abs().max()))
    return CheckResult("randomness", changes > 0 or diff > tolerance,
                       {"max_logit_difference": diff, "prediction_changes": changes, "passes": passes})


def check_softmax_output(outputs: Tensor) -> CheckResult:
    """Fires when every output is non-negative and every row sums to 1 (probabilities, not logits)."""
    sums = outputs.double().sum(dim=1)
    fired = bool((outputs >= 0).all()) and bool(((sums - 1).abs() <= SOFTMAX_ATOL).all())
    return CheckResult("softmax_output", fired, {"min_output": float(outputs.min()),
                                                 "max_row_sum_error": float((sums - 1).abs().max())})


class _AutogradCounter:
    """Counts autograd calls made while active, two independent ways.

    1. Saved-tensor hooks: a backward pass unpacks the tensors its graph saved, however it was
       started (``Tensor.backward``, ``torch.autograd.grad`` bound under any name, an optimiser
       step's ``loss.backward()``); a forward pass never does. A graph built while the caller
       holds ``no_grad`` also shows that the model switched gradients back on.
    2. The public entry points ``Tensor.backward``, ``torch.autograd.backward`` and
       ``torch.autograd.grad`` replaced by counting wrappers (this also sees ``torch.func``
       transforms, which refuse to run under saved-tensor hooks).
    """

    def __init__(self, use_hooks: bool) -> None:
        self.use_hooks = use_hooks
        self.packed = self.unpacked = self.calls = self._depth = 0

    def _pack(self, t: Tensor) -> Tensor:
        self.packed += 1
        return t

    def _unpack(self, t: Tensor) -> Tensor:
        self.unpacked += 1
        return t

    def _counting(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # Tensor.backward calls torch.autograd.backward: count the outermost call only
            self.calls += self._depth == 0
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1

        return wrapper

    @contextlib.contextmanager
    def active(self) -> Iterator["_AutogradCounter"]:
        saved = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)
        torch.Tensor.backward = self._counting(saved[0])  # type: ignore[method-assign]
        torch.autograd.backward = self._counting(saved[1])
        torch.autograd.grad = self._counting(saved[2])
        try:
            if self.use_hooks:
                with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                    yield self
            else:
                yield self
        finally:
            torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad = saved  # type: ignore[method-assign]


def check_test_time_optimisation(model: nn.Module, x: Tensor) -> CheckResult:
    """Fires when the forward pass runs autograd, probed under ``no_grad`` (as predictions are
    made) and under ``enable_grad`` with an input that requires grad (as attacks run it)."""
    details: dict[str, Any] = {}
    fired = False
    with _forked_rng(x.device):
        for mode in ("no_grad", "enable_grad"):
            for use_hooks in (True, False):
                counter = _AutogradCounter(use_hooks)
                xin = x.detach().clone().requires_grad_(mode == "enable_grad")
                grad_mode = torch.no_grad() if mode == "no_grad" else torch.enable_grad()
                try:
                    with counter.active(), grad_mode:
                        model(xin)
                except RuntimeError as exc:
                    # torch.func transforms refuse saved-tensor hooks; the plain probe still counts them
                    if not use_hooks:
                        raise
                    details[f"{mode}_hook_probe_error"] = str(exc).splitlines()[0][:200]
                    continue
                if use_hooks:
                    details[f"{mode}_backward_unpacks"] = counter.unpacked
                    if mode == "no_grad":
                        details["no_grad_graph_tensors"] = counter.packed
                    fired |= counter.unpacked > 0
                else:
                    details[f"{mode}_autograd_calls"] = counter.calls
                fired |= counter.calls > 0
    return CheckResult("test_time_optimisation", fired, details)


def _input_gradient(model: nn.Module, x: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """d sum(loss_fn(model(x))) / dx; zeros where the output does not depend on x through autograd."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(xr)).sum()
        if not loss.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, xr, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def check_zero_gradients(model: nn.Module, x: Tensor, y: Tensor) -> CheckResult:
    """Fires when some point's input gradient of the cross-entropy (blind by saturation) or of the
    logit margin z_y - max_{k != y} z_k (blind by a piecewise-constant model, e.g. quantisation)
    is exactly zero, or not finite."""
    details: dict[str, Any] = {}
    fired = False
    with _forked_rng(x.device):
        for name, loss_fn in (("cross_entropy", lambda z: F.cross_entropy(z, y, reduction="none")),
                              ("margin", lambda z: margin(z, y))):
            grad = _input_gradient(model, x, loss_fn).reshape(len(x), -1)
            zero = (grad == 0).all(1)
            bad = ~torch.isfinite(grad).all(1)
            details[f"fraction_zero_{name}"] = float(zero.float().mean())
            details[f"fraction_nonfinite_{name}"] = float(bad.float().mean())
            fired |= bool((zero | bad).any())
    return CheckResult("zero_gradients", fired, details)


def check_too_few_classes(num_classes: int, needed: int) -> CheckResult:
    """Fires when the model has fewer classes than the protocol's attacks need with all their
    settings (``benchmark.protocol.classes_needed``): some are then skipped or run with fewer targets."""
    return CheckResult("too_few_classes", num_classes < needed, {"num_classes": num_classes, "needed": needed})


def run_checks(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, classes_needed: int = 10) -> list[CheckResult]:
    """Run the pre-attack checks on a small batch (a few dozen points are enough).

    ``classes_needed`` is what the protocol version's attacks need (``benchmark.protocol.classes_needed``;
    10 for the standard version). The model must be in the mode it is evaluated in (eval).
    """
    if len(x) == 0 or y.shape != (len(x),):
        raise ValueError(f"the checks need a non-empty batch with one label per input, got {tuple(x.shape)} and {tuple(y.shape)}")
    with _forked_rng(x.device), torch.no_grad():
        outputs = model(x)
    return [
        check_randomness(model, x),
        check_softmax_output(outputs),
        check_test_time_optimisation(model, x),
        check_zero_gradients(model, x, y),
        check_too_few_classes(num_classes, classes_needed),
    ]


def black_box_check(broken_by: Sequence[str | None], n: int, black_box: Collection[str] = ("square",)) -> CheckResult:
    """Fires when the black-box attacks broke more than BLACK_BOX_THRESHOLD of the ``n`` points.

    ``broken_by`` holds, per point, the first attack that broke it; ``black_box`` the names of the
    protocol's entries whose attack is black-box (the runner finds them by the attack class's
    ``black_box``). In the protocol they run after the gradient attacks, so the points they are
    named for are points that all of those missed.
    """
    if n < len(broken_by):
        raise ValueError(f"n ({n}) is smaller than the number of points given ({len(broken_by)})")
    names = set(black_box)
    count = sum(1 for b in broken_by if b in names)
    share = count / max(n, 1)
    return CheckResult("black_box_beats_white_box", share > BLACK_BOX_THRESHOLD,
                       {"points_only_black_box": count, "share_only_black_box": share, "threshold": BLACK_BOX_THRESHOLD})


def non_finite_check(not_evaluable: Sequence[bool]) -> CheckResult:
    """Fires when the model returned NaN or infinite logits at any point an attack left, which is then
    counted as not robust (``PointResult.not_evaluable``): a model that breaks down off the data is
    not robust there, and an all-NaN row must not pass for a prediction."""
    count = sum(1 for lost in not_evaluable if lost)
    return CheckResult("non_finite_logits", count > 0, {"points_not_evaluable": count})


def choose_version(
    model: nn.Module, dataset: str, device: str | torch.device | None = None, n: int = 32, data_dir: str | None = None,
) -> str:
    """The protocol version for ``--version auto``: 'rand' when the randomness check fires on the
    first ``n`` test points, else 'standard'."""
    from .data import load_dataset

    x, _ = load_dataset(dataset, "test", n_examples=n, data_dir=data_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.eval().to(dev)
    return "rand" if check_randomness(model, x.to(dev)).fired else "standard"
