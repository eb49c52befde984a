"""The ``robench`` command. Each package adds its own subcommands through ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from torch import nn

__all__ = ["main", "build_parser", "resolve_model", "evaluation_argv"]

#: modules that add subcommands (each defines register(subparsers))
SUBCOMMAND_MODULES = (
    "model_zoo.cli",
    "model_zoo.training.cli",
    "leaderboard.cli",
    "model_zoo.submit_cli",
)


def resolve_model(spec: str, dataset: str, threat_model: str, device: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A zoo name, or ``package.module:function`` returning an nn.Module; plus the record's model info."""
    if ":" in spec:
        module_name, func_name = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f"robench: cannot import {spec!r}: {exc}") from None
        model = factory()
        if not isinstance(model, nn.Module):
            raise SystemExit(f"robench: {spec} returned {type(model).__name__}, not a torch.nn.Module")
        return model, {"id": func_name, "source": spec}
    from model_zoo import get_card, load_model

    card = get_card(spec, dataset=dataset, threat_model=threat_model)
    model = load_model(spec, dataset=dataset, threat_model=threat_model, device=device or "cpu")
    return model, {"id": card.id, "name": card.name, "checkpoint_sha256": card.checkpoint.sha256}


def add_evaluation_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate`` and the torchrun entry point ``benchmark.run``."""
    p.add_argument("--dataset", default="digits", help="digits (default), cifar10, cifar100 or imagenet")
    p.add_argument("--threat-model", default="Linf", help="Linf (default) or L2")
    p.add_argument("--eps", type=str, default=None, help="budget, e.g. 0.1 or 8/255 (default: the board's)")
    p.add_argument("--n-examples", type=int, default=None, help="evaluate the first N test points")
    p.add_argument("--version", default="standard", choices=["standard", "plus", "rand", "auto"],
                   help="protocol version; 'auto' switches to 'rand' when the model is randomised")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--out", default="results", help="folder for result records (default: results/)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $ROBENCH_DATA or the user cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--channels-last", action="store_true",
                   help="run the model in the channels_last memory format (faster convolutions on GPUs and often CPUs)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (meant for GPUs; the first batches pay the compile time)")


def run_evaluation(args: argparse.Namespace) -> int:
    """Evaluate one model as the arguments say; under torchrun every rank calls this and leaves its group."""
    from . import distributed

    distributed.init_from_env()
    status = 1
    try:
        status = _evaluate_and_report(args)
        return status
    finally:
        # a failing rank leaves at once, so torchrun stops the others instead of them waiting for it
        distributed.finish(wait=status == 0)


def _evaluate_and_report(args: argparse.Namespace) -> int:
    from . import distributed
    from .journal import JournalMismatchError
    from .runner import EvaluationError, evaluate, result_path
    from .threat_models import parse_eps

    rank, _ = distributed.rank_and_world()
    device = args.device or (distributed.local_device() if rank or distributed.rank_and_world()[1] > 1 else None)
    try:
        eps = parse_eps(args.eps) if args.eps is not None else None
        model, info = resolve_model(args.model, args.dataset, args.threat_model, device)
        version = args.version
        if version == "auto":
            from .checks import choose_version

            version = choose_version(model, args.dataset, device=device)
        path = result_path(args.out, args.dataset, args.threat_model, str(info["id"]), version)
        result = evaluate(
            model, args.dataset, args.threat_model, eps, n_examples=args.n_examples, version=version,
            seed=args.seed, batch_size=args.batch_size, device=device, out=args.out, data_dir=args.data_dir,
            model_info=info, progress=not args.no_progress, journal=path.with_suffix(".journal"),
            channels_last=getattr(args, "channels_last", False), compile=getattr(args, "compile", False),
        )
    except (EvaluationError, JournalMismatchError, ValueError, FileNotFoundError) as exc:
        print(f"robench evaluate: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        from .checks import FLAG_EXPLANATIONS

        print(result.summary())
        for flag in result.flags:
            print(f"  ! {flag}: {FLAG_EXPLANATIONS[flag]}")
        print(f"record written to {path}")
    return 0


def evaluation_argv(args: argparse.Namespace) -> list[str]:
    """The ``benchmark.run`` command line equivalent to parsed evaluation arguments (for --distributed)."""
    argv = ["--model", args.model]
    for name in ("dataset", "threat_model", "eps", "n_examples", "version", "seed", "batch_size", "device", "out", "data_dir"):
        if getattr(args, name) is not None:
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    flags = [f"--{name.replace('_', '-')}" for name in ("no_progress", "channels_last", "compile") if getattr(args, name, False)]
    return argv + flags


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.distributed:
        from .run import launch

        return launch(args.distributed, evaluation_argv(args))
    return run_evaluation(args)


def _up_to_date(record: Any, card: Any, args: argparse.Namespace) -> bool:
    """The record was made from this checkpoint with these settings."""
    from .data import load_dataset

    n = args.n_examples or len(load_dataset(args.dataset, "test", data_dir=args.data_dir)[1])
    return (record.model.get("checkpoint_sha256") == card.checkpoint.sha256 and record.seed == args.seed
            and record.n_examples == n and abs(record.eps - card.eps) < 1e-12 and record.batch_size == args.batch_size)


def _cmd_evaluate_zoo(args: argparse.Namespace) -> int:
    """Evaluate every zoo model of a dataset's boards, skipping those whose record is up to date."""
    from model_zoo import get_card, list_models

    from .budgets import BOARDS

    from .record import EvaluationResult
    from .runner import result_path

    failures = 0
    boards = [tm for (ds, tm) in BOARDS if ds == args.dataset and args.threat_model in (None, tm)]
    for tm in boards:
        for name in list_models(dataset=args.dataset, threat_model=tm):
            card = get_card(name, dataset=args.dataset, threat_model=tm)
            path = result_path(args.out, args.dataset, tm, card.id, args.version)
            if not args.force and path.exists() and _up_to_date(EvaluationResult.load(path), card, args):
                print(f"== {card.id} ({args.dataset} {tm}): record up to date, skipped (--force re-evaluates)")
                continue
            print(f"== {card.id} ({args.dataset} {tm})", flush=True)
            ns = argparse.Namespace(**{**vars(args), "model": card.id, "threat_model": tm, "eps": None})
            failures += run_evaluation(ns) != 0
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robench", description="Adversarial-robustness benchmark and leaderboard")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
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
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
