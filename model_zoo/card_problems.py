"""A document against the card declaration: its faults in robench's words, and the parts that are sound.

Pydantic reports every fault of a document against the card declaration (``model_zoo.cards``) with
its location; :func:`problems_from` turns each into a :class:`Problem` that says what was expected,
in the terms of the submission format (the JSON Schema derived from the declaration names the
kinds: "expected an integer, got a string ('ten')", "unknown field; did you mean 'license'?").
"""
from __future__ import annotations

import difflib
import functools
from types import SimpleNamespace
from typing import Annotated, Any, Iterable, Mapping, NamedTuple

from pydantic import BaseModel, TypeAdapter, ValidationError

from .cards import CardProblems

__all__ = ["Problem", "SubmissionError", "problems_from", "validate_parts", "type_name"]


class Problem(NamedTuple):
    """One fault of a submission file: where it is and what was expected."""

    file: str
    #: dotted path of the field ('paper.year', 'preprocessing.mean'), or '(file)' / '(document)'
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class SubmissionError(ValueError):
    """A submission file (or several, for a registry) is invalid; ``.problems`` lists every fault."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in submission file(s):\n{lines}")


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Schema:
    """What the JSON Schema of a card type says about one location: its kind in words, its fields."""

    def __init__(self, card_type: type[BaseModel]) -> None:
        self.root = card_type.model_json_schema()

    def _resolve(self, node: dict) -> dict:
        while "$ref" in node:
            node = self.root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    def node(self, loc: Iterable[Any]) -> dict:
        node = self._resolve(self.root)
        for part in loc:
            branches = [self._resolve(b) for b in node.get("anyOf", [node]) if b.get("type") != "null"]
            node = next((b for b in branches if "properties" in b or "items" in b), branches[0] if branches else {})
            if isinstance(part, str) and part in node.get("properties", {}):
                node = self._resolve(node["properties"][part])
            elif isinstance(part, int) and "items" in node:
                node = self._resolve(node["items"])
            else:
                return {}
        return node

    def kind(self, node: dict, plural: bool = False) -> str:
        node = self._resolve(node)
        if "anyOf" in node and "type" not in node:  # a union of types (an object's anyOf only requires keys)
            kinds = [self.kind(b, plural) for b in node["anyOf"] if b.get("type") != "null"]
            nullable = len(kinds) < len(node["anyOf"])
            return " or ".join(dict.fromkeys(kinds)) + (" or null" if nullable else "")
        if "enum" in node:
            return "one of " + ", ".join(repr(v) for v in node["enum"])
        words = {"string": "non-empty string" if node.get("minLength") else "string", "integer": "integer",
                 "number": "number", "boolean": "boolean"}.get(node.get("type", ""))
        if node.get("type") == "boolean" and not plural:
            return "true or false"
        if words:
            return words + "s" if plural else ("an " if words[0] in "aeiou" else "a ") + words
        if node.get("type") == "array":
            return "a list of " + self.kind(node.get("items", {}), plural=True)
        if node.get("type") == "object" or "properties" in node:
            return "mappings" if plural else "a mapping"
        return "values" if plural else "a value"

    def fields(self, loc: Iterable[Any]) -> list[str]:
        return list(self.node(loc).get("properties", {}))


@functools.lru_cache(maxsize=8)
def _schema(card_type: type[BaseModel]) -> _Schema:
    return _Schema(card_type)


def _where(loc: Iterable[Any]) -> tuple[str, str]:
    """(dotted field, prefix naming a list item) for a pydantic location."""
    names, item = [], ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) and names:
            item = f"item {part}: "
            continue
        names.append(part if isinstance(part, str) and part.strip() else repr(part))
    return ".".join(names) or "(document)", item


def _translate(error: Mapping[str, Any], schema: _Schema) -> list[tuple[str, str]]:
    loc, kind, value, ctx = tuple(error["loc"]), error["type"], error.get("input"), error.get("ctx") or {}
    where, item = _where(loc)
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), CardProblems):
        prefix = "" if where == "(document)" else f"{where}."  # a rule over the whole card names its own fields
        return [(f"{prefix}{sub}" if sub else where, message) for sub, message in ctx["error"].problems]
    if kind in ("value_error", "assertion_error"):
        return [(where, item + str(ctx.get("error", error["msg"])))]
    if kind == "missing":
        return [(where, f"missing required field; expected {schema.kind(schema.node(loc))}")]
    if kind == "extra_forbidden":
        allowed = schema.fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [(where, f"unknown field; {hint}expected only: {', '.join(allowed)}")]
    if kind == "literal_error":
        return [(where, f"unknown {str(loc[-1]).replace('_', ' ')} {_short(value)}; expected {ctx.get('expected')}")]
    if kind == "greater_than_equal":
        return [(where, f"{item}expected at least {ctx.get('ge')}, got {_short(value)}")]
    if kind == "too_short":
        if isinstance(value, (list, tuple)) and len(value) > ctx.get("actual_length", 0):
            return []  # pydantic counts the valid items only: the items' own problems say what is wrong
        return [(where, f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length') or 'none'}")]
    if kind == "string_too_short":
        return [(where, f"{item}expected a non-empty string")]
    if kind == "invalid_key" or loc[-1:] == ("[key]",):
        return [(where, f"expected string keys, got {_short(value)}")]
    if kind == "finite_number":
        return [(where, f"{item}expected a finite number, got {_short(value)}")]
    if kind.endswith(("_type", "_parsing")) or kind == "int_from_float":
        node = schema.node(loc)
        return [(where, f"{item}expected {schema.kind(node)}, got {type_name(value)} ({_short(value)})")]
    return [(where, f"{item}{error['msg']}")]


def problems_from(error: ValidationError, card_type: type[BaseModel]) -> list[tuple[str, str]]:
    """(field, message) for every fault pydantic found validating a document as ``card_type``."""
    schema = _schema(card_type)
    return [found for e in error.errors(include_url=False) for found in _translate(e, schema)]


@functools.lru_cache(maxsize=256)
def _adapter(owner: type[BaseModel], name: str) -> TypeAdapter:
    info = owner.model_fields[name]
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)


def _valid_fields(owner: type[BaseModel], data: dict) -> dict[str, Any]:
    """The fields of ``data`` that validate on their own against ``owner``'s declaration, as validated values.

    A part that fails as a whole (a preprocessing whose mean disagrees with its input size) still
    lends the board rules its good fields, as a namespace: every problem of a file is found at once."""
    values = {}
    for name, info in owner.model_fields.items():
        if name not in data:
            continue
        try:
            values[name] = _adapter(owner, name).validate_python(data[name])
        except ValidationError:
            part = info.annotation
            if isinstance(part, type) and issubclass(part, BaseModel) and isinstance(data[name], dict):
                values[name] = SimpleNamespace(**_valid_fields(part, data[name]))
    return values


def _card_rules(card_type: type[BaseModel], data: dict, parts: dict[str, Any]) -> list[tuple[str, str]]:
    """The card's own rules across its fields (its "after" model validators, such as a budget for every Lp
    board), run on the parts that validated: pydantic runs them only when every field is valid. A rule that
    reads a field which failed has nothing to add and is skipped; an absent field takes its default."""
    values = dict(parts)
    for name, info in card_type.model_fields.items():
        if name not in data and not info.is_required():
            values[name] = info.get_default(call_default_factory=True)
    view, found = SimpleNamespace(**values), []
    for rule in card_type.__pydantic_decorators__.model_validators.values():
        if rule.info.mode != "after":
            continue
        try:
            rule.func(view)
        except ValueError as exc:  # worded as pydantic's own report of the rule would be
            error = {"loc": (), "type": "value_error", "input": data, "ctx": {"error": exc}, "msg": str(exc)}
            found += _translate(error, _schema(card_type))
        except AttributeError:  # it reads a field that failed on its own
            continue
    return found


def validate_parts(card_type: type[BaseModel], data: dict) -> tuple[Any, list[tuple[str, str]], dict[str, Any]]:
    """(the card or None, (field, message) for each fault, the parts that validated on their own)."""
    try:
        card = card_type.model_validate(data)
    except ValidationError as exc:
        parts = _valid_fields(card_type, data)
        found = problems_from(exc, card_type)
        if any(error["loc"] for error in exc.errors()):  # a field failed: the card's own rules did not run
            found += _card_rules(card_type, data, parts)
        return None, found, parts
    return card, [], dict(card)
