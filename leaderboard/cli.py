"""``robench leaderboard build | import | export``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "collect"]


def collect(results: str | Path, submissions: str | Path | None) -> tuple[Any, list[str]]:
    """Aggregate the zoo's cards, the records and imported entries under ``results`` and all external
    evaluations; return the aggregation and the files that could not be read."""
    from model_zoo.registry import Registry

    from .aggregate import aggregate
    from .sources import load_results, load_submitted_external

    registry = Registry(submissions) if submissions is not None else Registry()
    loaded = load_results(results)
    submitted_external, external_problems = load_submitted_external(registry.submissions_dir)
    aggregation = aggregate([*registry.cards(), *loaded.listed], loaded.records, [*submitted_external, *loaded.external])
    return aggregation, loaded.problems + external_problems


def _report(problems: list[str], warnings: list[str]) -> None:
    for line in problems:
        print(f"warning: not read: {line}", file=sys.stderr)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)


def _cmd_build(args: argparse.Namespace) -> int:
    from .site import build_site

    try:
        aggregation, problems = collect(args.results, args.submissions)
    except (FileNotFoundError, ValueError) as exc:
        print(f"robench leaderboard build: error: {exc}", file=sys.stderr)
        return 2
    site = build_site(aggregation, args.out, problems)
    _report(problems, [])  # aggregation warnings are logged by aggregate()
    ranked = sum(len(b.table) for b in aggregation.boards.values())
    print(f"{len(aggregation.boards)} boards, {ranked} ranked models, {len(site.pages)} pages; "
          f"open {Path(args.out) / 'index.html'}")
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
    print(f"imported {len(report.imported)} model(s) into {args.out}; {len(report.problems)} file(s) not imported")
    return 1 if report.problems else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .interchange import export_dir

    try:
        aggregation, problems = collect(args.results, args.submissions)
    except (FileNotFoundError, ValueError) as exc:
        print(f"robench leaderboard export: error: {exc}", file=sys.stderr)
        return 2
    _report(problems, [])
    written = export_dir(aggregation, args.out)
    print(f"exported {len(written)} model(s) to {args.out}")
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

    imp = sub.add_parser("import", help="import a folder in the de facto format (<dataset>/<threat_model>/<ModelID>.json)")
    imp.add_argument("dir", help="folder to import")
    imp.add_argument("--out", default="results/imported", help="where the records go (default: results/imported/)")
    imp.set_defaults(func=_cmd_import)

    exp = sub.add_parser("export", help="write the boards in the de facto format")
    exp.add_argument("--results", default="results", help="folder of result records (default: results/)")
    exp.add_argument("--submissions", default=None, help="submissions folder (default: the repository's submissions/)")
    exp.add_argument("--out", required=True, help="output folder")
    exp.set_defaults(func=_cmd_export)
