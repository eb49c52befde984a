"""The tables in docs/ whose numbers live in the code: written from the code, so that they cannot drift.

``robench docs --check`` fails when a generated table in docs/ differs from what the code says now
(a test runs it); ``robench docs --write`` rewrites them. A generated table sits between
``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``; everything around it is prose.

- ``boards`` (docs/datasets.md): each board and its eps, from ``benchmark.budgets``;
- ``architectures`` (docs/model_zoo.md): robench's architectures, their keyword arguments with
  defaults and their parameter counts, built on the meta device (no memory, no time);
- ``recipes`` (docs/training.md): the training recipes, their own settings and their papers, and
  the settings every recipe shares, from ``model_zoo.training.recipes``;
- ``corruptions`` (docs/corruptions.md): digits-C's corruptions and what each severity means, from
  ``benchmark.corruptions.SEVERITIES``;
- ``evaluate-options`` (docs/evaluation.md): every option of ``robench evaluate`` with its help text, read
  off the command's own argument parser (``robench.cli.build_parser``);
- ``submit-options`` (docs/submitting.md): every action of ``robench submit`` and its arguments, the same way;
- ``train-options`` (docs/training.md): every argument of ``robench train``, the same way.
"""
from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path
from typing import Any, Callable

__all__ = ["TABLES", "render", "stale", "write", "register"]

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _cell(text: str) -> str:
    """Text fit for a markdown table cell: pipes escaped, reStructuredText's double backticks made single."""
    return str(text).replace("``", "`").replace("|", "\\|")


def _boards() -> str:
    from benchmark.budgets import BOARD_ORIGINS, BOARDS

    rows = [f"| {d} {t} | {text if eps is not None else f'none: the {text} sets'} | {BOARD_ORIGINS[(d, t)]} |"
            for (d, t), (eps, text) in BOARDS.items()]
    return "\n".join(["| board | eps | why |", "|---|---|---|", *rows])


def _architectures() -> str:
    import torch

    from model_zoo.architectures import ARCHITECTURES

    rows = []
    for name, build in ARCHITECTURES.items():
        params = inspect.signature(build).parameters
        kwargs = ", ".join(f"`{p.name}={p.default}`" for p in params.values()
                           if p.name not in ("num_classes", "in_channels", "in_features") and p.default is not p.empty)
        with torch.device("meta"):
            count = sum(p.numel() for p in build(num_classes=10).parameters())
        what = (build.__doc__ or "").strip().splitlines()[0].rstrip(".")
        rows.append(f"| `{name}` | {_cell(what)} | {kwargs or '(none)'} | {count:,} |")
    return "\n".join(["| name | what | keyword arguments (defaults) | parameters at the defaults, 10 classes |",
                      "|---|---|---|---|", *rows])


def _recipes() -> str:
    from model_zoo.training.recipes import COMMON_DEFAULTS, RECIPES

    def settings(values: Any) -> str:
        return ", ".join(f"`{k}={v}`" for k, v in dict(values).items()) or "(none)"

    rows = [f"| `{r.name}` | {_cell(r.summary)} | {settings(r.defaults)} | {'yes' if r.adversarial else 'no'} | {_cell(r.paper)} |"
            for r in RECIPES.values()]
    return "\n".join([f"Shared settings (every recipe, unless its own say otherwise): {settings(COMMON_DEFAULTS)}.", "",
                      "| recipe | what | own settings | attacks during training (takes the card's threat model and eps) | paper |",
                      "|---|---|---|---|---|", *rows])


def _corruptions() -> str:
    from benchmark.corruptions import SEVERITIES

    rows = [f"| `{name}` | {_cell(meaning)} | {' / '.join(f'{v:g}' for v in values)} |"
            for name, (meaning, values) in SEVERITIES.items()]
    return "\n".join(["| corruption | the parameter | severities 1 / 2 / 3 / 4 / 5 |", "|---|---|---|", *rows])


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _option_rows(parser: argparse.ArgumentParser, first_cells: str = "") -> list[str]:
    """One table row per argument of ``parser`` (its help option left out): the names as typed, the help."""
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        shown = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper())
        takes = f" {shown}" if action.nargs != 0 else ""
        names = " / ".join(f"`{option}{takes}`" for option in action.option_strings) or f"`{shown}`"
        required = "; required" if action.required and action.option_strings else ""  # positionals always are
        rows.append(f"| {first_cells}{names} | {_cell(action.help)}{required} |")
    return rows


def _command_options(command: str, column: str) -> Callable[[], str]:
    """The table of ``robench COMMAND``'s arguments (``column`` heads their names)."""
    def table() -> str:
        from robench.cli import build_parser

        rows = _option_rows(_subcommands(build_parser())[command])
        return "\n".join([f"| {column} | meaning |", "|---|---|", *rows])
    return table


def _submit_options() -> str:
    from robench.cli import build_parser

    actions = _subcommands(_subcommands(build_parser())["submit"])
    rows = [row for name, parser in actions.items() for row in _option_rows(parser, f"`{name}` | ")]
    return "\n".join(["| action | argument | meaning |", "|---|---|---|", *rows])


#: name -> (the doc holding it, what writes it)
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "boards": ("datasets.md", _boards),
    "architectures": ("model_zoo.md", _architectures),
    "recipes": ("training.md", _recipes),
    "corruptions": ("corruptions.md", _corruptions),
    "evaluate-options": ("evaluation.md", _command_options("evaluate", "option")),
    "submit-options": ("submitting.md", _submit_options),
    "train-options": ("training.md", _command_options("train", "argument")),
}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- generated: {name} -->\n(?:.*?\n)?<!-- end generated: {name} -->", re.S)


def render() -> dict[Path, str]:
    """Each doc's text (in :data:`DOCS`) with its generated tables as the code says now."""
    out: dict[Path, str] = {}
    for name, (doc, make) in TABLES.items():
        path = DOCS / doc
        text = out.get(path, path.read_text(encoding="utf-8"))
        if not _pattern(name).search(text):
            raise ValueError(f"{path} has no <!-- generated: {name} --> ... <!-- end generated: {name} --> block")
        table = make()
        block = f"<!-- generated: {name} -->\n{table}\n<!-- end generated: {name} -->"
        out[path] = _pattern(name).sub(lambda m: block, text)
    return out


def stale() -> list[str]:
    """The docs whose generated tables differ from the code."""
    return [str(path) for path, text in render().items() if path.read_text(encoding="utf-8") != text]


def write() -> list[str]:
    changed = stale()
    for path, text in render().items():
        path.write_text(text, encoding="utf-8")
    return changed


def _cmd(args: argparse.Namespace) -> int:
    if args.write:
        changed = write()
        print("rewrote " + ", ".join(changed) if changed else "the generated tables were current")
        return 0
    changed = stale()
    if changed:
        print(f"generated tables out of date in {', '.join(changed)}; run robench docs --write")
        return 1
    print(f"the generated tables ({', '.join(TABLES)}) are current")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("docs", help="check (or rewrite) the tables in docs/ that are written from the code")
    p.add_argument("--write", action="store_true", help="rewrite them (default: only check, exit 1 if stale)")
    p.set_defaults(func=_cmd)
