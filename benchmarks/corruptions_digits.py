"""digits-C on every shipped zoo model: clean accuracy, mean corruption accuracy (the board's number to
be), the worst corruption, and the time of the evaluation (generation of digits-C timed apart).

    python benchmarks/corruptions_digits.py [--threads 1]
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

from benchmark.budgets import BOARDS  # noqa: E402
from benchmark.corruption_eval import evaluate_corruptions  # noqa: E402
from benchmark.corruptions import digits_c  # noqa: E402
from model_zoo import list_models, load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    digits_c()
    print(f"digits-C generated in {time.perf_counter() - start:.1f} s (75 sets of 500 images)\n")
    print("| model (card's threat model) | clean % | mean corruption accuracy % | worst corruption (mean %) | seconds |")
    print("|---|---|---|---|---|")
    for dataset, tm in BOARDS:
        if dataset != "digits":
            continue
        for name in list_models(dataset=dataset, threat_model=tm):
            model = load_model(name, dataset=dataset, threat_model=tm)
            start = time.perf_counter()
            result = evaluate_corruptions(model, "digits")
            seconds = time.perf_counter() - start
            worst = min(result.per_corruption, key=result.per_corruption.get)
            print(f"| {name} ({tm}) | {100 * result.clean_accuracy:.2f} | {100 * result.mean_accuracy:.2f} | "
                  f"{worst} ({100 * result.per_corruption[worst]:.1f}) | {seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
