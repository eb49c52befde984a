"""Import and export of the field's de facto results format (docs/leaderboard.md, "Interchange").

One JSON file per model at ``<dataset>/<threat_model>/<ModelID>.json`` with accuracies as
percent strings ("44.04"), eps as text ("8/255"), ``additional_data`` a bool,
``number_forward_passes`` an int, optional ``external`` (best known robust accuracy from a
stronger attack), ``footnote`` (HTML) and ``unreliable`` (bool).

Import writes, per model, a robench record (``<id>.standard.json``: version "standard", seed
and number of points unknown, so 0), a listed model (``<id>.card.json``, which keeps the file's
exact text for the export) and, when the file has ``external``, an external evaluation
(``<id>.external.json``). The folders decide the dataset and the threat model; an eps written as
a rounded decimal ("0.031" for 8/255) is the board's when it is within the rounding of what is
written. A corruptions file (``"eps": null``, ``corruptions_acc`` instead of ``autoattack_acc``,
optionally ``corruptions_mce``, ``corruptions_acc_3d``, ``corruptions_mce_3d``) becomes a corruptions
record; the ``unaggregated_results.csv`` table beside it gives each model's accuracy per (corruption,
severity), which its record keeps for the model page's heat map. The tables themselves are kept as
they are (``<name>.kept.csv``) and exported back byte for byte. Every warning and every refusal is
reported by file; a malformed file does not stop the others.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from benchmark.budgets import BOARDS, CORRUPTIONS, format_eps
from benchmark.record import CorruptionDetails, EvaluationResult, write_json_atomic
from benchmark.record import record_path
from benchmark.threat_models import get_threat_model, parse_eps

from model_zoo.cards import PaperListing, ReportedListing

from .aggregate import Aggregation
from .entries import SAFE_ID, ImportedListing
from .sources import CARD_SUFFIX, EXTERNAL_SUFFIX, IMPORT_REPORT, KEPT_SUFFIX

__all__ = ["ImportReport", "ImportedModel", "read_defacto_file", "import_dir", "export_dir", "percent_text",
           "IMPORTED_ATTACK", "IMPORTED_WHO", "KEPT_SUFFIX", "IMPORT_REPORT", "read_unaggregated", "eps_matches_board"]

#: how an imported ``external`` value is described (the format does not say who or how)
IMPORTED_ATTACK = "stronger attack (imported)"
IMPORTED_WHO = "not named in the imported file"
_YEAR_IN_ID = re.compile(r"^[A-Za-z]+((?:19|20)\d\d)")
#: the corruptions files' figures beyond clean_acc and corruptions_acc -> the record's CorruptionDetails field
_CORRUPTION_FIGURES = {"corruptions_mce": "mce", "corruptions_acc_3d": "accuracy_3d", "corruptions_mce_3d": "mce_3d"}


@dataclass
class ImportedModel:
    model: ImportedListing
    record: EvaluationResult
    external: dict[str, Any] | None = None
    #: what the import noticed and decided about this file
    warnings: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    #: source files imported
    imported: list[Path] = field(default_factory=list)
    #: source files kept as they are (no board for their threat model yet)
    kept: list[Path] = field(default_factory=list)
    #: "path: reason" for every file that was not imported
    problems: list[str] = field(default_factory=list)
    #: "path: what was noticed" for files imported or kept all the same
    warnings: list[str] = field(default_factory=list)
    #: files written under the output folder
    written: list[Path] = field(default_factory=list)


def _written_rounding(written: Any) -> float | None:
    """Half a unit of the last decimal written ("0.031": 0.0005), or None for a fraction, an integer or a
    value that is not a plain decimal (then only an exact match counts)."""
    text = written.strip() if isinstance(written, str) else repr(written) if isinstance(written, float) else ""
    if not text or "/" in text:
        return None
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation:
        return None
    return 0.5 * 10.0 ** exponent if isinstance(exponent, int) and exponent < 0 else None


def eps_matches_board(written: Any, board_eps: float) -> tuple[bool, bool]:
    """(whether the written eps is the board's, whether only within the rounding of what is written)."""
    value = parse_eps(written)
    if math.isclose(value, board_eps, rel_tol=1e-9, abs_tol=1e-12):
        return True, False
    half_unit = _written_rounding(written)
    return (half_unit is not None and abs(value - board_eps) <= half_unit * (1 + 1e-9)), True


def _percent(data: dict[str, Any], name: str, required: bool) -> float | None:
    """A percentage written as a string or a number -> a fraction in [0, 1]."""
    value = data.get(name)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            raise ValueError(f"'{name}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"'{name}' must be a percentage like \"44.04\", got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"'{name}' must be a percentage like \"44.04\", got {value!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 100.0:
        raise ValueError(f"'{name}' must be a percentage in [0, 100], got {value!r}")
    return number / 100.0


def _non_negative(data: dict[str, Any], name: str) -> float | None:
    """A number that is not a fraction (an mCE, 100 for the reference model), written as a string or a number."""
    value = data.get(name)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, (str, int, float)) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"'{name}' must be a non-negative number like \"65.3\", got {value!r}")
    return number


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string, got {type(value).__name__}")
    return value.strip()


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false, got {value!r}")
    return value


def _forward_passes(data: dict[str, Any]) -> int:
    value = data.get("number_forward_passes", 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"'number_forward_passes' must be a positive integer, got {value!r}")
    return value


def _authors(data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("authors", "")
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return tuple(a.strip() for a in value if a.strip())
    if isinstance(value, str):
        return tuple(a.strip() for a in value.split(",") if a.strip())
    raise ValueError(f"'authors' must be a string or a list of strings, got {type(value).__name__}")


def _load_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _kept_name(name: str) -> str:
    """``x.json`` -> ``x.kept.json``, ``x.csv`` -> ``x.kept.csv``: what a kept file is stored as."""
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.kept.{suffix}"


def _check_unaggregated(path: Path, root: Path) -> list[list[str]]:
    """An ``unaggregated_results*.csv`` in a corruptions folder: two header rows (corruption names, then
    severities 1..5 under each), then one row per model with a value per (corruption, severity)."""
    import csv

    parts = path.relative_to(root).parts
    if len(parts) != 3 or parts[1] != CORRUPTIONS:
        raise ValueError("an unaggregated_results table belongs at <dataset>/corruptions/")
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    if len(rows) < 2:
        raise ValueError("expected two header rows (corruptions, then severities 1..5) and one row per model")
    width = len(rows[0])
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != width]
    if bad:
        raise ValueError(f"rows {bad[:5]} do not have the header's {width} columns")
    severities = {cell.strip() for cell in rows[1][1:] if cell.strip()}
    if not severities <= {"1", "2", "3", "4", "5"}:
        raise ValueError(f"the second header row must give severities 1..5, got {sorted(severities)[:5]}")
    return rows


def read_unaggregated(path: Path, root: Path) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """The per-(corruption, severity) accuracies of an ``unaggregated_results.csv``: {model id: {corruption:
    [severity 1..5]}} as fractions, and a note for each row that cannot be read (the table itself is kept
    either way). The first column names the model; the first header row names each column's corruption
    (written once over its five columns, or over each), the second its severity."""
    rows = _check_unaggregated(path, root)
    corruption, columns = "", []
    for name, severity in zip(rows[0][1:], rows[1][1:]):
        corruption = name.strip() or corruption
        columns.append((corruption, severity.strip()))
    notes, tables = [], {}
    for number, row in enumerate(rows[2:], start=3):
        model_id = row[0].strip()
        table: dict[str, list[float | None]] = {}
        try:
            for (name, severity), cell in zip(columns, row[1:]):
                try:
                    value = float(cell)
                except ValueError:
                    raise ValueError(f"{cell!r} ({name}, severity {severity}) is not a number") from None
                if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                    raise ValueError(f"{cell!r} is not a fraction in [0, 1]")
                table.setdefault(name, [None] * 5)[int(severity) - 1] = value
            incomplete = [name for name, values in table.items() if None in values]
            if incomplete or not table:
                raise ValueError(f"severities missing for {', '.join(incomplete) or 'every corruption'}")
        except ValueError as exc:
            notes.append(f"row {number} ({model_id or 'no id'}): not read: {exc}")
            continue
        tables[model_id] = {name: [float(v) for v in values] for name, values in table.items()}  # type: ignore[arg-type]
    return tables, notes


def read_defacto_file(path: str | Path, root: str | Path) -> ImportedModel:
    """Read one file of the de facto format under ``root``; a ValueError says what is wrong with it."""
    path, root = Path(path), Path(root)
    parts = path.relative_to(root).parts
    if len(parts) != 3:
        raise ValueError("not at <dataset>/<threat_model>/<ModelID>.json")
    dataset, threat_folder, model_id = parts[0], parts[1], Path(parts[2]).stem
    if not SAFE_ID.fullmatch(model_id):
        raise ValueError(f"model id {model_id!r} may only use letters, digits, '_', '.', '-'")
    if not SAFE_ID.fullmatch(dataset):
        raise ValueError(f"dataset folder {dataset!r} may only use letters, digits, '_', '.', '-'")
    warnings = []
    corrupted = threat_folder == CORRUPTIONS
    try:
        threat = CORRUPTIONS if corrupted else get_threat_model(threat_folder).name
    except ValueError:
        raise ValueError(f"threat model {threat_folder!r} has no robench board (Linf, L2, corruptions)") from None
    data = _load_object(path)
    if "dataset" in data and data["dataset"] != dataset:  # the folder is what the source leaderboard goes by
        warnings.append(f"'dataset' says {data['dataset']!r}; the folder's {dataset!r} is used")
    eps: float | None = None
    if corrupted:
        if data.get("eps") is not None:
            warnings.append(f"eps {data['eps']!r} ignored: the corruptions threat model has none")
    elif data.get("eps") is None:
        raise ValueError("'eps' is missing (null eps means corruptions, whose files belong in a 'corruptions' folder)")
    else:
        try:
            eps = parse_eps(data["eps"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"'eps': {exc}") from None
    if not corrupted and (dataset, threat) in BOARDS:
        board_eps, board_text = BOARDS[(dataset, threat)]
        same, rounded = eps_matches_board(data["eps"], board_eps)
        if not same:
            raise ValueError(f"eps {data['eps']!r} is not the {dataset}/{threat} board's {board_text}, "
                             f"not even within the rounding of what is written")
        if rounded:
            warnings.append(f"eps {data['eps']!r} taken as the board's {board_text} (equal within the rounding of what is written)")
        eps = board_eps
    clean = _percent(data, "clean_acc", required=True)
    robust = _percent(data, "corruptions_acc" if corrupted else "autoattack_acc", required=True)
    details = None
    if corrupted:
        figures = {key: _non_negative(data, name) for name, key in _CORRUPTION_FIGURES.items()}
        figures["accuracy_3d"] = _percent(data, "corruptions_acc_3d", required=False)
        details = CorruptionDetails(**figures)
    reported = _percent(data, "reported", required=False)
    external = _percent(data, "external", required=False)
    footnote = _text(data, "footnote") or None
    unreliable = _bool(data, "unreliable", False)
    year = _YEAR_IN_ID.match(model_id)
    source = "/".join(parts)
    try:
        model = ImportedListing(
            id=model_id, dataset=dataset, threat_model=threat, eps=eps,
            paper=PaperListing(title=_text(data, "name"), link=_text(data, "link"), authors=_authors(data),
                               venue=_text(data, "venue"), year=int(year.group(1)) if year else None),
            architecture=_text(data, "architecture"), additional_data=_bool(data, "additional_data", False),
            number_forward_passes=_forward_passes(data), reported=ReportedListing(robust_accuracy=reported),
            footnote=footnote, imported_from=source, source_text=path.read_text(encoding="utf-8"),
            warnings=tuple(warnings),
        )
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    record = EvaluationResult(
        dataset=dataset, threat_model=threat, eps=eps, version="standard", seed=0, n_examples=0, batch_size=0,
        device="", clean_accuracy=clean, robust_accuracy=robust,  # type: ignore[arg-type]
        flags=["unreliable"] if unreliable else [], model={"id": model_id, "name": model.paper.title, "imported_from": source},
        corruptions=details,
    )
    ext = None
    if external is not None:
        ext = {"model_id": model_id, "dataset": dataset, "threat_model": threat, "eps": eps,
               "robust_accuracy": external, "attack": IMPORTED_ATTACK, "who": IMPORTED_WHO, "link": "",
               "source_file": source}
    return ImportedModel(model, record, ext, warnings)


def import_dir(source: str | Path, out: str | Path) -> ImportReport:
    """Import every ``<dataset>/<threat_model>/<ModelID>.json`` under ``source`` into ``out``."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"folder to import {source} does not exist")
    report = ImportReport()
    per_set: dict[tuple[str, str], dict[str, list[float]]] = {}
    for path in sorted(source.rglob("unaggregated_results*.csv")):
        try:
            tables, notes = read_unaggregated(path, source)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        report.warnings += [f"{path}: {note}" for note in notes]
        if path.name == "unaggregated_results.csv":  # the 15 corruptions; the _3d table is kept only
            per_set.update({(path.parent.parent.name, model_id): table for model_id, table in tables.items()})
        kept = out / path.relative_to(source).parent / _kept_name(path.name)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(path.read_bytes())
        report.written.append(kept)
        report.kept.append(path)
    placed: set[tuple[str, str]] = set()
    for path in sorted(source.rglob("*.json")):
        try:
            item = read_defacto_file(path, source)
        except (ValueError, OSError) as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        report.warnings += [f"{path}: {w}" for w in item.warnings]
        m, record = item.model, item.record
        if record.corruptions is not None and (m.dataset, m.id) in per_set:
            record.corruptions.accuracy = per_set[(m.dataset, m.id)]
            placed.add((m.dataset, m.id))
        record_file = record_path(out, m.dataset, m.threat_model, m.id, record.version)
        report.written.append(record.save(record_file))
        report.written.append(write_json_atomic(record_file.parent / f"{m.id}{CARD_SUFFIX}", m.model_dump(mode="json")))
        external_file = record_file.parent / f"{m.id}{EXTERNAL_SUFFIX}"
        if item.external is not None:
            report.written.append(write_json_atomic(external_file, item.external))
        else:
            external_file.unlink(missing_ok=True)  # a re-import must not keep a stale one
        report.imported.append(path)
    for dataset, model_id in sorted(set(per_set) - placed):
        report.warnings.append(f"{source / dataset / CORRUPTIONS / 'unaggregated_results.csv'}: row {model_id!r} "
                               "matches no imported corruptions file: its accuracies are kept in the table only")
    lines = [f"not imported: {p}" for p in report.problems] + [f"import warning: {w}" for w in report.warnings]
    out.mkdir(parents=True, exist_ok=True)
    (out / IMPORT_REPORT).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    report.written.append(out / IMPORT_REPORT)
    return report


def percent_text(fraction: float) -> str:
    """A fraction as the format's percent string: two decimals when exact, else as many as needed."""
    value = 100.0 * fraction
    two = f"{value:.2f}"
    return two if math.isclose(float(two), value, rel_tol=0, abs_tol=1e-9) else repr(round(value, 10))


#: fields robench may give a new value to when it exports an imported entry (its evaluations and flags);
#: every other field of an imported file is written back as it was
_ROBENCH_FIELDS = ("clean_acc", "autoattack_acc", "corruptions_acc", *_CORRUPTION_FIGURES, "external", "unreliable")


def _same_value(old: Any, new: Any) -> bool:
    """Equal as numbers (within float noise; booleans too, as 0 and 1), else equal as written."""
    try:
        return math.isclose(float(old), float(new), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return old == new


def _merged_with_source(source_text: str, generated: dict[str, Any]) -> str:
    """An imported file's text with only what robench changed replaced: the file as it was when nothing did."""
    original = json.loads(source_text)
    merged = dict(original)
    for key in _ROBENCH_FIELDS:
        new = generated.get(key)
        if key == "external" and new is None:  # not below the row's own result (equal, as some files write it): kept
            continue
        if new is None and original.get(key) in ("", None):  # an empty figure ("corruptions_mce_3d": ""): as written
            continue
        if key in original and (new is None or not _same_value(original[key], new)):
            if new is None:
                del merged[key]
            else:
                merged[key] = new
        elif key not in original and new is not None and not (key == "unreliable" and new is False):
            merged[key] = new
    return source_text if merged == original else json.dumps(merged, indent=2, ensure_ascii=False) + "\n"


def export_dir(aggregation: Aggregation, out: str | Path, kept_from: str | Path | None = None) -> list[Path]:
    """Write every ranked board row in the de facto format under ``out``; return the files written.

    ``external`` is written when the best known robust accuracy is below the row's own result;
    ``unreliable`` is true when any flag fired. An imported entry is written back as its file was,
    but for those values robench changed. ``kept_from``: a results folder whose kept files
    (``*.kept.csv``: the imported ``unaggregated_results`` tables) are written back too, byte for byte.
    """
    out = Path(out)
    written = []
    for board in aggregation.boards.values():
        for model_id in board.table["model_id"]:
            entry = aggregation.models[(board.dataset, board.threat_model, model_id)]
            m, record = entry.model, entry.board_record
            assert record is not None and entry.best_known is not None  # rows exist only for evaluated models
            data: dict[str, Any] = {
                "link": m.paper.link, "name": m.paper.title, "authors": ", ".join(m.paper.authors),
                "additional_data": m.additional_data, "number_forward_passes": m.number_forward_passes,
                "dataset": m.dataset, "venue": m.paper.venue, "architecture": m.architecture_label,
                "eps": None if board.eps is None else format_eps(board.dataset, board.threat_model, board.eps),
                "clean_acc": percent_text(record.clean_accuracy),
                "reported": percent_text(m.reported.robust_accuracy) if m.reported.robust_accuracy is not None else "",
                ("corruptions_acc" if board.is_corruptions else "autoattack_acc"): percent_text(record.robust_accuracy),
            }
            details = record.corruptions
            if details is not None:  # the figures the record has (mCE only against a reference model)
                data.update({name: f"{value:.2f}" for name, value in
                             (("corruptions_mce", details.mce), ("corruptions_mce_3d", details.mce_3d)) if value is not None})
                if details.accuracy_3d is not None:
                    data["corruptions_acc_3d"] = percent_text(details.accuracy_3d)
            if entry.best_known < record.robust_accuracy:
                data["external"] = percent_text(entry.best_known)
            if m.footnote:
                data["footnote"] = m.footnote
            data["unreliable"] = bool(record.flags)
            target = out / board.dataset / board.threat_model / f"{m.id}.json"
            source_text = getattr(m, "source_text", None)
            if source_text is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_merged_with_source(source_text, data), encoding="utf-8")
                written.append(target)
            else:
                written.append(write_json_atomic(target, data))
    if kept_from is not None:
        root = Path(kept_from)
        for kept in sorted([*root.rglob(f"*{KEPT_SUFFIX}"), *root.rglob("*.kept.csv")]):
            rel = kept.relative_to(root)
            if len(rel.parts) < 3:
                continue
            target = out.joinpath(*rel.parts[-3:-1], kept.name.replace(".kept.", ".", 1))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(kept.read_bytes())
            written.append(target)
    return written
