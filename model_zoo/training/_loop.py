"""The deterministic training loop shared by every recipe.

Bit-reproducibility on CPU rests on four things, all handled here: the model's initial
weights come from ``torch.manual_seed(seed)`` inside a forked RNG state (the caller's global
RNG is left untouched), the minibatch order comes from a generator seeded from ``seed``,
every random draw of a recipe comes from generators the recipe receives (never the global
RNG), and the loop runs on one CPU thread with deterministic algorithms switched on (the
summation order of a parallel matrix product depends on the number of threads).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import platform
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from benchmark.seeding import seeded_generator

from ..architectures import build_architecture
from ..cards import Architecture

__all__ = ["Objective", "build_model", "fit", "accuracy", "deterministic_cpu", "cpu_fingerprint"]

#: ``objective(model, x, y, index) -> scalar loss``; ``index`` holds the batch's positions in the training set
Objective = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]

_OPTIMIZERS = ("adam", "sgd")


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """One CPU thread and deterministic algorithms for the duration of the block, then restored."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


def cpu_fingerprint() -> str:
    """What decides the last bits of CPU training besides the torch version: the architecture, the
    kernel family torch dispatches to, and (hashed) the CPU's feature flags, which pick the BLAS and
    convolution code paths. Machines with the same fingerprint and torch version are expected to train the same bytes.
    """
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features"))]
        flags = " ".join(sorted(set(lines[0].split(":", 1)[1].split()))) if lines else ""
    flags = flags or platform.processor()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{platform.machine()}/{torch.backends.cpu.get_cpu_capability()}/{digest}"


def build_model(architecture: str, kwargs: Mapping[str, Any], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised robench architecture (``model_zoo.architectures``) whose weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_architecture(Architecture(source="robench", name=architecture, kwargs=dict(kwargs)), num_classes)


def _optimizer(name: str, params: Any, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(_OPTIMIZERS)}")


def fit(
    model: nn.Module,
    objective: Objective,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Minimise ``objective`` over minibatches of (x, y) for ``epochs`` epochs; returns the model in eval mode.

    The learning rate follows a half-cosine from ``lr`` to 0 over all steps. Each epoch visits the
    points in an order drawn from a generator seeded from ``seed``; the last batch may be smaller.
    ``on_epoch(epoch, mean_loss)`` is called after each epoch (for progress reports).
    """
    if epochs < 0 or batch_size <= 0 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch_size > 0 and lr > 0; got {epochs}, {batch_size}, {lr}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as inputs, and at least one point; got {len(x)} inputs, {len(y)} labels")
    opt = _optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    order_gen = seeded_generator(seed, offset=0)  # training draws at offsets 0 (data order) and 1 (attacks)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=order_gen)
        loss_sum = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            model.train()
            loss = objective(model, x[index], y[index], index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(index)
        if on_epoch is not None:
            on_epoch(epoch, loss_sum / len(x))
    return model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Fraction of points classified correctly (no gradients, eval mode)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    return correct / len(x)
