"""digits-C on every model of the digits corruptions board: clean accuracy, mean corruption accuracy (the
board's number), the worst corruption, and the time of the evaluation (generation of digits-C timed apart).

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
    print("| model | clean % | mean corruption accuracy % | worst corruption (mean %) | seconds |")
    print("|---|---|---|---|---|")
    rows = []
    for name in list_models(dataset="digits", threat_model="corruptions"):
        model = load_model(name, dataset="digits", threat_model="corruptions")
        start = time.perf_counter()
        result = evaluate_corruptions(model, "digits")
        rows.append((result, name, time.perf_counter() - start))
    for result, name, seconds in sorted(rows, key=lambda row: -row[0].robust_accuracy):
        means = result.corruptions.per_corruption
        worst = min(means, key=means.get)
        print(f"| {name} | {100 * result.clean_accuracy:.2f} | {100 * result.robust_accuracy:.2f} | "
              f"{worst} ({100 * means[worst]:.1f}) | {seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
