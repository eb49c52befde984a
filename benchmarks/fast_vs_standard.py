"""The 'fast' version against 'standard' on every shipped zoo model: robust accuracy and wall time.

    python benchmarks/fast_vs_standard.py [--n-examples 500] [--threads 1] [--models ID,...]

For each zoo model of the digits boards, on the same points, one after the other in this process:
``evaluate(..., version="standard", analysis=False)`` and ``evaluate(..., version="fast",
analysis=False)`` (checks and protocol: the analysis is the same for both), channels_last as
``make run``. Prints a table: robust accuracy of each (points), the difference, wall times and
their ratio, and whether 'fast' fell back to 'standard' (a check fired). Goals (issue 15): fast at
most 0.2 points above standard (one point in 500) at at most 0.2 x its wall time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark import evaluate  # noqa: E402
from benchmark.budgets import BOARDS  # noqa: E402
from model_zoo import list_models, load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=None, help="only these ids (default: every digits zoo model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wanted = set(args.models.split(",")) if args.models else None
    rows = []
    for dataset, tm in BOARDS:
        if dataset != "digits":
            continue
        for model_id in list_models(dataset=dataset, threat_model=tm):
            if wanted and model_id not in wanted:
                continue
            out = {}
            for version in ("standard", "fast"):
                model = load_model(model_id, dataset=dataset, threat_model=tm)
                start = time.perf_counter()
                result = evaluate(model, dataset, tm, n_examples=args.n_examples, version=version, analysis=False,
                                  progress=False, device="cpu", channels_last=True)
                out[version] = (result, time.perf_counter() - start)
            (std, t_std), (fast, t_fast) = out["standard"], out["fast"]
            rows.append((f"{model_id} ({tm})", std.robust_accuracy, fast.robust_accuracy, t_std, t_fast,
                         "yes: " + fast.model["fast_fallback"] if fast.model.get("fast_fallback") else "no"))
            print(f"  {rows[-1][0]}: standard {100 * std.robust_accuracy:.2f}% in {t_std:.1f} s, "
                  f"fast {100 * fast.robust_accuracy:.2f}% in {t_fast:.1f} s", flush=True)
    print(f"\n{args.n_examples} points, {args.threads} thread(s), CPU, channels_last, checks + protocol (no analysis)\n")
    print("| model | standard robust | fast robust | fast - standard (points) | standard s | fast s | fast / standard | fell back |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r_std, r_fast, t_std, t_fast, fell in rows:
        print(f"| {name} | {100 * r_std:.2f}% | {100 * r_fast:.2f}% | {100 * (r_fast - r_std):+.2f} | {t_std:.1f} | "
              f"{t_fast:.1f} | {t_fast / t_std:.2f} | {fell} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
