"""``robench leaderboard build | show | import | export``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "collect", "format_board"]


def collect(results: str | Path, submissions: str | Path | None) -> tuple[Any, list[str]]:
    """Aggregate the zoo's cards, the records and imported entries under ``results`` and all external
    evaluations; return the aggregation and the files that could not be read."""
    from model_zoo.registry import Registry

    from .aggregate import aggregate
    from .claims import verify_claims
    from .sources import load_results, load_submitted_external

    registry = Registry(submissions) if submissions is not None else Registry()
    loaded = load_results(results)
    submitted_external, external_problems = load_submitted_external(registry.submissions_dir)
    verified, unverified = verify_claims(submitted_external, registry)  # only checked claims rank
    aggregation = aggregate([*registry.cards(), *loaded.listed], loaded.records, [*verified, *loaded.external])
    kept = [f"kept, no board yet: {path}" for path in loaded.kept]
    unread = [f"not read: {line}" for line in loaded.problems + external_problems]
    return aggregation, unread + unverified + loaded.import_notes + kept


def _report(problems: list[str]) -> None:
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)


def _cmd_build(args: argparse.Namespace) -> int:
    from .site import build_site

    try:
        aggregation, problems = collect(args.results, args.submissions)
    except (FileNotFoundError, ValueError) as exc:
        print(f"robench leaderboard build: error: {exc}", file=sys.stderr)
        return 2
    site = build_site(aggregation, args.out, problems)
    _report(problems)  # aggregation warnings are logged by aggregate()
    ranked = sum(len(b.table) for b in aggregation.boards.values())
    print(f"{len(aggregation.boards)} boards, {ranked} ranked models, {len(site.pages)} pages; "
          f"open {Path(args.out) / 'index.html'}")
    return 0


def format_board(board: Any, top: int | None = None) -> str:
    """One board as a plain-text table: rank, model, clean and robust accuracy, best known, flags."""
    table = board.table if top is None else board.table.head(top)
    header = ("rank", "model", "clean %", "corruptions %" if board.is_corruptions else "robust %", "best known %",
              "points", "flags")
    rows = [(str(r["rank"]), str(r["model_id"]), f"{100 * r['clean_accuracy']:.2f}",
             f"{100 * r['robust_accuracy']:.2f}" if r["robust_accuracy"] == r["robust_accuracy"] else "-",
             f"{100 * r['best_known_robust_accuracy']:.2f}", str(r["n_examples"]), str(r["flags"] or ""))
            for _, r in table.iterrows()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{board.name.replace('_', ' ')} ({board.budget_text}): {len(board.table)} model(s)"]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _cmd_show(args: argparse.Namespace) -> int:
    aggregation, problems = collect(args.results, args.submissions)
    _report(problems)
    boards = [b for (dataset, tm), b in aggregation.boards.items()
              if len(b.table) and args.dataset in (None, dataset) and args.threat_model in (None, tm)]
    if not boards:
        print("no board with results matches; evaluate a model first (make run)", file=sys.stderr)
        return 1
    print("\n\n".join(format_board(b, args.top) for b in boards))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .interchange import import_dir

    try:
        report = import_dir(args.dir, args.out)
    except FileNotFoundError as exc:
        print(f"robench leaderboard import: error: {exc}", file=sys.stderr)
        return 2
    for line in report.problems:
        print(f"not imported: {line}", file=sys.stderr)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"imported {len(report.imported)} model(s) into {args.out}; {len(report.kept)} kept as they are "
          f"(no board yet); {len(report.problems)} file(s) not imported; {len(report.warnings)} warning(s)")
    return 1 if report.problems else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .interchange import export_dir

    try:
        aggregation, problems = collect(args.results, args.submissions)
    except (FileNotFoundError, ValueError) as exc:
        print(f"robench leaderboard export: error: {exc}", file=sys.stderr)
        return 2
    _report(problems)
    written = export_dir(aggregation, args.out, kept_from=args.results)
    models = sum(path.suffix == ".json" for path in written)
    tables = f" and {len(written) - models} kept table(s)" if len(written) > models else ""
    print(f"exported {models} model(s){tables} to {args.out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``leaderboard`` with its subcommands ``build``, ``import`` and ``export``."""
    board = subparsers.add_parser("leaderboard", help="aggregate results into CSV tables and the static site")
    sub = board.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="write the CSV tables and the static site")
    build.add_argument("--results", default="results", help="folder of result records, searched recursively (default: results/)")
    build.add_argument("--out", default="site", help="site folder (default: site/)")
    build.add_argument("--submissions", default=None, help="submissions folder (default: the repository's submissions/)")
    build.set_defaults(func=_cmd_build)

    show = sub.add_parser("show", help="print the boards (or one) in the terminal, best first")
    show.add_argument("--dataset", default=None, help="only this dataset's boards")
    show.add_argument("--threat-model", default=None, help="only this threat model's boards")
    show.add_argument("--top", type=int, default=None, metavar="N", help="only the first N rows of each board")
    show.add_argument("--results", default="results", help="folder of result records (default: results/)")
    show.add_argument("--submissions", default=None, help="submissions folder (default: the repository's submissions/)")
    show.set_defaults(func=_cmd_show)

    imp = sub.add_parser("import", help="import a folder in the de facto format (<dataset>/<threat_model>/<ModelID>.json)")
    imp.add_argument("dir", help="folder to import")
    imp.add_argument("--out", default="results/imported", help="where the records go (default: results/imported/)")
    imp.set_defaults(func=_cmd_import)

    exp = sub.add_parser("export", help="write the boards in the de facto format")
    exp.add_argument("--results", default="results", help="folder of result records (default: results/)")
    exp.add_argument("--submissions", default=None, help="submissions folder (default: the repository's submissions/)")
    exp.add_argument("--out", required=True, help="output folder")
    exp.set_defaults(func=_cmd_export)
