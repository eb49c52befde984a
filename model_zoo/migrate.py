"""``robench submit migrate FILE...``: rewrite a submission file whose ``training`` block repeats the card.

Until robench 0.3 a recipe's ``training`` block repeated the card's architecture, threat model and
eps (``architecture``, ``arch_kwargs``, ``threat_model``, ``eps``). The card says them once now
(``model_zoo.cards.TRAINING_REPEATS``); this rewrites an old file in place after checking that each
repeated value agrees with the card, keeping the rest of the file (comments, order, spelling) as it
is. A value that disagrees is an error: the file then says two different things and a person decides.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from benchmark.documents import load_document
from benchmark.threat_models import parse_eps

from .cards import TRAINING_REPEATS

__all__ = ["migrate_file", "repeated_keys"]


def _card_value(data: dict, key: str) -> Any:
    value: Any = data
    for part in TRAINING_REPEATS[key].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return {} if value is None and key == "arch_kwargs" else value


def _agrees(key: str, repeated: Any, card: Any) -> bool:
    if key == "eps":
        try:
            return math.isclose(parse_eps(repeated), parse_eps(card), rel_tol=1e-9)
        except (ValueError, TypeError):
            return False
    return repeated == card


def repeated_keys(data: Any) -> list[str]:
    """The keys of ``data``'s training block that repeat the card; ValueError when one disagrees with it."""
    training = data.get("training") if isinstance(data, dict) else None
    if not isinstance(training, dict):
        return []
    keys = [k for k in TRAINING_REPEATS if k in training]
    for key in keys:
        card = _card_value(data, key)
        if not _agrees(key, training[key], card):
            raise ValueError(f"training.{key} is {training[key]!r} but the card's {TRAINING_REPEATS[key]} is {card!r}; "
                             "decide which is right and edit the file by hand")
    return keys


def _drop_yaml_keys(text: str, keys: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^training:\s*(#.*)?$", line)), None)
    if start is None:  # a flow mapping on the training line: rewrite that one line
        pattern = re.compile(r"^training:[ \t]*\{.*\}[ \t]*$", re.MULTILINE)  # [ \t]: the line end stays
        data = yaml.safe_load(text)
        block = {k: v for k, v in data["training"].items() if k not in keys}
        flow = yaml.safe_dump({"training": block}, default_flow_style=None, sort_keys=False, width=10_000).strip()
        new, count = pattern.subn(lambda m: flow, text)
        if count != 1:
            raise ValueError("the training block is neither a block mapping nor a one-line flow mapping; edit it by hand")
        return new
    out, i, skip_indent = lines[: start + 1], start + 1, None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped and indent == 0:
            break
        if skip_indent is not None and (not stripped or indent > skip_indent):
            i += 1
            continue
        skip_indent = None
        match = re.match(r"^( +)([A-Za-z_][A-Za-z0-9_]*):", line)
        if match and match.group(2) in keys:
            skip_indent = len(match.group(1))
        else:
            out.append(line)
        i += 1
    return "".join(out + lines[i:])


def migrate_file(path: str | Path) -> list[str]:
    """Remove the repeated keys from one submission file; returns them (empty: nothing to do)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data = load_document(text, path.suffix)
    keys = repeated_keys(data)
    if not keys:
        return []
    expected = {**data, "training": {k: v for k, v in data["training"].items() if k not in keys}}
    if path.suffix.lower() == ".json":
        new = json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
    else:
        new = _drop_yaml_keys(text, keys)
    if load_document(new, path.suffix) != expected:
        raise ValueError(f"{path}: the rewritten file does not read back as the old one less {', '.join(keys)}; "
                         "edit it by hand")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return keys
