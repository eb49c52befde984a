"""Operations launched and host synchronisations of robench's standard protocol against torchattacks'.

    python benchmarks/launch_counts.py [--n-examples 100] [--models undefended,pgd] [--gpu-row-cap]

Where a model is small for its device (the digits CNNs on a GPU; any model on few points), an
attack's wall time is set less by the arithmetic than by how many operations it launches (on a
GPU each is a kernel launch of a few microseconds, whatever its size) and how often it waits for
the device to hand a value back to Python (a host synchronisation stalls the launch queue). Both
counts are properties of the code, not of the device, so they can be measured on a CPU.

On the digits CNNs of benchmarks/digits_models.py, Linf eps 0.1, the first ``--n-examples`` test
points, it runs robench's standard protocol and torchattacks' four standard attacks with the
standard settings (benchmarks/compare_torchattacks.py: 100 iterations, 9 targets, 5,000 queries)
under a ``TorchDispatchMode`` that counts, per attack:

* ops: every ATen operation that computes something (view and aliasing operations, which launch
  nothing, are left out), the model's own included;
* forward ops: the share of those made inside the model's forward passes; backward ops: those made
  by autograd's backward passes (the model's and the loss's);
* syncs: operations that read a tensor's value back to the host (``.item()``, ``bool(t)``,
  ``nonzero``, ...).

``--gpu-row-cap`` gives APGD-T and FAB-T the cap on stacked rows they take on a GPU
(``_common.GPU_AUTO_ELEMENTS``: 4,096 digits) instead of the CPU's (512), so that the counts are
those a GPU run makes.
It prints both sides' counts per attack and in total, and their ratio. The ops ratio is what the
wall-time ratio tends to on a device where every launch costs the same; it is not a GPU timing.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmark.attacks._common as attack_common  # noqa: E402
from benchmark import load_dataset  # noqa: E402
from benchmarks.compare_torchattacks import torchattacks_paper_settings  # noqa: E402
from benchmarks.digits_models import load  # noqa: E402
from benchmarks.protocol_speed import CallLog, protocol_run  # noqa: E402

#: operations that hand a tensor's value to the host (and wait for the device to get there)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "item", "equal", "allclose", "unique", "_unique2",
            "masked_select", "repeat_interleave"}


class OpCounter(TorchDispatchMode):
    """Counts computing ops and host syncs under the name of the attack being run: ``stages.stage``
    (``stages`` is robench's CallLog, or any object whose ``stage`` the caller sets), else "other"."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: Any = SimpleNamespace(stage=None)
        self.in_model = False
        self.ops: Counter[str] = Counter()
        self.forward_ops: Counter[str] = Counter()
        self.backward_ops: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        if not func.is_view and name not in ("detach", "alias", "lift_fresh"):
            label = self.stages.stage or "other"
            self.ops[label] += 1
            if self.in_model:
                self.forward_ops[label] += 1
            elif torch._C._current_autograd_node() is not None:
                self.backward_ops[label] += 1
            if name in SYNC_OPS:
                self.syncs[label] += 1
        return func(*args, **(kwargs or {}))


class CountedModel(nn.Module):
    """Marks the ops made inside the model's forward."""

    def __init__(self, model: nn.Module, counter: OpCounter) -> None:
        super().__init__()
        self.model, self.counter = model, counter

    def forward(self, x: Tensor) -> Tensor:
        self.counter.in_model = True
        try:
            return self.model(x)
        finally:
            self.counter.in_model = False


def _staged(stages: Any, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with ``stages.stage`` set to ``name`` while it runs (as protocol_speed's _Tagged does for robench)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        stages.stage = name
        try:
            return fn(*args, **kwargs)
        finally:
            stages.stage = None
    return call


def count_robench(model: nn.Module, x: Tensor, y: Tensor) -> tuple[OpCounter, Tensor]:
    counter = OpCounter()
    log = CallLog(CountedModel(model, counter))
    counter.stages = log  # the protocol run names each attack's stage in the log
    with counter:
        result, _ = protocol_run(model, x, y, batch_size=len(x), device=str(x.device), log=log)
    return counter, torch.tensor([p.robust for p in result.points])


def count_torchattacks(model: nn.Module, x: Tensor, y: Tensor) -> tuple[OpCounter, Tensor]:
    counter = OpCounter()
    wrapped = CountedModel(model, counter).eval()
    multi = torchattacks_paper_settings(wrapped)
    for part in multi.attacks:
        part.forward = _staged(counter.stages, part.attack, part.forward)
    with counter:
        x_adv = multi(x, y)
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    return counter, robust


def report(name: str, n: int) -> dict[str, Any]:
    model, source = load(name)
    x, y = load_dataset("digits", "test", n_examples=n)
    ours, ours_robust = count_robench(model, x, y)
    theirs, their_robust = count_torchattacks(model, x, y)
    print(f"\n== {name}: {source}; {n} points, Linf eps 0.1")
    print(f"   robust accuracy: robench {ours_robust.float().mean():.1%}, torchattacks {their_robust.float().mean():.1%}")
    print(f"   {'':<24}{'ops':>10}{'forward':>10}{'backward':>10}{'own':>10}{'syncs':>8}")

    def row(label: str, ops: int, fwd: int, bwd: int, syncs: int) -> None:
        print(f"   {label:<24}{ops:10d}{fwd:10d}{bwd:10d}{ops - fwd - bwd:10d}{syncs:8d}")

    totals = {}
    for side, c in (("robench", ours), ("torchattacks", theirs)):
        for label in sorted(c.ops, key=lambda k: -c.ops[k]):
            row(f"{side} {label}", c.ops[label], c.forward_ops[label], c.backward_ops[label], c.syncs[label])
        totals[side] = tuple(sum(part.values()) for part in (c.ops, c.forward_ops, c.backward_ops, c.syncs))
    for side, counts in totals.items():
        row(f"{side} total", *counts)
    (o_ops, _, _, o_syncs), (t_ops, _, _, t_syncs) = totals["robench"], totals["torchattacks"]
    print(f"   robench / torchattacks: ops {o_ops / t_ops:.2f}, syncs {o_syncs / max(t_syncs, 1):.2f}")
    return {"robench": totals["robench"], "torchattacks": totals["torchattacks"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-examples", type=int, default=100)
    parser.add_argument("--models", default="undefended,pgd", help="comma-separated: undefended, pgd")
    parser.add_argument("--gpu-row-cap", action="store_true", help="stack targets up to the GPU's row cap")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.gpu_row_cap:
        attack_common.CPU_AUTO_ELEMENTS = attack_common.GPU_AUTO_ELEMENTS
    print(f"row cap of stacked targets: {attack_common.CPU_AUTO_ELEMENTS // 64} digits "
          f"(the {'GPU' if args.gpu_row_cap else 'CPU'}'s)")
    for name in args.models.split(","):
        report(name, args.n_examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
