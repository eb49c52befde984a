"""``robench models``: the zoo as a table, and ``robench models show NAME`` for one card."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from benchmark.budgets import format_eps

from .cards import ModelCard
from .registry import DuplicateModelError, Registry, UnknownModelError, default_registry
from .submission_schema import SubmissionError

__all__ = ["register", "format_table", "describe_card"]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_table(cards: Sequence[ModelCard]) -> str:
    """A plain-text table: one row per card with its board, eps, architecture and reported numbers."""
    header = ("id", "dataset", "threat", "eps", "architecture", "clean %", "robust %", "extra data")
    rows = [
        (c.id, c.dataset, c.threat_model, format_eps(c.dataset, c.threat_model, c.eps), c.architecture.label,
         _percent(c.reported.clean_accuracy), _percent(c.reported.robust_accuracy), "yes" if c.additional_data else "no")
        for c in cards
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def describe_card(card: ModelCard) -> str:
    """Every field of a card, one per line (``ModelCard.rows``: the declaration's titles)."""
    rows = [*card.rows(), *([("File", card.source_file)] if card.source_file else [])]
    width = max(len(title) for title, _ in rows) + 1
    lines = [f"{card.id}  ({card.dataset} / {card.threat_model}, eps {format_eps(card.dataset, card.threat_model, card.eps)})"]
    lines += [f"  {title + ':':<{width}} {text}" for title, text in rows]
    return "\n".join(lines)


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(args.submissions) if args.submissions else default_registry()


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        cards = _registry(args).cards(args.dataset, args.threat_model, args.include, args.exclude)
    except (SubmissionError, DuplicateModelError, ValueError, FileNotFoundError) as exc:
        print(f"robench models: error: {exc}", file=sys.stderr)
        return 2
    if not cards:
        print("no models match")
        return 0
    print(format_table(cards))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        registry = _registry(args)
        if args.dataset is not None and args.threat_model is not None:
            cards = [registry.get_card(args.name, args.dataset, args.threat_model)]
        else:
            cards = [c for c in registry.cards(args.dataset, args.threat_model) if c.id == args.name]
            if not cards:  # let the board lookup produce the error with the closest names
                registry.get_card(args.name, args.dataset or "digits", args.threat_model or "Linf")
    except (SubmissionError, DuplicateModelError, UnknownModelError, ValueError, FileNotFoundError) as exc:
        print(f"robench models show: error: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(describe_card(c) for c in cards))
    return 0


def _board_arguments(p: argparse.ArgumentParser, default: object = None) -> None:
    p.add_argument("--dataset", default=default, help="only this dataset (digits, cifar10, cifar100, imagenet)")
    p.add_argument("--threat-model", default=default, help="only this threat model (Linf, L2)")
    p.add_argument("--submissions", default=default, help="a submissions folder (default: the repository's)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` (list) and ``models show NAME`` to the ``robench`` command."""
    models = subparsers.add_parser("models", help="list the model zoo, or show one model's card")
    _board_arguments(models)
    models.add_argument("--include", action="append", default=None, metavar="PATTERN",
                        help="only ids matching this fnmatch pattern (repeatable)")
    models.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                        help="leave out ids matching this fnmatch pattern (repeatable)")
    models.set_defaults(func=_cmd_list)
    actions = models.add_subparsers(dest="models_command", metavar="[show NAME]", title="one model")
    show = actions.add_parser("show", help="print a model's card")
    show.add_argument("name", help="the model id, e.g. Madry2018Towards")
    _board_arguments(show, default=argparse.SUPPRESS)  # keep values given before 'show'
    show.set_defaults(func=_cmd_show)
