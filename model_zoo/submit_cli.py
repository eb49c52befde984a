"""``robench submit``: what a pull request adding a model runs, locally and in CI.

- ``check PATH...``: every problem of every file, at once; non-zero exit when any.
- ``evaluate PATH``: download + verify + load + clean-accuracy reproduction + checks + the standard
  protocol, writing the result record the leaderboard reads, with a log file.
- ``verify-adversarial``: check adversarial examples given as proof of an external evaluation.
- ``verify-external PATH``: read an external-evaluation file and verify its examples if it has some.
- ``migrate PATH...``: rewrite files whose training block repeats the card (``model_zoo.migrate``).
- ``schema [--out FILE]``: the JSON Schema of a submission file, derived from the card declaration.
"""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["register", "check_files", "CLEAN_ACCURACY_TOLERANCE"]

#: a claimed clean accuracy further than this from the measured one is reported as a mismatch
CLEAN_ACCURACY_TOLERANCE = 0.005

log = logging.getLogger("robench.submit")


def _existing_keys(submissions_dir: Path, exclude: set[Path]) -> list[tuple[str, str, str]]:
    """Ids already taken on each board, read file by file so that one broken file spoils nothing."""
    from .submission_schema import SUBMISSION_SUFFIXES, SubmissionError, read_card

    keys = []
    for path in sorted(submissions_dir.glob("*/*/*")):
        if path.suffix.lower() not in SUBMISSION_SUFFIXES or path.resolve() in exclude:
            continue
        try:
            card = read_card(path)
        except SubmissionError:
            continue
        keys.append(card.key)
    return keys


def check_files(paths: list[str]) -> tuple[list[Any], list[Any]]:
    """(cards of the valid files, problems of all files)."""
    from .submission_schema import read_card, repo_root_of, validate_file

    targets = {Path(p).resolve() for p in paths}
    problems, cards = [], []
    for p in paths:
        # ids are checked for collisions only in a file that is valid otherwise, so inside its repository's
        # submissions/<dataset>/<threat_model>/: the ids taken are those of that repository
        existing = _existing_keys(repo_root_of(p) / "submissions", targets)
        found = validate_file(p, existing_ids=existing, check_hash=True)
        problems += found
        if not found:
            cards.append(read_card(p))
    return cards, problems


def _cmd_check(args: argparse.Namespace) -> int:
    from benchmark.budgets import format_eps

    cards, problems = check_files(args.paths)
    for problem in problems:
        print(problem, file=sys.stderr)
    for card in cards:
        budget = f" eps={format_eps(card.dataset, card.threat_model, card.eps)}" if card.eps is not None else ""
        print(f"OK {card.source_file}: {card.id} on {card.dataset}/{card.threat_model}{budget}, "
              f"{card.architecture.source}:{card.architecture.name}, checkpoint {card.checkpoint.sha256[:12]}, "
              f"claimed clean accuracy {100 * card.reported.clean_accuracy:.2f}%")
    if problems:
        print(f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _logging_to(path: str | None) -> Iterator[None]:
    """While a command runs, also write the log (INFO and above) to ``path``; afterwards the root logger
    is as it was (the handler removed and its file closed, the level restored)."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def _with_log_file(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` run with its ``--log`` file open (see :func:`_logging_to`)."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with _logging_to(args.log):
            return command(args)
    return run


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from benchmark.budgets import is_corruptions
    from benchmark.data import load_dataset
    from benchmark.runner import EvaluationError, evaluate

    from .loading import load_model_from_card
    from .submission_schema import SubmissionError, read_card, repo_root_of

    try:
        card = read_card(args.path)
    except SubmissionError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.info("evaluating %s (%s/%s) on %s", card.id, card.dataset, card.threat_model, device)
    model = load_model_from_card(card, repo_root=repo_root_of(args.path), device=device, progress=not args.no_progress)
    log.info("checkpoint verified: sha256 %s", card.checkpoint.sha256)

    x, y = load_dataset(card.dataset, "test", data_dir=args.data_dir, resize=card.preprocessing.resize or 256,
                        crop=card.preprocessing.crop or 224)
    with torch.no_grad():
        preds = torch.cat([model(x[i:i + args.batch_size].to(device)).argmax(1).cpu()
                           for i in range(0, len(x), args.batch_size)])
    measured = (preds == y).float().mean().item()
    claimed = card.reported.clean_accuracy
    mismatch = abs(measured - claimed) > CLEAN_ACCURACY_TOLERANCE
    message = (f"clean accuracy on the full test split: measured {100 * measured:.2f}%, claimed {100 * claimed:.2f}%"
               + (" -- MISMATCH (more than 0.5 points apart)" if mismatch else " -- reproduced"))
    print(message)
    (log.warning if mismatch else log.info)(message)

    info = {"id": card.id, "name": card.paper.title, "checkpoint_sha256": card.checkpoint.sha256,
            "clean_accuracy_claimed": claimed, "clean_accuracy_full_split": measured, "clean_accuracy_mismatch": mismatch}
    try:
        corrupted = is_corruptions(card.threat_model)  # the corrupted sets replace the test split there
        result = evaluate(model, card.dataset, card.threat_model, card.eps, x=None if corrupted else x,
                          y=None if corrupted else y, n_examples=args.n_examples,
                          seed=args.seed, batch_size=args.batch_size, device=device, out=args.out, model_info=info,
                          progress=not args.no_progress)
    except EvaluationError as exc:
        log.error("evaluation failed: %s", exc)
        print(f"robench submit evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    from benchmark.record import record_path

    written = record_path(args.out, card.dataset, card.threat_model, card.id, result.version)
    print(f"record written to {written} (the leaderboard reads it; CI makes its own, so it is not part of the pull request)")
    log.info("record written to %s", written)
    log.info("result: clean %.4f robust %.4f flags %s", result.clean_accuracy, result.robust_accuracy, result.flags)
    return 1 if mismatch else 0


def _verify(model: Any, dataset: str, threat_model: str, eps: float, examples: str, data_dir: str | None) -> int:
    from benchmark.data import load_dataset
    from benchmark.external import load_adversarial_file, verify_adversarial

    x, y = load_dataset(dataset, "test", data_dir=data_dir)
    x_adv, indices = load_adversarial_file(examples)
    report = verify_adversarial(model, x, y, x_adv, indices, threat_model, eps)
    for index, reason in report.rejected[:20]:
        print(f"  rejected example for test point {index}: {reason}")
    if len(report.rejected) > 20:
        print(f"  ... and {len(report.rejected) - 20} more rejected")
    print(f"{report.n_examples} examples: {len(report.broken)} valid and breaking a correctly classified point, "
          f"{len(report.rejected)} rejected")
    print(f"clean accuracy {100 * report.clean_accuracy:.2f}%; robust accuracy proven by the valid examples: "
          f"{100 * report.proven_robust_accuracy:.2f}% (an upper bound)")
    log.info("verify: %d broken, %d rejected, proven robust accuracy %.4f",
             len(report.broken), len(report.rejected), report.proven_robust_accuracy)
    return 0 if report.ok else 1


def _cmd_verify_adversarial(args: argparse.Namespace) -> int:
    from benchmark.budgets import default_eps
    from benchmark.threat_models import parse_eps

    from .registry import get_card
    from .loading import load_model

    card = get_card(args.model, dataset=args.dataset, threat_model=args.threat_model)
    eps = parse_eps(args.eps) if args.eps else default_eps(card.dataset, card.threat_model)
    model = load_model(card.id, dataset=card.dataset, threat_model=card.threat_model)
    return _verify(model, card.dataset, card.threat_model, eps, args.examples, args.data_dir)


def _cmd_verify_external(args: argparse.Namespace) -> int:
    from benchmark.external import read_external

    from .loading import load_model

    try:
        ext = read_external(args.path)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{ext.model_id} ({ext.dataset}/{ext.threat_model}): {ext.who} reports {100 * ext.robust_accuracy:.2f}% "
          f"with {ext.attack}")
    if not ext.adversarial_examples:
        print("no adversarial examples given: the claim cannot be checked, and it will not rank on the board")
        return 0
    model = load_model(ext.model_id, dataset=ext.dataset, threat_model=ext.threat_model)
    examples = Path(args.path).parent / ext.adversarial_examples
    return _verify(model, ext.dataset, ext.threat_model, ext.eps, str(examples), args.data_dir)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from .migrate import migrate_file

    failed = 0
    for path in args.paths:
        try:
            removed = migrate_file(path)
        except (ValueError, OSError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: removed training.{', training.'.join(removed)} (the card says them)" if removed
              else f"{path}: already in the current form")
    return 1 if failed else 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .cards import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("submit", help="check and evaluate model submissions")
    sub = p.add_subparsers(dest="submit_command", required=True, metavar="ACTION")

    c = sub.add_parser("check", help="validate submission files; every problem listed at once")
    c.add_argument("paths", nargs="+", help="submission files (YAML or JSON)")
    c.set_defaults(func=_cmd_check)

    e = sub.add_parser("evaluate", help="download, verify, load, reproduce the clean accuracy, run the protocol")
    e.add_argument("path", help="a submission file")
    e.add_argument("--n-examples", type=int, default=None, metavar="N",
                   help="attack only the first N test points (a quick run; default: the whole board)")
    e.add_argument("--seed", type=int, default=0, help="the seed every random draw derives from (default 0)")
    e.add_argument("--batch-size", type=int, default=500,
                   help="points per chunk (default 500), also the most images one forward+backward pass holds")
    e.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    e.add_argument("--out", default="results", help="folder for the result record (default: results/)")
    e.add_argument("--log", default=None, help="also write a log file here")
    e.add_argument("--data-dir", default=None, help="dataset folder (default: $ROBENCH_DATA or the user cache)")
    e.add_argument("--no-progress", action="store_true", help="no progress display")
    e.set_defaults(func=_with_log_file(_cmd_evaluate))

    v = sub.add_parser("verify-adversarial", help="check adversarial examples: in budget, in [0,1], misclassified")
    v.add_argument("--model", required=True, help="the zoo id of the model the examples attack")
    v.add_argument("--dataset", default="digits", help="digits (default), cifar10, cifar100 or imagenet")
    v.add_argument("--threat-model", default="Linf", help="Linf (default) or L2")
    v.add_argument("--eps", default=None, help="the budget, e.g. 0.1 or 8/255 (default: the board's eps)")
    v.add_argument("--examples", required=True,
                   help="safetensors file with x_adv and indices (the test points they perturb)")
    v.add_argument("--data-dir", default=None, help="dataset folder (default: $ROBENCH_DATA or the user cache)")
    v.add_argument("--log", default=None, help="also write a log file here")
    v.set_defaults(func=_with_log_file(_cmd_verify_adversarial))

    x = sub.add_parser("verify-external", help="read an external-evaluation file and verify its examples")
    x.add_argument("path", help="an external-evaluation file (YAML), with its adversarial examples beside it")
    x.add_argument("--data-dir", default=None, help="dataset folder (default: $ROBENCH_DATA or the user cache)")
    x.add_argument("--log", default=None, help="also write a log file here")
    x.set_defaults(func=_with_log_file(_cmd_verify_external))

    m = sub.add_parser("migrate", help="rewrite submission files whose training block repeats the card's fields")
    m.add_argument("paths", nargs="+", help="submission files (YAML or JSON), rewritten in place")
    m.set_defaults(func=_cmd_migrate)

    s = sub.add_parser("schema", help="print (or write) the JSON Schema of a submission file")
    s.add_argument("--out", default=None, help="write it here (docs/submission.schema.json is this file)")
    s.set_defaults(func=_cmd_schema)
