"""Both sides of the truth on every shipped digits model: clean, attacked (the record's protocol), certified,
exact (or the interval and the number undecided), points the attacks missed, and the time of each step.

    python benchmarks/verification_table.py --results results [--time-limit 30] [--versions standard plus]
    python benchmarks/verification_table.py --results results --versions plus --evaluate --models Zhang2020Towards

Reads the Lp records of a results folder (``make run`` writes them, verified; with ``--evaluate`` the
missing ones are evaluated first). A record's own verification is shown as it is; records without one (or
all, with ``--again``) are verified here (``benchmark.verification``), without writing anything back. The
second table gives the exact verification's time per point against its binary variables (unstable ReLUs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.data import load_dataset  # noqa: E402
from benchmark.record import record_path  # noqa: E402
from benchmark.runner import evaluate  # noqa: E402
from benchmark.verification import verify_record  # noqa: E402
from leaderboard.sources import read_record  # noqa: E402
from model_zoo import get_card, list_models, load_model  # noqa: E402


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--versions", nargs="+", default=["standard"])
    parser.add_argument("--evaluate", action="store_true", help="evaluate models that have no record yet")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--again", action="store_true", help="verify even the records that hold a verification")
    parser.add_argument("--models", nargs="+", default=None, help="only these model ids")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x_all, y_all = load_dataset("digits", "test")
    print("| model | threat | version | clean % | attacked % | certified % | exact % (or interval) | undecided | "
          "missed | ReLUs | method | attacks s | verification s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    timing: list[tuple[int, float, str]] = []
    for threat in ("Linf", "L2"):
        for name in list_models(dataset="digits", threat_model=threat):
            if args.models is not None and name not in args.models:
                continue
            card = get_card(name, dataset="digits", threat_model=threat)
            model = load_model(name, dataset="digits", threat_model=threat)
            for version in args.versions:
                path = record_path(args.results, "digits", threat, card.id, version)
                if path.is_file():
                    record = read_record(path)
                elif args.evaluate:
                    record = evaluate(model, "digits", threat, version=version, analysis=False, progress=False,
                                      model_info={"id": card.id, "checkpoint_sha256": card.checkpoint.sha256})
                else:
                    print(f"| {name} | {threat} | {version} | no record at {path} (--evaluate) |||||||||||")
                    continue
                x, y = x_all[:record.n_examples], y_all[:record.n_examples]
                if record.verification is not None and not args.again:
                    v, seconds = record.verification, record.verification.time_s
                else:
                    start = time.perf_counter()
                    v = verify_record(model, record, x, y, time_limit=args.time_limit)
                    seconds = time.perf_counter() - start
                if v.status != "verified":
                    print(f"| {name} | {threat} | {version} | {_pct(record.clean_accuracy)} | {_pct(record.robust_accuracy)} | "
                          f"not verifiable: {v.reason} |||||||||")
                    continue
                exact = _pct(v.exact_accuracy) if v.exact_accuracy is not None else f"[{_pct(v.lower)}, {_pct(v.upper)}]"
                attacks = sum(s.time_s for s in record.stages)
                print(f"| {name} | {threat} | {version} | {_pct(record.clean_accuracy)} | {_pct(record.robust_accuracy)} | "
                      f"{_pct(v.certified_accuracy)} | {exact} | {v.undecided} | {len(v.missed)} | {v.num_relus} | "
                      f"{v.method} | {attacks:.1f} | {seconds:.1f} |", flush=True)
                timing += [(threat, b, t, s) for b, t, s in zip(v.binaries, v.point_times, v.statuses)
                           if s in ("exact_robust", "exact_broken", "undecided") and v.method != "ibp"]
    if timing:
        # Linf: the mixed-integer program (binaries); L2: the branch and bound (the ReLUs it may split)
        print("\n| threat (program) | unstable ReLUs | points | median s | max s | undecided |")
        print("|---|---|---|---|---|---|")
        edges = [0, 5, 10, 20, 40, 80, 160, 10 ** 9]
        for threat in sorted({row[0] for row in timing}, reverse=True):
            for low, high in zip(edges, edges[1:]):
                bucket = [(t, s) for tm, b, t, s in timing if tm == threat and low <= b < high]
                if bucket:
                    times = [t for t, _ in bucket]
                    program = "MILP" if threat == "Linf" else "branch and bound"
                    print(f"| {threat} ({program}) | {low}-{high - 1 if high < 10 ** 9 else '…'} | {len(bucket)} | "
                          f"{statistics.median(times):.3f} | {max(times):.3f} | {sum(s == 'undecided' for _, s in bucket)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
