"""Would a bfloat16 search make the protocol faster on this CPU at the same strength? (It would not.)

    python benchmarks/search_precision.py [--threat-model Linf] [--n-examples 200] [--models A,B] [--threads 1]

For each digits zoo model on the board, the standard protocol (``evaluate(..., analysis=False)``) runs
twice on the first ``--n-examples`` test points: as robench runs it (every pass in float32), and with
every attack's *search* (its forward and backward passes inside ``run``) under
``torch.autocast("cpu", torch.bfloat16)``, which on CPUs with AMX or AVX512-BF16 runs convolutions and
linear layers in bfloat16. The verdicts stay in float32 either way (``Attack.__call__`` checks each
returned point on the model itself), so no break is claimed that float32 does not confirm: the question
is only whether the cheaper gradients and losses find as many.

It prints, per model: robust accuracy and protocol seconds in each precision, and every point on which
the two disagree, with which attack broke it and the smallest adversarial norm found in each run (a
bfloat16 ``min_norm`` below eps on a point left robust is a break that bfloat16 claimed and float32
refused). Results: docs/scaling.md, "A bfloat16 search".
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark import evaluate  # noqa: E402
from benchmark.attacks import apgd, base, fab, pgd, square  # noqa: E402
from model_zoo import list_models, load_model  # noqa: E402


class BFloat16Search(nn.Module):
    """The wrapped model under CPU autocast to bfloat16, returning float32 logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


def _attack_classes() -> list[type[base.Attack]]:
    found = []
    for module in (apgd, fab, pgd, square):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, base.Attack) and "run" in vars(value):
                found.append(value)
    return found


@contextmanager
def bfloat16_search() -> Iterator[None]:
    """Every attack's ``run`` sees the model under bfloat16 autocast; ``__call__``'s verdict does not."""
    originals = {cls: cls.run for cls in _attack_classes()}

    def wrapped(run):
        def run_in_bfloat16(self, model, *args, **kwargs):
            return run(self, BFloat16Search(model), *args, **kwargs)
        return run_in_bfloat16

    try:
        for cls, run in originals.items():
            cls.run = wrapped(run)
        yield
    finally:
        for cls, run in originals.items():
            cls.run = run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threat-model", default="Linf", choices=("Linf", "L2"))
    parser.add_argument("--n-examples", type=int, default=200)
    parser.add_argument("--models", default=None, help="comma-separated zoo names (default: every model on the board)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else list_models(dataset="digits", threat_model=args.threat_model)
    print("| model | float32 | bfloat16 search | time ratio | points robust only in float32 / only in bfloat16 |")
    print("|---|---|---|---|---|")
    notes = []
    for name in names:
        model = load_model(name, dataset="digits", threat_model=args.threat_model)
        runs = {}
        for precision in ("float32", "bfloat16"):
            start = time.perf_counter()
            with bfloat16_search() if precision == "bfloat16" else nullcontext():
                result = evaluate(model, "digits", args.threat_model, n_examples=args.n_examples, progress=False,
                                  analysis=False)
            runs[precision] = (result, time.perf_counter() - start)
        (r32, t32), (r16, t16) = runs["float32"], runs["bfloat16"]
        robust32 = {p.index for p in r32.points if p.robust}
        robust16 = {p.index for p in r16.points if p.robust}
        print(f"| {name} | {100 * r32.robust_accuracy:.2f}% in {t32:.1f} s | {100 * r16.robust_accuracy:.2f}% in "
              f"{t16:.1f} s | {t16 / t32:.2f} | {len(robust32 - robust16)} / {len(robust16 - robust32)} |", flush=True)
        for i in sorted(robust32 ^ robust16):
            p32, p16 = r32.points[i], r16.points[i]
            notes.append(f"{name} point {i}: float32 {p32.broken_by or 'robust'} (min norm {p32.min_norm}), "
                         f"bfloat16 {p16.broken_by or 'robust'} (min norm {p16.min_norm})")
    print("\n".join(["", *notes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
