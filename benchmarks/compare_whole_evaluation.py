"""What a user runs, side by side: robench's whole ``evaluate()`` against the protocol's reference
implementation (pyautoattack, the packaged AutoAttack) and torchattacks' AutoAttack.

    python benchmarks/compare_whole_evaluation.py [--n-examples 200] [--threat-model Linf]
                                                  [--models LeCun1998Gradient,Madry2018Towards,Papernot2016Distillation]
                                                  [--threads 1] [--device cpu|cuda]

For each zoo model (by default an undefended, a PGD-trained and a gradient-masking one: defensive
distillation), on the first ``--n-examples`` digits test points at the board's eps, in this one
process, one after the other:

* robench ``evaluate(model, "digits", threat_model, n_examples=N)`` as a user calls it: the checks,
  the standard protocol and the analysis (PGD-CE baseline, curve, metrics), with its defaults (which
  run a convolutional model in the channels_last layout on a CPU, in its own layout on a GPU); and the
  same in the other layout (``--no-channels-last`` on a CPU: the model's own layout, as the references
  run it; ``--channels-last`` on a GPU);
* ``pyautoattack.AutoAttack(model, norm=..., eps=..., version="standard", seed=0)
  .run_standard_evaluation(x, y, batch_size=N)``: the reference implementation of the protocol,
  which runs the protocol only (no checks, no analysis);
* ``torchattacks.AutoAttack(model, norm=..., eps=..., version="standard", n_classes=10, seed=0)``
  as shipped (its APGD and FAB default to 10 iterations, not the paper's 100), and torchattacks'
  four attacks at the standard settings (a ``MultiAttack`` of APGD-CE, APGD-T with 9 targets, FAB
  multi-targeted with 9 targets, 100 iterations each, and Square with 5,000 queries).

It prints a table: robust accuracy and wall seconds of each, and robench's time over each
reference's. The aim (issue 15): at most 0.5 x each reference's time at an equal or lower robust
accuracy, on every model. Neither reference is used by robench itself.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark import evaluate, load_dataset  # noqa: E402
from benchmark.budgets import default_eps  # noqa: E402
from benchmark.runner import uses_channels_last  # noqa: E402
from model_zoo import list_models, load_model  # noqa: E402

MODELS = ("LeCun1998Gradient", "Madry2018Towards", "Papernot2016Distillation")


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run_robench(model: nn.Module, tm: str, n: int, device: str, channels_last: bool | None) -> tuple[float, float]:
    seconds, result = timed(lambda: evaluate(model, "digits", tm, n_examples=n, progress=False, device=device,
                                             channels_last=channels_last), device)
    return result.robust_accuracy, seconds


def run_reference(model: nn.Module, x: Tensor, y: Tensor, tm: str, eps: float, device: str) -> tuple[float, float]:
    from pyautoattack import AutoAttack

    attack = AutoAttack(model, norm=tm, eps=eps, version="standard", seed=0, device=device)
    with contextlib.redirect_stdout(io.StringIO()):
        seconds, (x_adv, _) = timed(lambda: attack.run_standard_evaluation(x, y, batch_size=len(x)), device)
    return accuracy(model, x_adv, y), seconds


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, tm: str, eps: float, device: str) -> tuple[float, float]:
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm=tm, eps=eps, version="standard", n_classes=10, seed=0)
    seconds, x_adv = timed(lambda: attack(x, y), device)
    return accuracy(model, x_adv, y), seconds


def run_torchattacks_standard(model: nn.Module, x: Tensor, y: Tensor, tm: str, eps: float,
                              device: str) -> tuple[float, float]:
    import torchattacks as ta

    attack = ta.MultiAttack([
        ta.APGD(model, norm=tm, eps=eps, steps=100, n_restarts=1, seed=0, loss="ce"),
        ta.APGDT(model, norm=tm, eps=eps, steps=100, n_restarts=1, seed=0, n_classes=10),
        ta.FAB(model, norm=tm, eps=eps, steps=100, n_restarts=1, seed=0, multi_targeted=True, n_classes=10),
        ta.Square(model, norm=tm, eps=eps, n_queries=5000, n_restarts=1, seed=0),
    ])
    seconds, x_adv = timed(lambda: attack(x, y), device)
    return accuracy(model, x_adv, y), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-examples", type=int, default=200)
    parser.add_argument("--threat-model", default="Linf", choices=("Linf", "L2"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tm, n, device = args.threat_model, args.n_examples, args.device
    eps = default_eps("digits", tm)
    x, y = load_dataset("digits", "test")
    x, y = x[:n].to(device), y[:n].to(device)
    rows = []
    # one-time costs (imports, the dataset, first kernel launches) out of every timed run
    evaluate(load_model(MODELS[0], dataset="digits", threat_model=tm, device=device), "digits", tm, n_examples=2,
             progress=False, device=device)
    print(f"digits {tm} eps {eps:g}, {n} points, {args.threads} thread(s), {device}", flush=True)
    on_board = set(list_models("digits", tm))
    # the other layout than evaluate()'s default for these (convolutional) models on this device
    other_channels_last = not uses_channels_last(load_model(MODELS[0], dataset="digits"), None, device)
    other = "robench --channels-last" if other_channels_last else "robench --no-channels-last"
    for name in args.models.split(","):
        if name not in on_board:  # e.g. Papernot2016Distillation, which is on the Linf board only
            print(f"  {name}: not on the digits {tm} board, skipped", flush=True)
            continue
        results = {}
        for label, run in (
            ("robench", lambda: run_robench(load_model(name, dataset="digits", threat_model=tm, device=device), tm, n, device, None)),
            (other, lambda: run_robench(load_model(name, dataset="digits", threat_model=tm, device=device), tm, n, device,
                                        other_channels_last)),
            ("pyautoattack", lambda: run_reference(load_model(name, dataset="digits", threat_model=tm, device=device), x, y, tm, eps, device)),
            ("torchattacks", lambda: run_torchattacks(load_model(name, dataset="digits", threat_model=tm, device=device), x, y, tm, eps, device)),
            ("torchattacks standard settings", lambda: run_torchattacks_standard(
                load_model(name, dataset="digits", threat_model=tm, device=device), x, y, tm, eps, device)),
        ):
            results[label] = run()
            print(f"  {name} {label}: robust {100 * results[label][0]:.2f}% in {results[label][1]:.1f} s", flush=True)
        rows.append((name, results))
    print(f"\n| model | robench | {other} | pyautoattack (reference) | torchattacks as shipped | "
          f"torchattacks standard settings | robench / reference | robench / torchattacks standard | "
          f"{other.removeprefix('robench ')} / reference |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        cell = {k: f"{100 * acc:.2f}% in {sec:.1f} s" for k, (acc, sec) in r.items()}
        ratio = lambda a, b: f"{r[a][1] / r[b][1]:.2f}"  # noqa: E731
        print(f"| {name} | {cell['robench']} | {cell[other]} | {cell['pyautoattack']} | "
              f"{cell['torchattacks']} | {cell['torchattacks standard settings']} | {ratio('robench', 'pyautoattack')} | "
              f"{ratio('robench', 'torchattacks standard settings')} | {ratio(other, 'pyautoattack')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
