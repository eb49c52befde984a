"""What two digits evaluations record, as JSON, to compare a refactor's before and after byte for byte.

    python benchmarks/compare_records.py OUT.json

Evaluates LeCun1998Gradient (digits, Linf) and Madry2018Towards (digits, L2) on the first 100 test
points with the standard protocol and the analysis, one CPU thread, and writes their per-point
results, curves, baselines, metrics, flags, check details and stages (timings left out). Run it in
the old and the new checkout (``PYTHONPATH=<checkout> python benchmarks/compare_records.py out.json``)
and compare the two files with ``cmp``: a refactor that changes nothing gives identical bytes.
"""
from __future__ import annotations

import json
import sys

import torch

from benchmark import evaluate
from model_zoo import load_model

MODELS = [("LeCun1998Gradient", "Linf"), ("Madry2018Towards", "L2")]
KEPT = ("points", "curve", "baselines", "metrics", "flags", "check_details", "clean_accuracy", "robust_accuracy")


def main(out: str) -> None:
    torch.set_num_threads(1)
    records = {}
    for model_id, threat_model in MODELS:
        model = load_model(model_id, dataset="digits", threat_model=threat_model)
        record = evaluate(model, "digits", threat_model, n_examples=100, progress=False, device="cpu").to_dict()
        kept = {k: record[k] for k in KEPT}
        kept["stages"] = [{k: v for k, v in s.items() if "time" not in k} for s in record["stages"]]
        records[f"{model_id}/{threat_model}"] = kept
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(records, fh, indent=1, sort_keys=True)
    print(f"written {out}")


if __name__ == "__main__":
    main(sys.argv[1])
