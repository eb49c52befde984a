"""``robench train``: train a recipe, or rebuild a shipped checkpoint from its submission file."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["register", "main"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a digits model with a robench recipe, or rebuild a shipped checkpoint",
        description=(
            "Train a model on the digits training split with a recipe (robench train --list names them), "
            "or retrain the model a submission file describes. "
            "Runs on one CPU thread; the same settings, seed, torch version and CPU give the same bytes."
        ),
    )
    p.add_argument("recipe", nargs="?", help="a recipe name, or a submission file (.yaml/.json) to rebuild")
    p.add_argument("--out", default=".", help="folder for the checkpoint and its summary (default: .)")
    p.add_argument("--seed", type=int, default=None, help="seed of the weights, data order and attacks (default 0)")
    p.add_argument("--threat-model", default=None, help="Linf or L2, for the adversarial recipes (default Linf)")
    p.add_argument("--eps", type=float, default=None, help="training budget (default: the digits board's eps)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set epochs=10 (the value is read as YAML)")
    p.add_argument("--update", action="store_true",
                   help="with a submission file: overwrite its checkpoint and write the new sha256 and clean accuracy into it")
    p.add_argument("--list", action="store_true", help="list the recipes and their default settings")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.set_defaults(func=run)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"robench train: --set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _list_recipes() -> int:
    from .recipes import COMMON_DEFAULTS, RECIPES

    print(f"common settings: {json.dumps(dict(COMMON_DEFAULTS))}")
    for recipe in RECIPES.values():
        extra = " [threat_model, eps]" if recipe.adversarial else ""
        print(f"{recipe.name:15s} {recipe.summary}{extra}\n{'':15s} settings: {json.dumps(dict(recipe.defaults))}\n"
              f"{'':15s} paper: {recipe.paper}")
    return 0


def run(args: argparse.Namespace) -> int:
    from .submission import read_training_spec, train_from_submission, update_submission
    from .train import digits_test_accuracy, save_checkpoint, train

    if args.list:
        return _list_recipes()
    if not args.recipe:
        raise SystemExit("robench train: name a recipe or a submission file (robench train --list shows the recipes)")
    progress = None if args.quiet else (lambda epoch, loss: print(f"epoch {epoch + 1}: loss {loss:.4f}", file=sys.stderr))
    as_file = Path(args.recipe)
    try:
        if as_file.suffix in (".yaml", ".yml", ".json"):
            if args.overrides or args.threat_model or args.eps is not None or args.seed is not None:
                raise SystemExit("robench train: a submission file fixes every setting; drop --set/--seed/--threat-model/--eps")
            spec = read_training_spec(as_file)
            if args.update and not spec.checkpoint_path:
                raise SystemExit(f"robench train: {as_file} gives its checkpoint by url; --update needs a repository path")
            result = train_from_submission(as_file, on_epoch=progress)
            if args.update:
                from ..submission_schema import repo_root_of

                target = repo_root_of(as_file) / spec.checkpoint_path
            else:
                target = Path(args.out) / f"{spec.model_id}.safetensors"
            name = spec.model_id
        else:
            result = train(args.recipe, threat_model=args.threat_model, eps=args.eps, seed=args.seed or 0,
                           overrides=_parse_overrides(args.overrides), on_epoch=progress)
            tm = result.settings.get("threat_model")
            name = f"{args.recipe}{'_' + tm if tm else ''}_seed{result.settings['seed']}"
            target = Path(args.out) / f"{name}.safetensors"
            spec = None
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"robench train: {exc}") from None
    sha = save_checkpoint(result.model, target)
    acc = digits_test_accuracy(result.model)
    summary = {"checkpoint": str(target), "sha256": sha, "clean_accuracy": acc, "seconds": round(result.seconds, 1),
               "cpu_seconds": round(result.cpu_seconds, 1),
               "architecture": result.architecture, "training": result.training_block}
    if spec is None:
        target.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(yaml.safe_dump(summary, sort_keys=False).rstrip())
    if spec is not None:
        if args.update:
            update_submission(as_file, sha, acc)
            print(f"updated {as_file}")
        elif spec.checkpoint_sha256 == sha:
            print(f"reproduced {name}: sha256 matches the submission file")
        else:
            print(f"{name}: sha256 differs from the submission file's {spec.checkpoint_sha256} "
                  "(another torch version or platform?)", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_zoo.training")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
