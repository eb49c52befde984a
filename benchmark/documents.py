"""Reading the YAML and JSON documents people hand in (submission files, external evaluations).

One reader for every such file, with the same rules:

* YAML anchors and aliases are refused before anything is built: the check walks the parser's
  event stream, which grows with the text, not with what the aliases would expand to, so an
  "alias bomb" (a few lines whose aliases expand to billions of nodes) is refused in microseconds
  instead of exhausting the memory. No field of a submission needs them.
* A key repeated in one mapping is an error, not "the last one wins".
* Only YAML's safe types are built (no Python objects); JSON is read by the standard library.
* A leading UTF-8 byte-order mark is ignored in both formats.
* A document is at most :data:`MAX_DOCUMENT_CHARS` characters and :data:`MAX_DEPTH` levels deep
  (checked on the YAML event stream as it is parsed: PyYAML's scanner slows down quadratically
  with flow nesting, and 100,000 nested brackets took minutes).

Every failure is a :class:`DocumentError` (a ValueError) with a one-line message.
"""
from __future__ import annotations

import json
from typing import Any

import yaml

__all__ = ["DocumentError", "load_document", "load_yaml", "load_json", "MAX_DOCUMENT_CHARS", "MAX_DEPTH"]

#: the longest document read (a submission file is a few hundred bytes; a BibTeX entry a few thousand)
MAX_DOCUMENT_CHARS = 1 << 20
#: the deepest nesting of mappings and lists (a submission file needs 3)
MAX_DEPTH = 64


class DocumentError(ValueError):
    """The text is not a document robench reads: a syntax error, an alias, a repeated key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that treats a repeated mapping key as an error instead of keeping the last value."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: the base constructor reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _refuse_anchors_aliases_and_depth(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DocumentError(f"YAML anchors and aliases are not allowed (line {mark.line + 1}, column {mark.column + 1})")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise DocumentError(f"the document is nested too deeply (more than {MAX_DEPTH} levels at line "
                                    f"{mark.line + 1}, column {mark.column + 1})")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _check_size(text: str) -> None:
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentError(f"the document has {len(text):,} characters; expected at most {MAX_DOCUMENT_CHARS:,}")


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def load_yaml(text: str) -> Any:
    """The YAML document in ``text``, under the rules above."""
    text = _strip_bom(text)
    _check_size(text)
    try:
        _refuse_anchors_aliases_and_depth(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DocumentError(f"invalid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, DocumentError):
            raise
        raise DocumentError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise DocumentError("the document is nested too deeply") from None


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """The JSON document in ``text``, under the rules above."""
    _check_size(text)
    try:
        return json.loads(_strip_bom(text), object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise DocumentError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DocumentError("the document is nested too deeply") from None


def load_document(text: str, suffix: str) -> Any:
    """JSON for a '.json' suffix, else YAML (which also reads JSON)."""
    return load_json(text) if suffix.lower() == ".json" else load_yaml(text)
