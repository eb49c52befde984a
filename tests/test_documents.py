"""The one reader of submitted YAML and JSON: its refusals, word for word, and where they point."""
from __future__ import annotations

import pytest

from benchmark.documents import MAX_DEPTH, DocumentError, load_document, load_json, load_yaml


def test_a_repeated_key_is_refused_in_both_formats():
    with pytest.raises(DocumentError, match=r"^invalid YAML: while constructing a mapping .* found duplicate key 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n")
    with pytest.raises(DocumentError, match=r"^invalid JSON: duplicate key 'a'$"):
        load_json('{"a": 1, "a": 2}')
    assert load_yaml("outer:\n  a: 1\nother:\n  a: 2\n") == {"outer": {"a": 1}, "other": {"a": 2}}  # per mapping


def test_anchors_and_aliases_are_refused_where_they_stand():
    with pytest.raises(DocumentError, match=r"^YAML anchors and aliases are not allowed \(line 2, column 4\)$"):
        load_yaml("a: 1\nb: &x [1, 2]\n")
    with pytest.raises(DocumentError, match=r"^YAML anchors and aliases are not allowed \(line 1, column 5\)$"):
        load_yaml("a: [*y]\n")


def test_nesting_is_capped_in_yaml_and_json():
    fine = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_yaml(fine) == load_json(fine)
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(DocumentError, match=rf"^the document is nested too deeply \(more than {MAX_DEPTH} levels at line 1, "
                                            rf"column {MAX_DEPTH + 1}\)$"):
        load_yaml(deep)
    siblings = "[" + "[], " * 10 + "[" * MAX_DEPTH + "]" * (MAX_DEPTH + 1)  # closed lists do not count
    with pytest.raises(DocumentError, match=rf"more than {MAX_DEPTH} levels at line 1, column {1 + 40 + MAX_DEPTH}\)$"):
        load_yaml(siblings)
    with pytest.raises(DocumentError, match=r"^the document is nested too deeply$"):
        load_json("[" * 100_000 + "]" * 100_000)


def test_only_safe_types_a_byte_order_mark_and_the_suffix():
    with pytest.raises(DocumentError, match="could not determine a constructor for the tag"):
        load_yaml("!!python/object/apply:os.system ['true']")
    assert load_document("\ufeffa: 1\n", ".yaml") == {"a": 1} and load_document('\ufeff{"a": 1}', ".JSON") == {"a": 1}
    with pytest.raises(DocumentError, match=r"^invalid JSON at line 1, column 1"):
        load_document("a: 1", ".json")  # YAML is not JSON
    assert load_document("a: 1" + " " * ((1 << 20) - 4), ".yml") == {"a": 1}  # exactly the limit
    with pytest.raises(DocumentError, match="^the document has 1,048,577 characters; expected at most 1,048,576$"):
        load_document(" " * (1 << 20 | 1), ".yml")
