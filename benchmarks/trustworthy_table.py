"""Print, for every shipped digits model, what the trustworthiness extras say next to the protocol.

Columns: clean / standard-protocol robust / PGD-CE / noise accuracy (%), the local-stability
metrics, the flags, and the time of the analysis against the protocol's. A record already in
``--records`` (``<records>/digits/<threat>/<id>.standard.json``, what ``robench evaluate-zoo``
writes) is read instead of evaluated again; new evaluations are written there.

    python benchmarks/trustworthy_table.py                      # both digits boards
    python benchmarks/trustworthy_table.py --threat-model Linf --n-examples 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.record import EvaluationResult
from benchmark.record import record_path
from benchmark.runner import evaluate

COLUMNS = ("model", "clean", "robust", "pgd-ce", "noise", "noise gap", "jacobian", "linearity", "lipschitz",
           "flags", "protocol s", "analysis s")


def _record(model_id: str, threat_model: str, records: Path, n_examples: int | None, device: str) -> EvaluationResult:
    path = record_path(records, "digits", threat_model, model_id, "standard")
    if path.exists() and n_examples is None:
        result = EvaluationResult.load(path)
        if result.metrics and result.curve:
            return result
    from robench.evaluation import resolve_model

    model, info = resolve_model(model_id, "digits", threat_model, device)
    out = records if n_examples is None else None
    return evaluate(model, "digits", threat_model, n_examples=n_examples, device=device, out=out, model_info=info,
                    progress=False)


def _row(model_id: str, r: EvaluationResult) -> list[str]:
    m = r.metrics
    protocol_s = sum(s.time_s for s in r.stages)
    return [
        model_id, f"{100 * r.clean_accuracy:.1f}", f"{100 * r.robust_accuracy:.1f}",
        f"{100 * r.baselines.get('pgd-ce', float('nan')):.1f}", f"{100 * m.get('noise_accuracy', float('nan')):.1f}",
        f"{100 * m.get('noise_gap', float('nan')):.1f}", f"{m.get('jacobian_norm', float('nan')):.2f}",
        f"{m.get('local_linearity', float('nan')):.3f}", f"{m.get('lipschitz_lower_bound', float('nan')):.2f}",
        ", ".join(r.flags) or "-", f"{protocol_s:.0f}", f"{r.timings.get('analysis_s', float('nan')):.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threat-model", choices=("Linf", "L2"), default=None, help="one board (default: both)")
    parser.add_argument("--records", default="results", help="folder of result records (default: results/)")
    parser.add_argument("--n-examples", type=int, default=None, help="fewer test points (records are then not saved)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from model_zoo import list_models

    for tm in ([args.threat_model] if args.threat_model else ["Linf", "L2"]):
        ids = list_models(dataset="digits", threat_model=tm)
        print(f"\n### digits {tm}\n")
        if not ids:
            print("(no model shipped on this board yet)")
            continue
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for model_id in ids:
            result = _record(model_id, tm, Path(args.records), args.n_examples, args.device)
            print("| " + " | ".join(_row(model_id, result)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
