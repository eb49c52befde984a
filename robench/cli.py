"""The ``robench`` command. Each package adds its own subcommands through ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Sequence

from .evaluation import add_evaluation_arguments, evaluation_argv, run_evaluation
from .run import launch

__all__ = ["main", "build_parser"]

#: modules that add subcommands (each defines register(subparsers))
SUBCOMMAND_MODULES = (
    "model_zoo.cli",
    "model_zoo.training.cli",
    "leaderboard.cli",
    "model_zoo.submit_cli",
    "robench.doc_tables",
)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.distributed:
        return launch(args.distributed, evaluation_argv(args))
    return run_evaluation(args)


def _up_to_date(record: Any, card: Any, args: argparse.Namespace) -> bool:
    """The record was made from this checkpoint with these settings."""
    from benchmark.data import load_dataset

    n = args.n_examples or len(load_dataset(args.dataset, "test", data_dir=args.data_dir)[1])
    return (record.model.get("checkpoint_sha256") == card.checkpoint.sha256 and record.seed == args.seed
            and record.n_examples == n and abs(record.eps - card.eps) < 1e-12 and record.batch_size == args.batch_size)


def _cmd_evaluate_zoo(args: argparse.Namespace) -> int:
    """Evaluate every zoo model of a dataset's boards, skipping those whose record is up to date."""
    from benchmark.budgets import BOARDS
    from benchmark.record import EvaluationResult, record_path
    from model_zoo import get_card, list_models

    failures = 0
    boards = [tm for (ds, tm) in BOARDS if ds == args.dataset and args.threat_model in (None, tm)]
    for tm in boards:
        for name in list_models(dataset=args.dataset, threat_model=tm):
            card = get_card(name, dataset=args.dataset, threat_model=tm)
            path = record_path(args.out, args.dataset, tm, card.id, args.version)
            if not args.force and path.exists() and _up_to_date(EvaluationResult.load(path), card, args):
                print(f"== {card.id} ({args.dataset} {tm}): record up to date, skipped (--force re-evaluates)")
                continue
            print(f"== {card.id} ({args.dataset} {tm})", flush=True)
            ns = argparse.Namespace(**{**vars(args), "model": card.id, "threat_model": tm, "eps": None})
            failures += run_evaluation(ns) != 0
    return 1 if failures else 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where the usage is), exit code 2,
    like every other failure of the command: the full usage is one ``--help`` away."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows the usage)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="robench", description="Adversarial-robustness benchmark and leaderboard")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback, not one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ev = sub.add_parser("evaluate", help="evaluate a model with the protocol and write its result record")
    ev.add_argument("--model", required=True, help="a zoo name or module:function returning an nn.Module")
    add_evaluation_arguments(ev)
    ev.add_argument("--distributed", type=int, default=0, metavar="N",
                    help="launch N processes with torchrun on this node")
    ev.set_defaults(func=_cmd_evaluate)
    zoo = sub.add_parser("evaluate-zoo", help="evaluate every zoo model of a dataset (what `make run` does)")
    add_evaluation_arguments(zoo)
    zoo.add_argument("--force", action="store_true", help="re-evaluate models whose record is up to date")
    zoo.set_defaults(func=_cmd_evaluate_zoo, threat_model=None)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # the command line's error boundary: one line, exit code 2
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"robench {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
