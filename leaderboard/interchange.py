"""Import and export of the field's de facto results format (docs/leaderboard.md, "Interchange").

One JSON file per model at ``<dataset>/<threat_model>/<ModelID>.json`` with accuracies as
percent strings ("44.04"), eps as text ("8/255"), ``additional_data`` a bool,
``number_forward_passes`` an int, optional ``external`` (best known robust accuracy from a
stronger attack), ``footnote`` (HTML) and ``unreliable`` (bool).

Import writes, per model, a robench record (``<id>.standard.json``: version "standard", seed
and number of points unknown, so 0), a listed model (``<id>.card.json``) and, when the file has
``external``, an external evaluation (``<id>.external.json``). Malformed files are reported one
by one with the reason; the others are still imported.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from benchmark.budgets import BOARDS, format_eps
from benchmark.record import EvaluationResult, write_json_atomic
from benchmark.record import record_path
from benchmark.threat_models import get_threat_model, parse_eps

from model_zoo.cards import PaperListing, ReportedListing

from .aggregate import Aggregation
from .entries import SAFE_ID, ImportedListing
from .sources import CARD_SUFFIX, EXTERNAL_SUFFIX

__all__ = ["ImportReport", "ImportedModel", "read_defacto_file", "import_dir", "export_dir", "percent_text",
           "IMPORTED_ATTACK", "IMPORTED_WHO"]

#: how an imported ``external`` value is described (the format does not say who or how)
IMPORTED_ATTACK = "stronger attack (imported)"
IMPORTED_WHO = "not named in the imported file"
_YEAR_IN_ID = re.compile(r"^[A-Za-z]+((?:19|20)\d\d)")


@dataclass
class ImportedModel:
    model: ImportedListing
    record: EvaluationResult
    external: dict[str, Any] | None = None


@dataclass
class ImportReport:
    #: source files imported
    imported: list[Path] = field(default_factory=list)
    #: "path: reason" for every file that was not imported
    problems: list[str] = field(default_factory=list)
    #: files written under the output folder
    written: list[Path] = field(default_factory=list)


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment (tags dropped, entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_to_text(fragment: str) -> str:
    parser = _TextOnly()
    parser.feed(fragment)
    parser.close()
    return " ".join("".join(parser.parts).split())


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
    try:
        threat = get_threat_model(threat_folder).name
    except ValueError:
        raise ValueError(f"threat model {threat_folder!r} has no robench board (Linf and L2 only)") from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if "dataset" in data and data["dataset"] != dataset:
        raise ValueError(f"'dataset' is {data['dataset']!r} but the file lies in the {dataset!r} folder")
    if data.get("eps") is None:
        raise ValueError("'eps' is missing (null eps means corruptions, which robench has no board for)")
    try:
        eps = parse_eps(data["eps"])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"'eps': {exc}") from None
    if (dataset, threat) in BOARDS and not math.isclose(eps, BOARDS[(dataset, threat)][0], rel_tol=1e-6):
        raise ValueError(f"eps {data['eps']!r} is not the {dataset}/{threat} board's {BOARDS[(dataset, threat)][1]}")
    clean = _percent(data, "clean_acc", required=True)
    robust = _percent(data, "autoattack_acc", required=True)
    reported = _percent(data, "reported", required=False)
    external = _percent(data, "external", required=False)
    footnote = _html_to_text(_text(data, "footnote")) or None
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
            footnote=footnote, imported_from=source,
        )
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    record = EvaluationResult(
        dataset=dataset, threat_model=threat, eps=eps, version="standard", seed=0, n_examples=0, batch_size=0,
        device="", clean_accuracy=clean, robust_accuracy=robust,  # type: ignore[arg-type]
        flags=["unreliable"] if unreliable else [], model={"id": model_id, "name": model.paper.title, "imported_from": source},
    )
    ext = None
    if external is not None:
        ext = {"model_id": model_id, "dataset": dataset, "threat_model": threat, "eps": eps,
               "robust_accuracy": external, "attack": IMPORTED_ATTACK, "who": IMPORTED_WHO, "link": "",
               "source_file": source}
    return ImportedModel(model, record, ext)


def import_dir(source: str | Path, out: str | Path) -> ImportReport:
    """Import every ``<dataset>/<threat_model>/<ModelID>.json`` under ``source`` into ``out``."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"folder to import {source} does not exist")
    report = ImportReport()
    for path in sorted(source.rglob("*.json")):
        try:
            item = read_defacto_file(path, source)
        except (ValueError, OSError) as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        m = item.model
        record_file = record_path(out, m.dataset, m.threat_model, m.id, item.record.version)
        report.written.append(item.record.save(record_file))
        report.written.append(write_json_atomic(record_file.parent / f"{m.id}{CARD_SUFFIX}", m.model_dump(mode="json")))
        external_file = record_file.parent / f"{m.id}{EXTERNAL_SUFFIX}"
        if item.external is not None:
            report.written.append(write_json_atomic(external_file, item.external))
        else:
            external_file.unlink(missing_ok=True)  # a re-import must not keep a stale one
        report.imported.append(path)
    return report


def percent_text(fraction: float) -> str:
    """A fraction as the format's percent string: two decimals when exact, else as many as needed."""
    value = 100.0 * fraction
    two = f"{value:.2f}"
    return two if math.isclose(float(two), value, rel_tol=0, abs_tol=1e-9) else repr(round(value, 10))


def export_dir(aggregation: Aggregation, out: str | Path) -> list[Path]:
    """Write every ranked board row in the de facto format under ``out``; return the files written.

    ``external`` is written when the best known robust accuracy is below the row's own result;
    ``unreliable`` is true when any flag fired.
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
                "dataset": m.dataset, "venue": m.paper.venue, "architecture": m.architecture_label, "eps": format_eps(board.dataset, board.threat_model, board.eps),
                "clean_acc": percent_text(record.clean_accuracy),
                "reported": percent_text(m.reported.robust_accuracy) if m.reported.robust_accuracy is not None else "",
                "autoattack_acc": percent_text(record.robust_accuracy),
            }
            if entry.best_known < record.robust_accuracy:
                data["external"] = percent_text(entry.best_known)
            if m.footnote:
                data["footnote"] = html.escape(m.footnote)
            data["unreliable"] = bool(record.flags)
            written.append(write_json_atomic(out / board.dataset / board.threat_model / f"{m.id}.json", data))
    return written
