"""Reading a results folder (records, imported model entries, external evaluations) and the
external evaluations of a submissions folder.

Under the results folder (searched recursively):
- ``*.card.json``: an ImportedListing (written by ``robench leaderboard import``);
- ``*.external.json``: one external evaluation (a dict) or a list of them;
- ``*.kept.json``, ``*.kept.csv``: imported files of a threat model with no board yet, kept as they are;
- ``import-report.txt``: the import's refusals and warnings, for the build notes;
- any other ``*.json``: an EvaluationResult record (an attack's or a corruptions evaluation's).
A file that cannot be read is reported with its reason; the others are still loaded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.record import SCHEMA_VERSION, EvaluationResult

from benchmark.external import ExternalEvaluation, read_external

from .entries import ImportedListing, external_from_dict, read_listing

__all__ = ["CARD_SUFFIX", "EXTERNAL_SUFFIX", "KEPT_SUFFIX", "IMPORT_REPORT", "LoadedResults", "load_results", "read_record", "load_submitted_external"]

CARD_SUFFIX = ".card.json"
EXTERNAL_SUFFIX = ".external.json"
KEPT_SUFFIX = ".kept.json"
IMPORT_REPORT = "import-report.txt"


@dataclass
class LoadedResults:
    records: list[EvaluationResult] = field(default_factory=list)
    listed: list[ImportedListing] = field(default_factory=list)
    external: list[ExternalEvaluation] = field(default_factory=list)
    #: "path: reason" for every file that could not be read
    problems: list[str] = field(default_factory=list)
    #: imported files kept as they are (no board for their threat model yet)
    kept: list[Path] = field(default_factory=list)
    #: what imports reported (refusals, warnings), one line each
    import_notes: list[str] = field(default_factory=list)


def _number(data: dict[str, Any], name: str, low: float, high: float) -> None:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


def read_record(path: str | Path) -> EvaluationResult:
    """Load one record, with a ValueError saying what is wrong with the file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    schema = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise ValueError(f"schema_version {schema!r} is not one this robench reads (up to {SCHEMA_VERSION})")
    for name in ("dataset", "threat_model", "version"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"{name} must be a non-empty string, got {data.get(name)!r}")
    _number(data, "clean_accuracy", 0.0, 1.0)
    _number(data, "robust_accuracy", 0.0, 1.0)
    if data.get("eps") is not None or data.get("threat_model") != "corruptions":  # corruptions: no eps
        _number(data, "eps", 0.0, math.inf)
    if not isinstance(data.get("model"), dict) or not data["model"].get("id"):
        raise ValueError("model.id is missing")
    return EvaluationResult.from_json(text)  # every field against its declared type (RecordError: a ValueError)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None


def load_results(results_dir: str | Path) -> LoadedResults:
    """Everything under ``results_dir``; a missing folder is an error, unreadable files are problems."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist")
    loaded = LoadedResults()
    loaded.kept += sorted(root.rglob("*.kept.csv"))
    for report in sorted(root.rglob(IMPORT_REPORT)):
        loaded.import_notes += [line for line in report.read_text(encoding="utf-8").splitlines() if line.strip()]
    for path in sorted(root.rglob("*.json")):
        try:
            if path.name.endswith(KEPT_SUFFIX):
                loaded.kept.append(path)
            elif path.name.endswith(CARD_SUFFIX):
                loaded.listed.append(read_listing(_read_json(path)))
            elif path.name.endswith(EXTERNAL_SUFFIX):
                data = _read_json(path)
                for item in data if isinstance(data, list) else [data]:
                    if not isinstance(item, dict):
                        raise ValueError("an external evaluation must be a JSON object")
                    loaded.external.append(external_from_dict(item))
            else:
                loaded.records.append(read_record(path))
        except (ValueError, OSError) as exc:
            loaded.problems.append(f"{path}: {exc}")
    return loaded


def load_submitted_external(submissions_dir: str | Path) -> tuple[list[ExternalEvaluation], list[str]]:
    """The external evaluations ``<dataset>/<threat_model>/external/*.{yaml,yml,json}`` of a submissions folder,
    and "path: reason" for each file that does not validate."""
    root = Path(submissions_dir)
    found: list[ExternalEvaluation] = []
    problems: list[str] = []
    if not root.is_dir():
        return found, problems
    for path in sorted(root.glob("*/*/external/*")):
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            continue
        try:
            found.append(read_external(path))
        except (ValueError, OSError) as exc:
            problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    return found, problems
