"""The mutation figures script reads mutmut's result files and counts each verdict once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# mutmut comes with the `mutation` extra (in the lock, so `make test` runs this); `pip install -e '.[test]'`
# alone does not install it
pytest.importorskip("mutmut")

from benchmarks.mutation_summary import main, read_results  # noqa: E402


def _meta(root: Path, module: str, codes: dict) -> None:
    path = root / f"{module}.meta"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


def test_verdicts_per_module(tmp_path: Path, capsys) -> None:
    _meta(tmp_path, "benchmark/checks.py", {"a__mutmut_1": 1, "a__mutmut_2": 0, "a__mutmut_3": 36, "a__mutmut_4": None})
    _meta(tmp_path, "benchmark/attacks/pgd.py", {"b__mutmut_1": 33, "b__mutmut_2": 35, "b__mutmut_3": -11})
    results = read_results(tmp_path)
    assert results == {
        "benchmark/attacks/pgd.py": {"b__mutmut_1": "no tests", "b__mutmut_2": "other", "b__mutmut_3": "killed"},
        "benchmark/checks.py": {"a__mutmut_1": "killed", "a__mutmut_2": "survived", "a__mutmut_3": "killed",
                                "a__mutmut_4": "not checked"},
    }
    assert main(["--mutants", str(tmp_path), "--survivors"]) == 0
    out = capsys.readouterr().out
    assert "| benchmark/checks.py | 2 | 1 | 0 | 1 | 0 | 4 | 50.0% |" in out
    assert "| all | 3 | 1 | 1 | 1 | 1 | 7 | 42.9% |" in out
    assert "  a__mutmut_2 (survived)" in out and "  b__mutmut_1 (no tests)" in out
    assert "a__mutmut_1 (" not in out


def test_no_results_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["--mutants", str(tmp_path)]) == 1
    assert "make mutation" in capsys.readouterr().out
