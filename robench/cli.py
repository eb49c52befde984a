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
    from benchmark.budgets import same_eps
    from benchmark.data import load_dataset

    n = args.n_examples or len(load_dataset(args.dataset, "test", data_dir=args.data_dir)[1])
    if getattr(args, "verify", False) and record.verification is None and record.corruptions is None:
        return False  # verification asked for and not done yet
    seedless = record.corruptions is not None  # a corruptions evaluation draws no random number
    return (record.model.get("checkpoint_sha256") == card.checkpoint.sha256 and (seedless or record.seed == args.seed)
            and record.n_examples == n and same_eps(record.eps, card.eps) and record.batch_size == args.batch_size)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Verify an existing record: every rank under torchrun takes its share of the points, rank 0 writes."""
    from benchmark import distributed
    from benchmark.data import load_dataset
    from benchmark.journal import fingerprint_model
    from benchmark.record import record_path
    from benchmark.verification import attach, verify_record
    from leaderboard.sources import read_record

    from .evaluation import resolve_model

    distributed.init_from_env()
    status = 2
    try:
        model, info = resolve_model(args.model, args.dataset, args.threat_model)
        path = record_path(args.out, args.dataset, args.threat_model, str(info["id"]), args.version)
        if not path.is_file():
            print(f"robench verify: error: no record at {path}; run robench evaluate --model {args.model} "
                  f"--dataset {args.dataset} --threat-model {args.threat_model} --verify", file=sys.stderr)
            return 2
        record = read_record(path)
        if record.model.get("fingerprint") != fingerprint_model(model):
            print(f"robench verify: error: {path} was made from other weights than {args.model}'s; evaluate it again",
                  file=sys.stderr)
            return 2
        x, y = load_dataset(args.dataset, "test", n_examples=record.n_examples, data_dir=args.data_dir)
        details = verify_record(model, record, x, y, time_limit=args.time_limit, journal=path.with_suffix(".verify.journal"))
        if details is not None:
            attach(record, details).save(path)
            print(record.summary())
            print(f"record written to {path}")
        status = 0
        return status
    finally:
        distributed.finish(wait=status == 0)


def _evaluate_one(job: tuple[dict[str, Any], int]) -> tuple[int, str, float]:
    """One model of evaluate-zoo in a worker process: (exit status, what it printed, seconds)."""
    import contextlib
    import io
    import time

    import torch

    settings, threads = job
    torch.set_num_threads(threads)
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = run_evaluation(argparse.Namespace(**settings))
        except Exception as exc:  # reported with the model's name; the other models go on
            print(f"robench evaluate: error: {' '.join(str(exc).split())}")
            status = 2
    return status, out.getvalue(), time.perf_counter() - start


def _cmd_evaluate_zoo(args: argparse.Namespace) -> int:
    """Evaluate every zoo model of a dataset's boards, skipping those whose record is up to date; ``--jobs``
    models at a time, in worker processes that share the machine's cores, with one progress line."""
    import os
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from benchmark.budgets import BOARDS
    from benchmark.record import EvaluationResult, record_path
    from model_zoo import get_card, list_models

    boards = [tm for (ds, tm) in BOARDS if ds == args.dataset and args.threat_model in (None, tm)]
    jobs: list[tuple[str, dict[str, Any]]] = []
    for tm in boards:
        for name in list_models(dataset=args.dataset, threat_model=tm):
            card = get_card(name, dataset=args.dataset, threat_model=tm)
            path = record_path(args.out, args.dataset, tm, card.id, args.version)
            if not args.force and path.exists() and _up_to_date(EvaluationResult.load(path), card, args):
                print(f"== {card.id} ({args.dataset} {tm}): record up to date, skipped (--force re-evaluates)")
                continue
            settings = {**vars(args), "model": card.id, "threat_model": tm, "eps": None, "no_progress": True}
            jobs.append((f"{card.id} ({args.dataset} {tm})", settings))
    if not jobs:
        return 0
    # the adversarially trained models take longest (Square's queries): they start first
    costs = {label: _expected_cost(settings["model"], args.dataset, settings["threat_model"]) for label, settings in jobs}
    jobs.sort(key=lambda job: -costs[job[0]])
    cores = os.cpu_count() or 1
    workers = max(1, min(args.jobs or cores, len(jobs)))
    threads = max(1, cores // workers)
    failures, done, done_cost, start = 0, 0, 0.0, time.perf_counter()
    print(f"evaluating {len(jobs)} model(s), {workers} at a time, {threads} thread(s) each", flush=True)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        running = {pool.submit(_evaluate_one, (settings, threads)): label for label, settings in jobs}
        for future in as_completed(running):
            status, output, seconds = future.result()
            done += 1
            done_cost += costs[running[future]]
            failures += status != 0
            elapsed = time.perf_counter() - start
            left = _time_left(elapsed, done_cost, sum(costs.values()) - done_cost)
            print(f"== {running[future]}: {'done' if status == 0 else 'FAILED'} in {seconds:.0f} s "
                  f"[{done}/{len(jobs)} models, {elapsed:.0f} s elapsed, about {left:.0f} s left]")
            print(output.rstrip(), flush=True)
    return 1 if failures else 0


def _expected_cost(model_id: str, dataset: str, threat_model: str) -> float:
    """Rough seconds of one evaluation on one core, to start the longest first and to estimate the time
    left: from `make run` on digits (2026-11-30), a model trained against attacks stays robust and Square
    spends its whole budget on it (about 80 s), an undefended one about 10 s, a fully connected network a
    sixth of a convolutional one, a corruptions evaluation about 1 s. Only the ratios matter."""
    from model_zoo import get_card
    from model_zoo.training.recipes import RECIPES

    if threat_model == "corruptions":
        return 1.0
    card = get_card(model_id, dataset=dataset, threat_model=threat_model)
    recipe = RECIPES.get(card.training.recipe or "")
    seconds = 80.0 if recipe is not None and recipe.adversarial else 10.0
    return seconds / 6 if "mlp" in card.architecture.name else seconds


def _time_left(elapsed: float, done_cost: float, left_cost: float) -> float:
    """The time left if the models still to finish go at the pace of those finished, cost for cost."""
    return elapsed * left_cost / done_cost if done_cost > 0 else 0.0


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
    ev.add_argument("--model", required=True,
                    help="a zoo id (robench models lists them) or package.module:function, a function taking no argument "
                         "that returns an nn.Module mapping [0, 1] inputs to logits (imported from the current folder "
                         "and PYTHONPATH)")
    add_evaluation_arguments(ev)
    ev.add_argument("--distributed", type=int, default=0, metavar="N",
                    help="launch N processes with torchrun on this node (docs/scaling.md)")
    ev.set_defaults(func=_cmd_evaluate)
    ver = sub.add_parser("verify", help="bound a record's robust accuracy from below: certify, then decide points exactly")
    ver.add_argument("--model", required=True, help="a zoo name or module:function returning an nn.Module")
    ver.add_argument("--dataset", default="digits")
    ver.add_argument("--threat-model", default="Linf", help="Linf (default) or L2")
    ver.add_argument("--version", default="standard", help="the record's protocol version (default standard)")
    ver.add_argument("--out", default="results", help="the results folder holding the record (default: results/)")
    ver.add_argument("--data-dir", default=None)
    ver.add_argument("--time-limit", type=float, default=30.0, metavar="S",
                     help="seconds of exact verification a point may take before it counts as undecided (default 30)")
    ver.set_defaults(func=_cmd_verify)
    zoo = sub.add_parser("evaluate-zoo", help="evaluate every zoo model of a dataset (what `make run` does)")
    add_evaluation_arguments(zoo)
    zoo.add_argument("--force", action="store_true", help="re-evaluate models whose record is up to date")
    zoo.add_argument("--jobs", type=int, default=0, metavar="N",
                     help="models evaluated at a time, in worker processes sharing the cores (default: one per core)")
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
