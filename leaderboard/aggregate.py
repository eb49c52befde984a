"""Aggregation: result records + model cards -> one ranked table per board, with one column schema.

Rules:
- a record is matched to a model by (dataset, threat model, model id); records that match no
  model are returned in ``Aggregation.unmatched_records``, named in a logged warning and still
  listed in ``all_results.csv`` (nothing is dropped silently);
- a model evaluated twice with the same protocol version keeps the record created last; an imported
  record (another leaderboard's numbers) is kept beside robench's own, so that a model page shows
  both, and a board row prefers robench's;
- a model both in the zoo and imported is shown with its zoo card;
- a board row shows the model's "standard" record (else its record of the next protocol version);
  its best known robust accuracy is the minimum over that record, the model's other protocol
  versions and external evaluations at the board's eps; boards rank by it, ties by clean accuracy.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.budgets import BOARDS, CORRUPTED_SETS, format_eps, is_corruptions, same_eps
from benchmark.external import ExternalEvaluation
from benchmark.flags import REPORTED_TOLERANCE
from benchmark.protocol import PROTOCOLS, RANKED_VERSIONS
from benchmark.record import EvaluationResult
from model_zoo.cards import Listing

from .entries import external_from_dict, external_key

__all__ = [
    "STANDARD_ATTACKS", "CORRUPTION_COLUMNS", "VERIFICATION_COLUMNS", "BOARD_COLUMNS", "ALL_RESULTS_COLUMNS", "SHA_PREFIX", "VERSION_PREFERENCE",
    "ModelResults", "Board", "Aggregation", "aggregate", "write_csvs", "board_file_name",
]

log = logging.getLogger(__name__)

#: a corruptions board's figures beside its mean accuracy (in robust_accuracy): mCE, and the 3D corruptions'
#: mean accuracy and mCE where given (empty on the Lp boards)
CORRUPTION_COLUMNS: tuple[str, ...] = ("corruptions_mce", "corruptions_accuracy_3d", "corruptions_mce_3d")
#: the verifier's side (benchmark.verification): certified accuracy, the exact robust accuracy when every point was
#: decided, and the number of undecided points (empty where the record was not verified)
VERIFICATION_COLUMNS: tuple[str, ...] = ("certified_accuracy", "exact_accuracy", "undecided")
#: one column per attack of the standard protocol (robust accuracy after that attack)
STANDARD_ATTACKS: tuple[str, ...] = tuple(entry.name for entry in PROTOCOLS["standard"])
BOARD_COLUMNS: tuple[str, ...] = (
    "rank", "model_id", "paper", "venue", "architecture", "additional_data",
    "clean_accuracy", "robust_accuracy", "best_known_robust_accuracy", *VERIFICATION_COLUMNS, *STANDARD_ATTACKS, *CORRUPTION_COLUMNS,
    "flags", "eps", "n_examples", "version", "date", "checkpoint_sha256",
)
ALL_RESULTS_COLUMNS: tuple[str, ...] = ("dataset", "threat_model", *BOARD_COLUMNS)
SHA_PREFIX = 12
#: the protocol version a board row shows, in order of preference
VERSION_PREFERENCE: tuple[str, ...] = tuple(PROTOCOLS)


@dataclass
class ModelResults:
    """Everything known about one model: kept records (one per protocol version), external evaluations."""

    model: Listing
    records: list[EvaluationResult] = field(default_factory=list)
    external: list[ExternalEvaluation] = field(default_factory=list)
    #: the record its board row shows (None: no record at the board's eps)
    board_record: EvaluationResult | None = None
    best_known: float | None = None
    #: where the best known robust accuracy comes from, in words
    best_known_source: str = ""
    rank: int | None = None


@dataclass
class Board:
    dataset: str
    threat_model: str
    #: None on a corruptions board
    eps: float | None
    #: rows in rank order, columns BOARD_COLUMNS
    table: pd.DataFrame
    #: listed models with no record at the board's eps yet
    pending: list[Listing] = field(default_factory=list)

    @property
    def name(self) -> str:
        return board_file_name(self.dataset, self.threat_model)

    @property
    def eps_text(self) -> str:
        return format_eps(self.dataset, self.threat_model, self.eps)

    @property
    def is_corruptions(self) -> bool:
        return is_corruptions(self.threat_model)

    @property
    def budget_text(self) -> str:
        """What the board measures against: "eps 8/255", or the corrupted sets' name ("digits-C")."""
        return CORRUPTED_SETS.get(self.dataset, "corrupted sets") if self.is_corruptions else f"eps {self.eps_text}"


@dataclass
class Aggregation:
    boards: dict[tuple[str, str], Board]
    models: dict[tuple[str, str, str], ModelResults]
    #: every kept record (and every unmatched one), columns ALL_RESULTS_COLUMNS
    all_results: pd.DataFrame
    unmatched_records: list[EvaluationResult]
    unmatched_external: list[ExternalEvaluation]
    #: every warning logged while aggregating, in words
    warnings: list[str]


def board_file_name(dataset: str, threat_model: str) -> str:
    return f"{dataset}_{threat_model}"


def _created_key(record: EvaluationResult) -> float:
    """Seconds since the epoch of ``created`` (naive times read as UTC); unknown dates sort first."""
    try:
        when = _dt.datetime.fromisoformat(record.created)
    except (TypeError, ValueError):
        return -math.inf
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def _version_rank(version: str) -> tuple[int, str]:
    order = VERSION_PREFERENCE.index(version) if version in VERSION_PREFERENCE else len(VERSION_PREFERENCE)
    return (order, version)


def _eps_text(eps: float | None) -> str:
    return "no eps" if eps is None else f"eps {eps:.6g}"


def _describe(record: EvaluationResult) -> str:
    return (f"{record.dataset}/{record.threat_model}/{record.model.get('id', '?')} "
            f"({record.version}, created {record.created or 'unknown'})")


def row_flags(model: Listing | None, record: EvaluationResult) -> list[str]:
    """The record's flags, and those the leaderboard adds from the card (``reported_not_reproduced``, only for
    robench's own evaluations: an imported record's numbers were not measured here)."""
    flags = list(record.flags)
    reported = model.reported.robust_accuracy if model is not None else None
    if reported is not None and not _is_imported(record) and record.robust_accuracy < reported - REPORTED_TOLERANCE:
        flags.append("reported_not_reproduced")
    return flags


def _verification_cells(record: EvaluationResult) -> dict[str, Any]:
    v = record.verification
    if v is None or v.status != "verified":
        return {"certified_accuracy": None, "exact_accuracy": None, "undecided": None}
    return {"certified_accuracy": v.certified_accuracy, "exact_accuracy": v.exact_accuracy, "undecided": v.undecided}


def _row(model: Listing | None, record: EvaluationResult, best_known: float | None, rank: int | None) -> dict[str, Any]:
    per_attack = record.per_attack_accuracy
    details = record.corruptions
    sha = record.model.get("checkpoint_sha256") or (model.checkpoint_sha256 if model else None) or ""
    return {
        "dataset": record.dataset,
        "threat_model": record.threat_model,
        "rank": rank,
        "model_id": str(record.model.get("id", "")),
        "paper": model.paper.title if model else "",
        "venue": model.paper.venue if model else "",
        "architecture": model.architecture_label if model else "",
        "additional_data": model.additional_data if model else None,
        "clean_accuracy": float(record.clean_accuracy),
        "robust_accuracy": float(record.robust_accuracy),
        "best_known_robust_accuracy": best_known,
        **{name: per_attack.get(name, math.nan) for name in STANDARD_ATTACKS},
        **_verification_cells(record),
        "corruptions_mce": details.mce if details else None,
        "corruptions_accuracy_3d": details.accuracy_3d if details else None,
        "corruptions_mce_3d": details.mce_3d if details else None,
        "flags": ";".join(row_flags(model, record)),
        "eps": None if record.eps is None else float(record.eps),
        "n_examples": int(record.n_examples),
        "version": record.version,
        "date": record.created[:10],
        "checkpoint_sha256": str(sha)[:SHA_PREFIX],
    }


def _board_eps(key: tuple[str, str], models: list[Listing], warnings: list[str]) -> float | None:
    if key in BOARDS:
        eps = BOARDS[key][0]
    else:
        eps = models[0].eps
    for m in models:
        if not same_eps(m.eps, eps):
            warnings.append(f"{'/'.join(m.key)} is listed at {_eps_text(m.eps)} but its board uses {_eps_text(eps)}")
    return eps


def _rank(rows: list[ModelResults]) -> list[ModelResults]:
    """Sort by best known robust accuracy, then clean accuracy (both descending), then id; ties share a rank."""
    rows = sorted(rows, key=lambda r: (-r.best_known, -r.board_record.clean_accuracy, r.model.id))  # type: ignore[operator,union-attr]
    previous: tuple[float, float] | None = None
    for position, entry in enumerate(rows, start=1):
        score = (entry.best_known, entry.board_record.clean_accuracy)  # type: ignore[union-attr]
        entry.rank = rows[position - 2].rank if score == previous else position
        previous = score
    return rows


def _pick_board_record(entry: ModelResults, eps: float | None) -> None:
    on_board = sorted((r for r in entry.records if same_eps(r.eps, eps) and r.version in RANKED_VERSIONS),
                      key=lambda r: (_is_imported(r), _version_rank(r.version)))
    if not on_board:
        return
    entry.board_record = on_board[0]
    candidates: list[tuple[float, str]] = [
        (r.robust_accuracy, f"imported from {r.model['imported_from']}" if _is_imported(r) else f"robench '{r.version}' protocol")
        for r in on_board]
    candidates += [(e.robust_accuracy, f"{e.attack} by {e.who}") for e in entry.external if same_eps(e.eps, eps)]
    candidates += [(r.verification.upper, "exact verification (robench): points the attacks missed")
                   for r in on_board if r.verification is not None and r.verification.upper is not None
                   and r.verification.upper < r.robust_accuracy]
    entry.best_known, entry.best_known_source = min(candidates, key=lambda c: c[0])


def _is_imported(record: EvaluationResult) -> bool:
    return bool(record.model.get("imported_from"))


def aggregate(
    cards: Iterable[Listing],
    records: Iterable[EvaluationResult],
    external: Iterable[ExternalEvaluation | Mapping[str, Any]] = (),
) -> Aggregation:
    """Match records to models, keep the latest record per protocol version, rank every board."""
    warnings: list[str] = []
    models: dict[tuple[str, str, str], ModelResults] = {}
    for listed in cards:
        if not isinstance(listed, Listing):
            raise TypeError(f"expected a ModelCard or another Listing, got {type(listed).__name__}")
        known = models.get(listed.key)
        if known is None:
            models[listed.key] = ModelResults(listed)
        elif {known.model.origin, listed.origin} == {"submission", "imported"}:
            kept, dropped = (known.model, listed) if known.model.origin == "submission" else (listed, known.model)
            models[listed.key] = ModelResults(kept)
            warnings.append(f"{'/'.join(listed.key)} is both a zoo submission and an imported entry "
                            f"({dropped.source_file}); the submission's card is shown")
        else:
            raise ValueError(f"model {'/'.join(listed.key)} is listed twice "
                             f"({known.model.source_file} and {listed.source_file})")

    latest: dict[tuple[str, str, str, str, bool], EvaluationResult] = {}
    unmatched: list[EvaluationResult] = []
    for record in records:
        key = (record.dataset, record.threat_model, str(record.model.get("id", "")))
        if key not in models:
            unmatched.append(record)
            continue
        slot = (*key, record.version, _is_imported(record))
        if slot not in latest or _created_key(record) >= _created_key(latest[slot]):
            latest[slot] = record
    for (dataset, threat, model_id, _, _), record in sorted(latest.items(),
                                                           key=lambda kv: (_version_rank(kv[0][3]), kv[0][4])):
        models[(dataset, threat, model_id)].records.append(record)
    if unmatched:
        warnings.append(f"{len(unmatched)} result record(s) match no listed model and appear in all_results.csv only: "
                        + "; ".join(_describe(r) for r in unmatched))

    unmatched_external: list[ExternalEvaluation] = []
    for item in external:
        ext = item if isinstance(item, ExternalEvaluation) else external_from_dict(item)
        if external_key(ext) in models:
            models[external_key(ext)].external.append(ext)
        else:
            unmatched_external.append(ext)
    if unmatched_external:
        warnings.append(f"{len(unmatched_external)} external evaluation(s) match no listed model: "
                        + "; ".join(f"{'/'.join(external_key(e))} ({e.attack} by {e.who})" for e in unmatched_external))

    by_board: dict[tuple[str, str], list[ModelResults]] = {key: [] for key in BOARDS}
    for entry in models.values():
        by_board.setdefault((entry.model.dataset, entry.model.threat_model), []).append(entry)

    boards: dict[tuple[str, str], Board] = {}
    for key, entries in by_board.items():
        eps = _board_eps(key, [e.model for e in entries], warnings) if entries else BOARDS[key][0]
        for entry in entries:
            _pick_board_record(entry, eps)
            for r in entry.records:
                if not same_eps(r.eps, eps):
                    warnings.append(f"{_describe(r)} is at {_eps_text(r.eps)}, not the board's {_eps_text(eps)}: "
                                    "shown on the model page and in all_results.csv only")
        with_record = [e for e in entries if e.board_record is not None]
        # a quick run on fewer points than the board's others (submit evaluate --n-examples 200) is shown
        # below the ranked rows, without a rank: its numbers are not comparable
        full = max((e.board_record.n_examples for e in with_record), default=0)  # type: ignore[union-attr]
        ranked = _rank([e for e in with_record if e.board_record.n_examples >= full])  # type: ignore[union-attr]
        short = sorted((e for e in with_record if e.board_record.n_examples < full),  # type: ignore[union-attr]
                       key=lambda e: (-e.board_record.n_examples, e.model.id))  # type: ignore[union-attr]
        for entry in short:
            entry.rank = None
        table = pd.DataFrame([_row(e.model, e.board_record, e.best_known, e.rank) for e in [*ranked, *short]],  # type: ignore[arg-type]
                             columns=list(ALL_RESULTS_COLUMNS))[list(BOARD_COLUMNS)]
        table["rank"] = table["rank"].astype("Int64")
        pending = sorted((e.model for e in entries if e.board_record is None), key=lambda m: m.id)
        boards[key] = Board(key[0], key[1], eps, table.reset_index(drop=True), pending)

    all_rows = [_row(e.model, r, e.best_known if r is e.board_record else None, e.rank if r is e.board_record else None)
                for e in models.values() for r in e.records]
    all_rows += [_row(None, r, None, None) for r in unmatched]
    all_results = pd.DataFrame(all_rows, columns=list(ALL_RESULTS_COLUMNS))
    all_results["rank"] = all_results["rank"].astype("Int64")
    all_results = all_results.sort_values(["dataset", "threat_model", "rank", "model_id", "version"],
                                          na_position="last", kind="stable").reset_index(drop=True)
    for message in warnings:
        log.warning(message)
    return Aggregation(boards, models, all_results, unmatched, unmatched_external, warnings)


#: a text cell starting with one of these is a formula to a spreadsheet (CSV injection)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell that a spreadsheet would run as a formula prefixed with ``'``
    (numbers, negative ones included, are left as they are)."""
    def cell(value: object) -> object:
        return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value

    return table.apply(lambda column: column.map(cell))  # Series.map: DataFrame.map needs pandas 2.1


#: numbers in the CSVs: at most 8 significant digits, which keeps a fraction's hundredths of a percent (the field's
#: precision, 0.9368) and a robench record's k/n exactly, and drops float artefacts (0.9368000000000001)
CSV_FLOAT_FORMAT = "%.8g"


def write_csvs(aggregation: Aggregation, out_dir: str | Path) -> list[Path]:
    """Write ``<dataset>_<threat_model>.csv`` per board and ``all_results.csv``; return the paths.

    Text that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@`` first) is written
    with a leading ``'``, so opening a table never runs what a submitter typed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for board in aggregation.boards.values():
        path = out / f"{board.name}.csv"
        _spreadsheet_safe(board.table).to_csv(path, index=False, float_format=CSV_FLOAT_FORMAT)
        written.append(path)
    path = out / "all_results.csv"
    _spreadsheet_safe(aggregation.all_results).to_csv(path, index=False, float_format=CSV_FLOAT_FORMAT)
    written.append(path)
    return written
