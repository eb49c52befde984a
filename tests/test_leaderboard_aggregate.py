"""Aggregation of records and cards into board tables; reading a results folder."""
from __future__ import annotations

import dataclasses
import json
import logging
import math

import pandas as pd
import pytest

from benchmark.budgets import default_eps

from benchmark.external import ExternalEvaluation
from leaderboard.aggregate import ALL_RESULTS_COLUMNS, BOARD_COLUMNS, STANDARD_ATTACKS, aggregate, write_csvs
from leaderboard.entries import ImportedListing, external_from_dict, read_listing
from leaderboard.sources import load_results
from leaderboard.synthetic import make_card, make_corruption_record, make_record


def _external(model_id: str, acc: float, **kw) -> dict:
    return {"dataset": "digits", "threat_model": "Linf", "model_id": model_id, "robust_accuracy": acc,
            "attack": "APGD-DLR x100", "who": "Jane Doe", "link": "https://example.org/attack", **kw}


def test_schema_is_fixed_and_per_attack_columns_follow_the_standard_protocol():
    assert STANDARD_ATTACKS == ("apgd-ce", "apgd-t", "fab-t", "square")
    card = make_card("Madry2018Towards")
    agg = aggregate([card], [make_record(card, 0.95, 0.6, flags=["randomness", "zero_gradients"])])
    table = agg.boards[("digits", "Linf")].table
    assert tuple(table.columns) == BOARD_COLUMNS
    assert tuple(agg.all_results.columns) == ALL_RESULTS_COLUMNS
    row = table.iloc[0]
    record = make_record(card, 0.95, 0.6)
    for stage in record.stages:
        assert row[stage.attack] == pytest.approx(stage.robust_accuracy)
    assert row["square"] == pytest.approx(0.6)  # the last attack leaves the final robust accuracy
    assert row["flags"] == "randomness;zero_gradients"
    assert row["checkpoint_sha256"] == card.checkpoint.sha256[:12]
    assert (row["eps"], row["n_examples"], row["version"], row["date"]) == (
        pytest.approx(default_eps("digits", "Linf")), 500, "standard", "2024-01-01")
    assert (row["paper"], row["venue"], row["architecture"], row["additional_data"]) == (
        "A Robust Model", "ICLR", "digits_cnn(width=32)", False)
    # every known board exists, empty ones with the same columns
    assert tuple(agg.boards[("cifar10", "Linf")].table.columns) == BOARD_COLUMNS
    assert agg.boards[("cifar10", "Linf")].table.empty


def test_rank_by_best_known_then_clean_and_ties_share_a_rank():
    cards = {name: make_card(name) for name in ("A2020a", "B2020b", "C2020c", "D2020d", "E2020e")}
    records = [
        make_record(cards["A2020a"], clean=0.80, robust=0.50),
        make_record(cards["B2020b"], clean=0.70, robust=0.60),   # an external attack takes it to 0.40
        make_record(cards["C2020c"], clean=0.90, robust=0.50),   # same robust as A, better clean
        make_record(cards["D2020d"], clean=0.80, robust=0.50),   # identical to A
        make_record(cards["E2020e"], clean=0.99, robust=0.45),
    ]
    agg = aggregate(cards.values(), records, [_external("B2020b", 0.40)])
    table = agg.boards[("digits", "Linf")].table
    assert list(table["model_id"]) == ["C2020c", "A2020a", "D2020d", "E2020e", "B2020b"]
    assert list(table["rank"]) == [1, 2, 2, 4, 5]
    b = table.set_index("model_id").loc["B2020b"]
    assert (b["robust_accuracy"], b["best_known_robust_accuracy"]) == (0.60, 0.40)
    assert agg.models[("digits", "Linf", "B2020b")].best_known_source == "APGD-DLR x100 by Jane Doe"


def test_latest_record_per_version_is_kept_and_other_versions_count_towards_best_known():
    card = make_card("Zhang2019Theoretically")
    old = make_record(card, 0.9, 0.7, created="2024-01-01T00:00:00+00:00")
    new = make_record(card, 0.9, 0.55, created="2024-03-01T12:00:00+00:00")
    plus = make_record(card, 0.9, 0.52, version="plus", created="2024-02-01T00:00:00+00:00")
    agg = aggregate([card], [new, plus, old])  # the older standard record comes last
    entry = agg.models[card.key]
    assert entry.board_record is new
    assert [r.version for r in entry.records] == ["standard", "plus"]
    row = agg.boards[("digits", "Linf")].table.iloc[0]
    assert (row["robust_accuracy"], row["best_known_robust_accuracy"], row["version"]) == (0.55, 0.52, "standard")
    assert len(agg.all_results) == 2  # one row per kept record; the superseded one is gone
    ranked = agg.all_results.dropna(subset=["rank"])
    assert list(ranked["version"]) == ["standard"]


def test_a_model_with_only_another_version_is_ranked_on_that_version():
    card = make_card("Random2021Noise")
    agg = aggregate([card], [make_record(card, 0.8, 0.3, version="rand", flags=["randomness"])])
    row = agg.boards[("digits", "Linf")].table.iloc[0]
    assert (row["version"], row["robust_accuracy"], row["rank"]) == ("rand", 0.3, 1)


def test_unmatched_records_and_external_are_warned_about_and_kept_in_all_results(caplog):
    card = make_card("Known2020Model")
    stray = make_record(make_card("Ghost2020Model"), 0.9, 0.1)
    other_board = make_record(make_card("Known2020Model", "digits", "L2"), 0.9, 0.2)
    with caplog.at_level(logging.WARNING, logger="leaderboard.aggregate"):
        agg = aggregate([card], [make_record(card, 0.9, 0.5), stray, other_board], [_external("Nobody2020X", 0.1)])
    assert agg.unmatched_records == [stray, other_board]
    assert [e.model_id for e in agg.unmatched_external] == ["Nobody2020X"]
    text = caplog.text
    assert "digits/Linf/Ghost2020Model" in text and "digits/L2/Known2020Model" in text and "Nobody2020X" in text
    assert any("match no listed model" in w for w in agg.warnings)
    ghost = agg.all_results[agg.all_results["model_id"] == "Ghost2020Model"]
    assert len(ghost) == 1 and ghost.iloc[0]["paper"] == "" and pd.isna(ghost.iloc[0]["rank"])
    assert list(agg.boards[("digits", "Linf")].table["model_id"]) == ["Known2020Model"]


def test_records_at_another_eps_stay_off_the_board_with_a_warning():
    card = make_card("Eps2020Other")
    agg = aggregate([card], [make_record(card, 0.9, 0.2, eps=0.3)])
    board = agg.boards[("digits", "Linf")]
    assert board.table.empty and board.pending == [card]
    assert any("not the board's" in w for w in agg.warnings)
    assert list(agg.all_results["eps"]) == [0.3]


def test_an_external_evaluation_at_another_eps_does_not_count():
    card = make_card("Ext2020Eps")
    agg = aggregate([card], [make_record(card, 0.9, 0.5)], [_external("Ext2020Eps", 0.1, eps=0.35)])
    assert agg.boards[("digits", "Linf")].table.iloc[0]["best_known_robust_accuracy"] == 0.5


def test_duplicate_listing_is_an_error():
    with pytest.raises(ValueError, match="listed twice"):
        aggregate([make_card("Twice2020A"), make_card("Twice2020A")], [])


def test_csvs_round_trip_through_pandas(tmp_path):
    cards = [make_card(f"M{2000 + i}Model") for i in range(3)]
    agg = aggregate(cards, [make_record(c, 0.9, 0.3 + 0.1 * i) for i, c in enumerate(cards)])
    paths = write_csvs(agg, tmp_path)
    assert {p.name for p in paths} >= {"digits_Linf.csv", "digits_L2.csv", "all_results.csv"}
    back = pd.read_csv(tmp_path / "digits_Linf.csv", keep_default_na=False, na_values=[""])
    expected = agg.boards[("digits", "Linf")].table
    assert list(back.columns) == list(BOARD_COLUMNS)
    assert list(back["model_id"]) == list(expected["model_id"])
    assert back["best_known_robust_accuracy"].tolist() == expected["best_known_robust_accuracy"].tolist()
    assert pd.read_csv(tmp_path / "digits_L2.csv").columns.tolist() == list(BOARD_COLUMNS)


def test_external_from_dict_validates_and_fills_the_board_eps():
    ext = external_from_dict(_external("X2020y", 0.25))
    assert isinstance(ext, ExternalEvaluation) and ext.eps == pytest.approx(default_eps("digits", "Linf")) and ext.robust_accuracy == 0.25
    assert external_from_dict(_external("X2020y", 0.25, eps="8/255")).eps == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="fraction"):
        external_from_dict(_external("X2020y", 25.0))
    with pytest.raises(ValueError, match="lacks who"):
        external_from_dict({**_external("X2020y", 0.2), "who": ""})
    with pytest.raises(ValueError, match="unknown field"):
        external_from_dict({**_external("X2020y", 0.2), "score": 1})


def _imported(card, **change) -> dict:
    """An imported entry's JSON (what ``robench leaderboard import`` writes) made from a zoo card."""
    data = card.model_dump(mode="json", include={"id", "dataset", "threat_model", "eps", "paper", "additional_data",
                                                 "number_forward_passes", "license", "footnote"})
    return {**data, "architecture": card.architecture_label, "imported_from": "x/y.json", **change}


def test_listed_model_rejects_ids_unsafe_as_file_names():
    data = _imported(make_card("Fine2020Id"))
    listed = read_listing(data)
    assert isinstance(listed, ImportedListing) and read_listing(listed.model_dump(mode="json")) == listed
    assert listed.paper.model_dump() == make_card("Fine2020Id").paper.model_dump() and listed.source_file == "x/y.json"
    with pytest.raises(ValueError, match="may only use"):
        read_listing({**data, "id": "../../etc/passwd"})
    with pytest.raises(ValueError, match="may only use"):  # a trailing newline is not part of a safe id
        read_listing({**data, "id": "Fine2020Id\n"})
    with pytest.raises(ValueError, match="colour: Extra inputs are not permitted"):
        read_listing({**data, "colour": "red"})


def test_load_results_reports_each_unreadable_file_and_loads_the_rest(tmp_path):
    card = make_card("Good2020Model")
    make_record(card, 0.9, 0.5).save(tmp_path / "digits" / "Linf" / "Good2020Model.standard.json")
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "digits" / "nomodel.json").write_text(json.dumps({**make_record(card, 0.9, 0.5).to_dict(), "model": {}}))
    bad_acc = {**make_record(card, 0.9, 0.5).to_dict(), "robust_accuracy": 1.5}
    (tmp_path / "bad_acc.json").write_text(json.dumps(bad_acc))
    malformed = {"curve.json": {"curve": [5]}, "flags.json": {"flags": [1]}, "created.json": {"created": 5},
                 "flagtext.json": {"flags": "abc"}}
    for name, change in malformed.items():  # each aborted the whole build, or showed "abc" as three flags
        (tmp_path / name).write_text(json.dumps({**make_record(card, 0.9, 0.5).to_dict(), **change}))
    (tmp_path / "x.card.json").write_text(json.dumps(_imported(card)))
    (tmp_path / "x.external.json").write_text(json.dumps([_external("Good2020Model", 0.4)]))
    loaded = load_results(tmp_path)
    assert [r.model["id"] for r in loaded.records] == ["Good2020Model"]
    assert [m.id for m in loaded.listed] == ["Good2020Model"]
    assert [e.robust_accuracy for e in loaded.external] == [0.4]
    reasons = {p.split(": ", 1)[0].rsplit("/", 1)[-1]: p for p in loaded.problems}
    assert set(reasons) == {"broken.json", "nomodel.json", "bad_acc.json", *malformed}
    assert "curve.0: Input should be a valid array" in reasons["curve.json"]
    assert "flags.0: Input should be a valid string" in reasons["flags.json"]
    assert "created: Input should be a valid string" in reasons["created.json"]
    assert "flags: Input should be a valid array" in reasons["flagtext.json"]
    assert "not valid JSON" in reasons["broken.json"]
    assert "model.id" in reasons["nomodel.json"]
    assert "robust_accuracy" in reasons["bad_acc.json"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "missing")


def test_best_known_is_never_above_the_robench_result():
    cards = [make_card(f"P{2000 + i}Model") for i in range(20)]
    records = [make_record(c, 0.9, (i * 7 % 10) / 20) for i, c in enumerate(cards)]
    external = [_external(c.id, (i * 3 % 10) / 20) for i, c in enumerate(cards) if i % 3 == 0]
    table = aggregate(cards, records, external).boards[("digits", "Linf")].table
    assert (table["best_known_robust_accuracy"] <= table["robust_accuracy"]).all()
    keys = list(zip(-table["best_known_robust_accuracy"], -table["clean_accuracy"]))
    assert keys == sorted(keys)
    assert not any(math.isnan(v) for v in table["best_known_robust_accuracy"])


def test_a_zoo_card_wins_over_an_imported_entry_and_our_record_over_the_imported_one():
    card = make_card("Both2020Model", title="From the zoo")
    imported = read_listing(_imported(card, paper={"title": "From elsewhere"}, imported_from="digits/Linf/Both2020Model.json"))
    theirs = make_record(card, 0.9, 0.7, created="")
    ours = make_record(card, 0.9, 0.6, created="2023-05-01T00:00:00")
    agg = aggregate([imported, card], [ours, theirs])
    entry = agg.models[card.key]
    assert entry.model.paper.title == "From the zoo" and entry.board_record is ours
    assert any("both a zoo submission and an imported entry" in w for w in agg.warnings)


def test_csv_cells_a_spreadsheet_would_run_are_quoted(tmp_path):
    """CSV injection: a title or venue starting with =, +, -, @ must not become a formula."""
    card = make_card("Evil2020Model", title='=HYPERLINK("http://evil.example","x")', venue="@SUM(A1)")
    agg = aggregate([card], [make_record(card, 0.9, 0.4)])
    write_csvs(agg, tmp_path)
    for name in ("digits_Linf.csv", "all_results.csv"):
        row = pd.read_csv(tmp_path / name, keep_default_na=False).iloc[0]
        assert row["paper"] == "'" + '=HYPERLINK("http://evil.example","x")' and row["venue"] == "'@SUM(A1)"
        assert row["robust_accuracy"] == 0.4 and row["model_id"] == "Evil2020Model"  # numbers and plain text as they were


@pytest.mark.parametrize("reported, flagged", [(0.61, True), (0.459, False), (None, False)])
def test_a_reported_robust_accuracy_above_the_measured_one_is_flagged(reported, flagged):
    """The template's made-up 61% was shown next to the measured 45% with no warning."""
    from model_zoo.cards import Reported

    card = make_card("Claim2020Model")
    card = card.model_copy(update={"reported": Reported(clean_accuracy=0.9, robust_accuracy=reported)})
    agg = aggregate([card], [make_record(card, 0.9, 0.45)])
    flags = agg.boards[("digits", "Linf")].table.iloc[0]["flags"]
    assert ("reported_not_reproduced" in flags.split(";")) is flagged


def test_a_record_on_fewer_points_is_shown_below_and_unranked(tmp_path):
    """A quick 200-point run was ranked #1 among the 500-point records."""
    full, quick = make_card("Full2020Model"), make_card("Quick2020Model")
    agg = aggregate([full, quick], [make_record(full, 0.9, 0.4), make_record(quick, 0.95, 0.9, n_examples=200)])
    table = agg.boards[("digits", "Linf")].table
    assert list(table["model_id"]) == ["Full2020Model", "Quick2020Model"]
    assert table["rank"].iloc[0] == 1 and pd.isna(table["rank"].iloc[1])
    write_csvs(agg, tmp_path)
    back = pd.read_csv(tmp_path / "digits_Linf.csv")
    assert back["rank"].iloc[0] == 1 and pd.isna(back["rank"].iloc[1])


def _on_board(record, dataset: str, threat_model: str, eps: float, **model):
    """``record`` moved to another board (an imported entry's record: it has no checkpoint of ours)."""
    return dataclasses.replace(record, dataset=dataset, threat_model=threat_model, eps=eps,
                               model={"id": record.model["id"], **model})


def test_a_board_robench_does_not_define_takes_the_eps_its_first_entry_lists():
    """Imported entries may sit on a board with no eps of ours (cifar100/L2): the first listing's eps is the
    board's, a listing at another eps is warned about and its record stays on its model page."""
    first, other = (read_listing(_imported(make_card(name), dataset="cifar100", threat_model="L2", eps=eps))
                    for name, eps in (("Far2021First", 0.5), ("Far2021Other", 0.25)))
    records = [_on_board(make_record(make_card(m.id), 0.6, acc), "cifar100", "L2", m.eps)
               for m, acc in ((first, 0.3), (other, 0.4))]
    alone = aggregate([first], records[:1])
    assert alone.boards[("cifar100", "L2")].eps == 0.5 and not alone.warnings
    assert list(alone.boards[("cifar100", "L2")].table["model_id"]) == ["Far2021First"]
    both = aggregate([first, other], records)
    board = both.boards[("cifar100", "L2")]
    assert board.eps == 0.5 and list(board.table["model_id"]) == ["Far2021First"] and board.pending == [other]
    assert "cifar100/L2/Far2021Other is listed at eps 0.25 but its board uses eps 0.5" in both.warnings


def test_the_checkpoint_cell_falls_back_to_the_card_and_is_empty_when_nothing_names_one():
    card = make_card("Sha2020Card")
    record = make_record(card, 0.9, 0.4)
    without = dataclasses.replace(record, model={"id": card.id})
    agg = aggregate([card], [without])
    assert agg.boards[("digits", "Linf")].table.iloc[0]["checkpoint_sha256"] == card.checkpoint.sha256[:12]
    recorded = dataclasses.replace(record, model={"id": card.id, "checkpoint_sha256": "ab" * 32})
    assert aggregate([card], [recorded]).boards[("digits", "Linf")].table.iloc[0]["checkpoint_sha256"] == "ab" * 6
    stray = dataclasses.replace(record, model={"id": "Stray2020Record"})  # no listed model, no hash in the record
    row = aggregate([card], [stray]).all_results.set_index("model_id").loc["Stray2020Record"]
    assert row["checkpoint_sha256"] == ""


def test_csvs_are_written_into_a_folder_that_does_not_exist_yet(tmp_path):
    card = make_card("Deep2020Folder")
    out = tmp_path / "not" / "yet" / "there"
    paths = write_csvs(aggregate([card], [make_record(card, 0.9, 0.4)]), out)
    assert out / "all_results.csv" in paths and all(p.is_file() for p in paths)


def test_the_verifier_s_figures_reach_the_table_only_from_a_verified_record():
    from benchmark.record import VerificationDetails

    card = make_card("Bracket2020Model")
    record = make_record(card, 0.9, 0.4)
    verified = dataclasses.replace(record, verification=VerificationDetails(
        "verified", method="crown+milp", certified_accuracy=0.25, exact_accuracy=None, lower=0.3, upper=0.4, undecided=7))
    row = aggregate([card], [verified]).boards[("digits", "Linf")].table.iloc[0]
    assert (row["certified_accuracy"], row["undecided"]) == (0.25, 7) and pd.isna(row["exact_accuracy"])
    exact = dataclasses.replace(verified, verification=dataclasses.replace(verified.verification, exact_accuracy=0.38,
                                                                         undecided=0))
    assert aggregate([card], [exact]).boards[("digits", "Linf")].table.iloc[0]["exact_accuracy"] == 0.38
    refused = dataclasses.replace(record, verification=VerificationDetails("not_verifiable", reason="too large",
                                                                           certified_accuracy=0.25))
    row = aggregate([card], [refused]).all_results.iloc[0]
    assert all(pd.isna(row[name]) for name in ("certified_accuracy", "exact_accuracy", "undecided"))


def test_warnings_name_a_record_without_an_id_or_a_date_and_a_budget_that_is_none():
    card = make_card("Named2020Model")
    anonymous = dataclasses.replace(make_record(card, 0.9, 0.4), model={}, created="")
    assert any(w.endswith("digits/Linf/? (standard, created unknown)") for w in aggregate([card], [anonymous]).warnings)
    corrupted = make_card("Blurred2020Model", "digits", "corruptions")
    at_eps = dataclasses.replace(make_corruption_record(corrupted, 0.9, {"gaussian_noise": [0.8] * 5}), eps=0.3)
    assert ("digits/corruptions/Blurred2020Model (standard, created 2024-01-01T00:00:00+00:00) is at eps 0.3, "
            "not the board's no eps: shown on the model page and in all_results.csv only") in aggregate([corrupted], [at_eps]).warnings


def test_an_entry_listed_at_another_eps_does_not_move_a_board_robench_defines():
    """An imported entry's file edited to eps 0.3: the digits/Linf board stays at 0.2 and says so."""
    edited = read_listing(_imported(make_card("Edited2021Eps"), eps=0.3))
    card = make_card("Proper2020Card")
    agg = aggregate([edited, card], [make_record(card, 0.9, 0.4)])
    assert agg.boards[("digits", "Linf")].eps == 0.2
    assert "digits/Linf/Edited2021Eps is listed at eps 0.3 but its board uses eps 0.2" in agg.warnings
