"""Evaluating one model from the command line: shared by ``robench evaluate`` and ``python -m robench.run``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from torch import nn

from benchmark.protocol import PROTOCOLS

__all__ = ["resolve_model", "add_evaluation_arguments", "run_evaluation", "evaluation_argv"]


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
    return model, {"id": card.id, "name": card.paper.title, "checkpoint_sha256": card.checkpoint.sha256}


def add_evaluation_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``evaluate`` and the torchrun entry point ``robench.run``."""
    p.add_argument("--dataset", default="digits", help="digits (default), cifar10, cifar100 or imagenet")
    p.add_argument("--threat-model", default="Linf", help="Linf (default), L2 or corruptions (accuracy under common corruptions: no eps)")
    p.add_argument("--eps", type=str, default=None, help="budget, e.g. 0.1 or 8/255 (default: the board's)")
    p.add_argument("--n-examples", type=int, default=None, help="evaluate the first N test points (default: all of them: digits 500, CIFAR 10,000, ImageNet 5,000)")
    p.add_argument("--version", default="standard", choices=[*PROTOCOLS, "auto"],
                   help="protocol version (default standard); 'auto' switches to 'rand' when the model is randomised; 'fast' (MALT-targeted APGD, for many checkpoints) runs 'standard' when a check fires")
    p.add_argument("--seed", type=int, default=0, help="the seed every random draw derives from (default 0; never the clock)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="points per chunk (default 500): the unit of work, of resuming and of sharding, and the most "
                        "images one forward+backward pass holds; pick it for your memory")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--out", default="results", help="folder for result records (default: results/)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $ROBENCH_DATA or the user cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress display (otherwise one bar for the whole evaluation, naming the stage under way)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="run the model in the channels_last memory format (default: when it has 2-d convolutions "
                        "and runs on the CPU, where NHWC kernels are faster; on GPUs it was not)")
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (meant for GPUs; the first batches pay the compile time)")
    p.add_argument("--verify", action="store_true",
                   help="also bound the truth from below: certified accuracy (CROWN, or IBP for large networks) and, "
                        "for small networks, each point the attacks left robust decided exactly (docs/verification.md)")
    p.add_argument("--verify-time-limit", type=float, default=30.0, metavar="S",
                   help="seconds of exact verification a point may take before it counts as undecided (default 30)")


def run_evaluation(args: argparse.Namespace) -> int:
    """Evaluate one model as the arguments say; under torchrun every rank calls this and leaves its group."""
    from benchmark import distributed

    distributed.init_from_env()
    status = 1
    try:
        status = _evaluate_and_report(args)
        return status
    finally:
        # a failing rank leaves at once, so torchrun stops the others instead of them waiting for it
        distributed.finish(wait=status == 0)


def _evaluate_and_report(args: argparse.Namespace) -> int:
    from benchmark import distributed
    from benchmark.journal import JournalMismatchError
    from benchmark.record import record_path
    from benchmark.runner import EvaluationError, evaluate, resolve_device
    from benchmark.threat_models import parse_eps
    from benchmark.verification import VerificationError

    rank, _ = distributed.rank_and_world()
    device = args.device or (distributed.local_device() if rank or distributed.rank_and_world()[1] > 1 else None)
    try:
        eps = parse_eps(args.eps) if args.eps is not None else None
        device = str(resolve_device(device)) if device is not None else None
        model, info = resolve_model(args.model, args.dataset, args.threat_model, device)
        version = args.version
        if version == "auto":
            from benchmark.checks import choose_version

            version = choose_version(model, args.dataset, device=device)
        path = record_path(args.out, args.dataset, args.threat_model, str(info["id"]), version)
        result = evaluate(
            model, args.dataset, args.threat_model, eps, n_examples=args.n_examples, version=version,
            seed=args.seed, batch_size=args.batch_size, device=device, out=args.out, data_dir=args.data_dir,
            model_info=info, progress=not args.no_progress, journal=path.with_suffix(".journal"),
            channels_last=getattr(args, "channels_last", None), compile=getattr(args, "compile", False),
            verify=getattr(args, "verify", False), verify_time_limit=getattr(args, "verify_time_limit", 30.0),
        )
    except (EvaluationError, JournalMismatchError, ValueError, FileNotFoundError, VerificationError) as exc:
        print(f"robench evaluate: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        from benchmark.checks import FLAG_EXPLANATIONS

        print(result.summary())
        for flag in result.flags:
            print(f"  ! {flag}: {FLAG_EXPLANATIONS[flag]}")
        if result.model.get("fast_fallback"):
            print(f"  'fast' was not run: {result.model['fast_fallback']}")
        print(f"record written to {record_path(args.out, args.dataset, args.threat_model, str(info['id']), result.version)}")
    return 0


def evaluation_argv(args: argparse.Namespace) -> list[str]:
    """The ``robench.run`` command line equivalent to parsed evaluation arguments (for --distributed).

    Read off the arguments :func:`add_evaluation_arguments` declares, so the two cannot drift apart."""
    declared = argparse.ArgumentParser(add_help=False)
    add_evaluation_arguments(declared)
    argv = ["--model", args.model]
    for action in declared._actions:
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x, None: the default
            argv += [] if value is None else [action.option_strings[0 if value else 1]]
        elif action.nargs == 0:  # a flag
            argv += [action.option_strings[0]] if value else []
        elif value is not None:
            argv += [action.option_strings[0], str(value)]
    return argv
