"""Property-based fuzzing of the readers that take files from others: the journal and the result record.

Whatever the bytes: never a traceback other than the reader's own error, never a hang, and what is
accepted is well-formed. (The submission checker has its own fuzzers in test_submission_schema.py.)
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.journal import Journal
from benchmark.record import EvaluationResult, PointResult
from leaderboard.sources import read_record
from leaderboard.synthetic import make_card, make_record

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
CONFIG = {"dataset": "digits", "seed": 0, "batch_size": 2, "n_examples": 6, "model": "ab" * 32}
#: examples per fuzzer; benchmarks/hostile_inputs.py --fuzz N runs these fuzzers longer through ROBENCH_FUZZ_EXAMPLES
FUZZ_EXAMPLES = int(os.environ.get("ROBENCH_FUZZ_EXAMPLES", "0")) or None
_FUZZ = settings(max_examples=FUZZ_EXAMPLES or 120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _point(i: int) -> dict:
    return {"index": i, "label": 1, "clean_correct": True, "robust": False, "broken_by": "apgd-ce", "norm": 0.1,
            "queries": 3, "min_norm": 0.1, "not_evaluable": False}


@_FUZZ
@given(lines=st.lists(_json.map(json.dumps) | st.text(max_size=40), max_size=6))
def test_any_journal_lines_give_only_well_formed_chunks(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.journal"
    path.unlink(missing_ok=True)
    journal = Journal(path, CONFIG)
    journal.append(0, [_point(0), _point(1)], [{"time_s": 0.1}])
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    done = Journal(path, CONFIG).completed()
    assert 0 in done  # the good chunk survives whatever follows it
    for start, (points, _) in done.items():
        assert start % 2 == 0 and [p["index"] for p in points] == list(range(start, start + len(points)))
        assert all(isinstance(PointResult(**p), PointResult) for p in points)
    journal.finish()


_FIELDS = ["dataset", "eps", "seed", "n_examples", "clean_accuracy", "robust_accuracy", "stages", "flags",
           "check_details", "baselines", "metrics", "curve", "model", "created", "points", "schema_version"]


@_FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(_FIELDS), _json), min_size=1, max_size=3))
def test_any_record_fields_give_a_record_or_a_clear_error(tmp_path: Path, changes: list) -> None:
    data = make_record(make_card("Fuzz2020Model"), 0.9, 0.5).to_dict()
    for name, value in changes:
        data[name] = value
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data))
    try:
        record = read_record(path)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(record, EvaluationResult) and all(isinstance(p, PointResult) for p in record.points)
    assert all(isinstance(f, str) for f in record.flags) and 0 <= record.robust_accuracy <= 1


@_FUZZ
@given(text=st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_any_bytes_as_a_record_give_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError):
        read_record(path)


def _with_points(n: int = 4) -> dict:
    """A record of ``n`` points, two of them robust, whose accuracies agree with its points."""
    data = make_record(make_card("Fuzz2020Model"), 1.0, 0.5, n_examples=n).to_dict()
    data["points"] = [{**_point(i), "robust": i % 2 == 0, "broken_by": None if i % 2 == 0 else "apgd-ce"} for i in range(n)]
    return data


@pytest.mark.parametrize("change, says", [
    ({"robust_accuracy": 0.95, "clean_accuracy": 0.9}, "exceeds the clean accuracy"),
    ({"n_examples": -1, "points": []}, "n_examples: -1 is negative"),
    ({"eps": 0.0}, "eps: 0.0 is not a positive number"),
    ({"dataset": "../x"}, "dataset: '../x' may only use"),
    ({"model": {"id": "a/b"}}, "model.id: 'a/b' may only use"),
    ({"robust_accuracy": 0.75}, "robust_accuracy: 0.75 but the points say 2/4"),  # an edited number
    ({"n_examples": 5}, "4 results for 4 distinct points, but n_examples is 5"),  # a deleted point
])
def test_records_that_cannot_be_true_are_refused(tmp_path: Path, change: dict, says: str) -> None:
    """Well-typed but impossible: found by benchmarks/hostile_inputs.py, read as if true before."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_with_points()))
    assert read_record(path).robust_accuracy == 0.5
    path.write_text(json.dumps({**_with_points(), **change}))
    with pytest.raises(ValueError, match=re.escape(says)):
        read_record(path)


@pytest.mark.parametrize("eps, message", [
    ("abc", "eps must be a number in [0, inf], got 'abc'"),
    (float("nan"), "eps must be a number in [0, inf], got nan"),
    (0.1, "eps: 0.1, but a corruptions record has no eps (null)"),
])
def test_a_corruptions_record_with_an_eps_is_refused_by_name(tmp_path, eps, message):
    from benchmark.corruptions import CORRUPTIONS
    from leaderboard.sources import read_record
    from leaderboard.synthetic import make_card, make_corruption_record

    card = make_card("Corr2020Model", "digits", "corruptions")
    data = make_corruption_record(card, 0.99, {name: [0.9] * 5 for name in CORRUPTIONS}).to_dict()
    path = tmp_path / "record.json"
    path.write_text(json.dumps({**data, "eps": eps}), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_record(path)
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "not a JSON object"), ("{", "not valid JSON"),
    ('{"schema_version": "1"}', "schema_version '1' is not one this robench reads (up to 1)"),
])
def test_a_record_file_that_is_not_a_record_object_says_so(tmp_path, text, message):
    from leaderboard.sources import read_record

    path = tmp_path / "record.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_record(path)
    assert str(info.value).startswith(message)


def test_external_evaluations_are_read_back_whole_and_refused_by_name():
    from benchmark.external import ExternalEvaluation
    from leaderboard.entries import external_from_dict

    full = ExternalEvaluation("Madry2018Towards", "digits", "Linf", 0.2, "Jane Doe", "APGD", 0.5, "https://x.org/r",
                              "adv.safetensors", "submissions/digits/Linf/external/Madry2018Towards__Doe.yaml")
    assert external_from_dict(full.as_dict()) == full
    base = {"dataset": "digits", "threat_model": "Linf", "model_id": "M2020m", "attack": "APGD", "who": "me"}
    for acc in ("0.5", True, 1.5):
        with pytest.raises(ValueError, match=rf"^external robust_accuracy must be a fraction in \[0, 1\], got {re.escape(repr(acc))}$"):
            external_from_dict({**base, "robust_accuracy": acc})
    with pytest.raises(ValueError, match=r"^external evaluation lacks model_id, robust_accuracy$"):
        external_from_dict({k: v for k, v in base.items() if k != "model_id"})
    with pytest.raises(ValueError, match=r"^external evaluation of M2020m gives no eps and cifar100/L2 is no board$"):
        external_from_dict({**base, "dataset": "cifar100", "threat_model": "L2", "robust_accuracy": 0.5})


def test_every_import_report_and_bad_external_file_of_a_results_folder_is_read(tmp_path):
    from leaderboard.sources import EXTERNAL_SUFFIX, IMPORT_REPORT, load_results

    for board, note in (("a", "not imported: a.json"), ("b", "import warning: b.json")):
        (tmp_path / board).mkdir()
        (tmp_path / board / IMPORT_REPORT).write_text(f"{note}\n\n", encoding="utf-8")
    (tmp_path / "a" / f"X2020x{EXTERNAL_SUFFIX}").write_text("[1]", encoding="utf-8")
    loaded = load_results(tmp_path)
    assert loaded.import_notes == ["not imported: a.json", "import warning: b.json"]
    assert loaded.problems == [f"{tmp_path / 'a' / ('X2020x' + EXTERNAL_SUFFIX)}: an external evaluation must be a JSON object"]


def test_a_submitted_external_file_that_does_not_validate_is_named_with_its_reason(tmp_path):
    from leaderboard.sources import load_submitted_external

    folder = tmp_path / "digits" / "Linf" / "external"
    folder.mkdir(parents=True)
    (folder / "M2020m__Doe.yaml").write_text("model_id: M2020m\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not an evaluation", encoding="utf-8")
    found, problems = load_submitted_external(tmp_path)
    assert found == [] and len(problems) == 1
    assert problems[0].startswith(f"{folder / 'M2020m__Doe.yaml'}: dataset: required, a non-empty str; ")
    assert load_submitted_external(tmp_path / "nowhere") == ([], [])

