"""The static site: index of boards, one page per board and per model, a protocol page.

Rendered with jinja2 with autoescaping on, from an ``Aggregation`` (the CSV tables plus the
model entries). The pages load only files written next to them (css, js, svg), so the site
works from file:// and sends no request to any other site. User text is escaped, and links
become ``<a href>`` only for http and https URLs.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import jinja2

from benchmark.analysis_values import ANALYSIS_VALUES
from benchmark.budgets import BOARDS, format_eps
from benchmark.flags import FLAG_EXPLANATIONS
from benchmark.protocol import PROTOCOLS
from benchmark.record import EvaluationResult

from .aggregate import CORRUPTION_COLUMNS, STANDARD_ATTACKS, VERIFICATION_COLUMNS, Aggregation, Board, ModelResults, row_flags, write_csvs
from model_zoo.cards import Listing

from .plots import HEATMAP_FULL_ERROR, clean_curve, curve_svg, heatmap_svg, scatter_svg
from .rich_text import footnote_html, footnote_text

__all__ = ["SiteReport", "build_site", "flag_explanations", "flag_evidence", "http_url", "bibtex_entry", "reproduce_command",
           "model_page_path", "board_page_path"]

_TEMPLATES = Path(__file__).parent / "templates"
_STATIC_FILES = ("site.css", "board.js")

def flag_explanations() -> dict[str, str]:
    """Flag name -> the sentence shown on the site (declared once, in benchmark.flags)."""
    return dict(FLAG_EXPLANATIONS)


def flag_evidence(flag: str, record: EvaluationResult, model: Listing | None = None) -> str:
    """The numbers behind a flag on one record, in words ("Square broke 3 of 500 points ..."); "" when
    the record holds none. Shown beside the flag's explanation, so that a reader can judge its weight."""
    details = record.check_details.get(flag, {}) if isinstance(record.check_details, dict) else {}
    n = record.n_examples
    try:
        if flag == "black_box_beats_white_box":
            return f"Square broke {details['points_only_black_box']} of {n} points that every gradient attack missed."
        if flag == "non_finite_logits":
            return f"{details['points_not_evaluable']} of {n} points had NaN or infinite logits."
        if flag == "zero_gradients":
            return (f"{100 * details['fraction_zero_cross_entropy']:.0f}% of the probed points had a zero cross-entropy "
                    f"gradient, {100 * details['fraction_zero_margin']:.0f}% a zero margin gradient.")
        if flag == "randomness":
            return (f"{details['prediction_changes']} predictions changed over {details['passes']} passes; logits moved by "
                    f"up to {details['max_logit_difference']:.3g}.")
        if flag == "too_few_classes":
            return f"The model has {details['num_classes']} classes; the protocol's attacks need {details['needed']}."
        if flag == "reported_not_reproduced" and model is not None and model.reported.robust_accuracy is not None:
            return (f"Reported {100 * model.reported.robust_accuracy:.2f}%, measured {100 * record.robust_accuracy:.2f}% "
                    f"on {n} points.")
    except (KeyError, TypeError, ValueError):
        return ""
    return ""


def http_url(value: Any) -> bool:
    """Whether ``value`` may become a clickable link: an http(s) URL with a host."""
    if not isinstance(value, str) or any(ch in value for ch in "\t\n\r\x00") or value != value.strip():
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def reproduce_command(model_id: str, record: EvaluationResult) -> str:
    args = ["robench", "evaluate", "--model", model_id, "--dataset", record.dataset,
            "--threat-model", record.threat_model, "--version", record.version, "--seed", str(record.seed)]
    if record.n_examples > 0:
        args += ["--n-examples", str(record.n_examples)]
    return " ".join(shlex.quote(a) for a in args)


def _bib_value(text: str) -> str:
    return text.replace("{", "").replace("}", "").replace("\n", " ").strip()


_ARXIV_ID = re.compile(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})", re.IGNORECASE)
_YEAR = re.compile(r"\b(?:19|20)\d\d\b")


def venue_and_year(paper: Any) -> str:
    """The venue with the year once: "NeurIPS 2021", not "NeurIPS 2021 2021"."""
    venue = paper.venue.strip()
    if paper.year is None or str(paper.year) in venue:
        return venue
    return f"{venue} {paper.year}".strip()


def bibtex_entry(model: Listing) -> str:
    """The card's own BibTeX, else one generated: ``@article`` with ``journal = {arXiv preprint arXiv:NNNN.NNNNN}``
    for a preprint (a venue that is empty or names arXiv), ``@inproceedings`` with the venue (its year dropped,
    the year has its own field) as ``booktitle`` otherwise."""
    paper = model.paper
    if paper.bibtex and paper.bibtex.strip():
        return paper.bibtex.strip()
    venue = paper.venue.strip()
    is_preprint = venue == "" or "arxiv" in venue.lower()
    fields = [("title", paper.title), ("author", " and ".join(paper.authors))]
    if is_preprint:
        number = _ARXIV_ID.search(paper.link or "")
        fields.append(("journal", f"arXiv preprint arXiv:{number.group(1)}" if number else "arXiv preprint"))
    else:
        fields.append(("booktitle", " ".join(_YEAR.sub("", venue).split()) or venue))
    year = paper.year if paper.year is not None else next((int(y) for y in _YEAR.findall(venue)), None)
    if year is not None:
        fields.append(("year", str(year)))
    if http_url(paper.link):
        fields.append(("url", paper.link))
    body = ",\n".join(f"  {name} = {{{_bib_value(value)}}}" for name, value in fields if value)
    return f"@{'article' if is_preprint else 'inproceedings'}{{{model.id},\n{body}\n}}"


def board_page_path(board: Board) -> str:
    return f"boards/{board.name}.html"


def model_page_path(model: Listing) -> str:
    return f"models/{model.dataset}/{model.threat_model}/{model.id}.html"


def _pct(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}"


def _data_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = _pct
    env.filters["data_value"] = _data_value
    env.filters["footnote"] = footnote_html
    env.filters["footnote_text"] = footnote_text
    env.filters["venue_and_year"] = venue_and_year
    env.tests["http_url"] = http_url
    return env


@dataclass
class SiteReport:
    out: Path
    pages: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


#: (column, header label, "num" or "text", first sort direction, width in rem), in the order shown: what a
#: reader compares first (the numbers and the flags, with the Model column kept in view while the table
#: scrolls) fits in 1,400 px; "at_eps" is filled in the page from the curves (the eps box)
_BOARD_VIEW = (
    ("rank", "Rank", "num", "asc", 3.6), ("model_id", "Model", "text", "asc", 14), ("clean_accuracy", "Clean %", "num", "desc", 5.2),
    ("robust_accuracy", "Robust %", "num", "desc", 5.8), ("best_known_robust_accuracy", "Best known %", "num", "desc", 7.6),
    ("certified_accuracy", "Certified %", "num", "desc", 6.6), ("exact_accuracy", "Exact %", "num", "desc", 5.4),
    ("undecided", "Undecided", "num", "asc", 6),
    ("flags", "Flags", "text", "desc", 14), ("at_eps", "At eps %", "num", "desc", 5.6),
    ("paper", "Paper", "text", "asc", 18), ("venue", "Venue", "text", "asc", 8),
    ("architecture", "Architecture", "text", "asc", 11), ("additional_data", "Extra data", "text", "asc", 6),
    *((name, f"{name} %", "num", "desc", 6.5) for name in STANDARD_ATTACKS),
    ("corruptions_mce", "mCE", "num", "asc", 5), ("corruptions_accuracy_3d", "3D corr. %", "num", "desc", 6.5),
    ("corruptions_mce_3d", "3D mCE", "num", "asc", 5.5),
    ("n_examples", "n", "num", "desc", 4), ("version", "Version", "text", "asc", 6), ("date", "Date", "text", "desc", 6.6),
)
#: the columns that stay in view when the table scrolls sideways
_STICKY = ("rank", "model_id")


#: the columns a board may leave out when no row fills them, and the values that count as unfilled there
#: (an attack column's 0.00 is a result; an n of 0 is "not given", as imported records have it)
_OPTIONAL_COLUMNS = {**{name: (None,) for name in (*STANDARD_ATTACKS, *CORRUPTION_COLUMNS, *VERIFICATION_COLUMNS)},
                     "n_examples": (None, 0),
                     "date": (None, "")}
#: a corruptions board's robust accuracy column: the mean accuracy over its corrupted sets
_CORRUPTIONS_VIEW = {"robust_accuracy": ("robust_accuracy", "Corruptions %", "num", "desc", 8)}


def _shown_columns(board: Board, has_curves: bool) -> set[str]:
    """The columns a board has data for: an attack column, n or the date that no row fills (every row
    imported, say) is left out, as is the eps box's column when no model has a curve. Every other column
    stays, whatever its values (a board where every robust accuracy is 0.00 still shows it)."""
    table = board.table
    shown = set()
    for column, *_ in _BOARD_VIEW:
        if column == "at_eps":
            keep = has_curves
        elif column in _OPTIONAL_COLUMNS and column in table.columns:
            unfilled = _OPTIONAL_COLUMNS[column]
            values = table[column]
            keep = not bool((values.isna() | values.isin([v for v in unfilled if v is not None])).all())
        else:
            keep = True
        if keep or table.empty:
            shown.add(column)
    return shown


def _grid_css(columns: Iterable[tuple[Any, ...]] = _BOARD_VIEW, selector: str = "table.board") -> str:
    columns = list(columns)
    widths = " ".join(f"{w}rem" for *_, w in columns)
    lines = [f"{selector} tr {{ grid-template-columns: {widths}; }}"]
    left = 0.0
    for position, (column, *_, width) in enumerate(columns, start=1):
        if column in _STICKY:
            lines.append(f"{selector} tr > :nth-child({position}) {{ position: sticky; left: {left:g}rem; z-index: 1; }}")
            left += width
    return "\n".join(lines) + "\n"


_PERCENT_COLUMNS = {"clean_accuracy", "robust_accuracy", "best_known_robust_accuracy", *STANDARD_ATTACKS,
                    "corruptions_accuracy_3d", "certified_accuracy", "exact_accuracy"}


def _board_rows(board: Board, aggregation: Aggregation) -> list[dict[str, Any]]:
    rows = []
    for row in board.table.to_dict("records"):
        entry = aggregation.models[(board.dataset, board.threat_model, row["model_id"])]
        cells = []
        for column, _, kind, _, _ in _BOARD_VIEW:
            value = row.get(column)
            if column == "at_eps":
                text = "–"
            elif column in _PERCENT_COLUMNS:
                text = _pct(value)
            elif column == "undecided":
                text = "–" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))
            elif column in ("corruptions_mce", "corruptions_mce_3d"):
                text = "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2f}"
            elif column == "additional_data":
                text = "yes" if value else "no"
            else:
                text = _data_value(value)
            cells.append({"column": column, "kind": kind, "text": text,
                          "value": _data_value(value) if kind == "num" else text})
        evidence = {flag: flag_evidence(flag, entry.board_record, entry.model)
                    for flag in str(row["flags"] or "").split(";") if flag and entry.board_record is not None}
        rows.append({"cells": cells, "model": entry.model, "url": "../" + model_page_path(entry.model),
                     "best_known_source": entry.best_known_source, "evidence": evidence,
                     "extra_data": bool(row["additional_data"])})
    return rows


def _fired_with_evidence(entry: ModelResults) -> list[tuple[str, str]]:
    """Every flag on any of a model's records, once, with the numbers behind it (from the first record carrying it)."""
    fired: dict[str, str] = {}
    records = ([entry.board_record] if entry.board_record is not None else []) + entry.records
    for record in records:
        for flag in row_flags(entry.model, record):
            fired.setdefault(flag, flag_evidence(flag, record, entry.model))
    return list(fired.items())


def _curve_for(entry: ModelResults) -> tuple[EvaluationResult | None, list[tuple[float, float]]]:
    ordered = ([entry.board_record] if entry.board_record is not None else []) + entry.records
    for record in ordered:
        if record.curve:
            try:
                return record, clean_curve(record.curve)
            except ValueError:
                continue
    return None, []


def _heatmap_record(entry: ModelResults) -> EvaluationResult | None:
    """The corruptions record whose per-set accuracies the model page draws (the board's, else the newest with them)."""
    ordered = ([entry.board_record] if entry.board_record is not None else []) + entry.records
    return next((r for r in ordered if r.corruptions is not None and (r.corruptions.accuracy or r.corruptions.accuracy_3d_sets)),
                None)


def _verified_record(entry: ModelResults) -> EvaluationResult | None:
    """The record whose verification the model page shows (the board's, else the newest with one)."""
    ordered = ([entry.board_record] if entry.board_record is not None else []) + entry.records
    return next((r for r in ordered if r.verification is not None), None)


def _analysis_rows(entry: ModelResults) -> tuple[EvaluationResult | None, list[tuple[str, str, str]]]:
    """The record whose analysis is shown (the board's, else the newest with one), and (label, value, meaning) rows."""
    ordered = ([entry.board_record] if entry.board_record is not None else []) + entry.records
    record = next((r for r in ordered if r.baselines or r.metrics), None)
    if record is None:
        return None, []
    rows = []
    for name, value in {**record.baselines, **record.metrics}.items():
        shown = ANALYSIS_VALUES.get(name)
        if shown is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        rows.append((shown.label, f"{100 * value:.2f}%" if shown.percent else f"{value:.4g}", shown.meaning))
    return record, rows


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def build_site(aggregation: Aggregation, out_dir: str | Path, problems: Iterable[str] = ()) -> SiteReport:
    """Write the CSVs under ``data/`` and every page of the site into ``out_dir``.

    ``problems`` (e.g. files that could not be read) are listed on the index with the
    aggregation's warnings.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = SiteReport(out)
    report.csvs = write_csvs(aggregation, out / "data")
    static = out / "static"
    static.mkdir(exist_ok=True)
    for name in _STATIC_FILES:
        shutil.copyfile(_TEMPLATES / name, static / name)
    _write(static / "board-grid.css", "/* written by robench leaderboard build from the board's column list */\n" + _grid_css())

    env = _environment()
    # boards with results first (the digits ones, on the embedded default), then the empty ones
    boards = sorted(aggregation.boards.values(), key=lambda b: (b.table.empty, b.dataset, b.threat_model))
    flags = flag_explanations()
    notes = list(aggregation.warnings) + list(problems)

    index = env.get_template("index.html").render(root="", boards=boards, board_page_path=board_page_path, notes=notes,
                                                  models=aggregation.models, model_page_path=model_page_path)
    report.pages.append(_write(out / "index.html", index))
    protocol = env.get_template("protocol.html").render(root="", protocols=PROTOCOLS, boards=BOARDS,
                                                        format_eps=format_eps, flags=flags)
    report.pages.append(_write(out / "protocol.html", protocol))

    board_template = env.get_template("board.html")
    for board in boards:
        curves = {}
        for model_id in board.table["model_id"]:
            _, points = _curve_for(aggregation.models[(board.dataset, board.threat_model, model_id)])
            if points:
                curves[model_id] = [[round(e, 9), round(a, 6)] for e, a in points]
        ranked = board.table[board.table["rank"].notna()]
        scatter = (scatter_svg(list(zip(ranked["model_id"], ranked["clean_accuracy"], ranked["robust_accuracy"])),
                               y_label="corruption accuracy (%)" if board.is_corruptions else "robust accuracy (%)")
                   if len(ranked) else None)
        shown = _shown_columns(board, bool(curves))
        if board.is_corruptions:  # no attacks, no other evaluations: the best known accuracy is the mean itself
            shown.discard("best_known_robust_accuracy")
        rows = [{**row, "cells": [c for c in row["cells"] if c["column"] in shown]} for row in _board_rows(board, aggregation)]
        columns = [_CORRUPTIONS_VIEW.get(c[0], c) if board.is_corruptions else c for c in _BOARD_VIEW if c[0] in shown]
        html = board_template.render(root="../", board=board, columns=columns, rows=rows,
                                     curves=curves, pending=board.pending, model_page_path=model_page_path, flags=flags,
                                     scatter=scatter)
        report.pages.append(_write(out / board_page_path(board), html))
        # this board's columns (the pages' policy allows no inline style): they override the full list's
        _write((out / board_page_path(board)).with_suffix(".css"),
               _grid_css(columns, "table.board.this-board"))

    model_template = env.get_template("model.html")
    for entry in aggregation.models.values():
        model = entry.model
        page = out / model_page_path(model)
        curve_record, points = _curve_for(entry)
        plot = None
        if points:
            board_eps = aggregation.boards[(model.dataset, model.threat_model)].eps
            report.plots.append(_write(page.with_suffix(".svg"), curve_svg(points, board_eps)))
            plot = page.with_suffix(".svg").name
        board = aggregation.boards[(model.dataset, model.threat_model)]
        heat_record = _heatmap_record(entry)
        heatmaps = {}  # the 15 corruptions, and the 3D ones where the record has them
        if heat_record is not None:
            details = heat_record.corruptions
            for suffix, table in ((".corruptions.svg", details.accuracy), (".corruptions-3d.svg", details.accuracy_3d_sets)):  # type: ignore[union-attr]
                if table:
                    report.plots.append(_write(page.with_name(page.stem + suffix), heatmap_svg(table, heat_record.clean_accuracy)))
                    heatmaps[suffix] = page.stem + suffix
        html = model_template.render(
            root="../../../", entry=entry, model=model, board=board, board_url="../../../" + board_page_path(board),
            plot=plot, curve_record=curve_record, flags=flags, bibtex=bibtex_entry(model),
            results=[(r, reproduce_command(model.id, r) if model.origin != "imported" else None) for r in entry.records],
            fired=_fired_with_evidence(entry), format_eps=format_eps, analysis=_analysis_rows(entry),
            verified=_verified_record(entry), heatmap=heatmaps.get(".corruptions.svg"), heatmap_3d=heatmaps.get(".corruptions-3d.svg"), heat_record=heat_record,
            heat_full_error=HEATMAP_FULL_ERROR,
        )
        report.pages.append(_write(page, html))
    return report
