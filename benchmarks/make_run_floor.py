"""The least time `make run`'s attacks can take on this machine: the model passes they need, at the model's speed.

    python benchmarks/make_run_floor.py --results results [--threads 1] [--batch 256] [--cores 2]

For every Linf / L2 record under ``--results`` (what `make run` wrote), the attacks' passes are read
from the record (each stage's ``forward_samples`` and ``backward_samples``), and the model's time per
sample is measured here, just after, on the same machine: a forward pass and a forward+backward pass
(the input's gradient) of a batch of ``--batch`` digits inputs, channels_last where the model has
2-d convolutions (as ``make run`` evaluates it), one thread by default (as each of `make run`'s
worker processes). Prints, per record: the attacks' wall time, the floor (samples x time per sample)
and their ratio (the share of the attacks' time spent in the model's passes), then the sum of the
floors divided by the cores: no scheduling of the same passes finishes `make run`'s attacks sooner.
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

from benchmark.record import EvaluationResult  # noqa: E402
from benchmark.runner import uses_channels_last  # noqa: E402
from model_zoo import load_model  # noqa: E402


def per_sample_seconds(model: torch.nn.Module, batch: int, repeats: int = 20) -> tuple[float, float]:
    """(forward, forward+backward) wall seconds per sample at this batch size, the best of ``repeats``.
    (Not protocol_speed.CostTable: that one gives CPU seconds, a median, to compare with CPU-timed attacks;
    the records' stage times are wall seconds, and the floor is the fastest the passes go. Tried: its
    figures scattered from 71 to 110 µs per forward+backward for the same DigitsCNN, above the records'.)"""
    channels_last = uses_channels_last(model, None)  # what make run decides: on for 2-d convolutions
    x = torch.rand(batch, 1, 8, 8)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward, both = float("inf"), float("inf")
    for _ in range(repeats):
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            forward = min(forward, time.perf_counter() - start)
        xg = x.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.autograd.grad(model(xg).sum(), xg)
        both = min(both, time.perf_counter() - start)
    return forward / batch, both / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = sorted(p for tm in ("Linf", "L2") for p in (Path(args.results) / "digits" / tm).glob("*.standard.json"))
    if not records:
        print(f"no digits Linf/L2 records under {args.results}: run `make run` first", file=sys.stderr)
        return 2
    costs: dict[tuple[str, str], tuple[float, float]] = {}
    rows, total_attacks, total_floor = [], 0.0, 0.0
    for path in records:
        record = EvaluationResult.load(path)
        model_id = record.model["id"]
        key = (model_id, record.threat_model)
        if key not in costs:
            costs[key] = per_sample_seconds(load_model(model_id, dataset="digits", threat_model=record.threat_model).eval(),
                                            args.batch)
        forward, both = costs[key]
        attacks = sum(stage.time_s for stage in record.stages)
        floor = sum(stage.forward_samples * forward + stage.backward_samples * both for stage in record.stages)
        total_attacks, total_floor = total_attacks + attacks, total_floor + floor
        rows.append((f"{model_id} ({record.threat_model})", attacks, floor, forward * 1e6, both * 1e6))
    print(f"batch {args.batch}, {args.threads} thread(s), records of {args.results}\n")
    print("| record | attacks s | model passes s (floor) | floor / attacks | forward µs/sample | forward+backward µs/sample |")
    print("|---|---|---|---|---|---|")
    for name, attacks, floor, f_us, fb_us in rows:
        print(f"| {name} | {attacks:.1f} | {floor:.1f} | {floor / attacks:.2f} | {f_us:.1f} | {fb_us:.1f} |")
    print(f"| all | {total_attacks:.1f} | {total_floor:.1f} | {total_floor / total_attacks:.2f} | | |")
    print(f"\nthe attacks' floor on {args.cores} cores: {total_floor / args.cores:.0f} s of wall time "
          f"(the attacks took {total_attacks / args.cores:.0f} s per core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
