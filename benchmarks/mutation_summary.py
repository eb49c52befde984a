"""The mutation-testing figures of the last ``make mutation`` run, per module.

    python benchmarks/mutation_summary.py [--survivors] [--mutants mutants]

Reads the results mutmut keeps beside its mutants (``mutants/<file>.meta``) and prints, per
mutated module, how many mutants the suite killed (a test failed, or the run timed out or
crashed), how many survived (every test passed), how many no test reached, and how many were not
run yet. ``--survivors`` also lists each survivor's name (``mutmut show NAME`` prints its diff).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

#: mutmut's statuses grouped into what they say about the tests
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


#: the columns of the table; any other status (suspicious, skipped, interrupted) counts as "other"
COLUMNS = ("killed", "survived", "no tests", "not checked", "other")


def verdict(exit_code: int | None) -> str:
    status = status_by_exit_code[exit_code]
    if status in DETECTED:
        return "killed"
    return status if status in COLUMNS else "other"


def read_results(mutants: Path) -> dict[str, dict[str, str]]:
    """``{module path: {mutant name: verdict}}`` for every mutated file."""
    results = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = str(meta.relative_to(mutants))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        results[module] = {name: verdict(code) for name, code in codes.items()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's working folder")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args(argv)
    results = read_results(args.mutants)
    if not results:
        print(f"no mutation results under {args.mutants}/: run `make mutation` first")
        return 1
    columns = COLUMNS
    print(f"| module | {' | '.join(columns)} | total | killed share |")
    print("|---" * (len(columns) + 3) + "|")
    overall: Counter[str] = Counter()
    for module, verdicts in results.items():
        counts = Counter(verdicts.values())
        overall.update(counts)
        total = sum(counts.values())
        share = counts["killed"] / total if total else 0.0
        print(f"| {module} | {' | '.join(str(counts[c]) for c in columns)} | {total} | {share:.1%} |")
    total = sum(overall.values())
    print(f"| all | {' | '.join(str(overall[c]) for c in columns)} | {total} | {overall['killed'] / total:.1%} |")
    if args.survivors:
        for module, verdicts in results.items():
            names = [name for name, v in verdicts.items() if v in ("survived", "no tests")]
            if names:
                print(f"\n{module}:")
                print("\n".join(f"  {name} ({verdicts[name]})" for name in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
