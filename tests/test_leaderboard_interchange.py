"""Import and export of the de facto results format; the `robench leaderboard` commands."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark.budgets import BOARDS

from robench.cli import main
from leaderboard.aggregate import aggregate
from leaderboard.interchange import IMPORTED_ATTACK, export_dir, import_dir, percent_text, read_defacto_file
from leaderboard.sources import load_results
from leaderboard.synthetic import make_card, make_record

CARMON = {
    "link": "https://arxiv.org/abs/1905.13736",
    "name": "Unlabeled Data Improves Adversarial Robustness",
    "authors": "Yair Carmon, Aditi Raghunathan, Ludwig Schmidt, Percy Liang, John C. Duchi",
    "additional_data": True,
    "number_forward_passes": 1,
    "dataset": "cifar10",
    "venue": "NeurIPS 2019",
    "architecture": "WideResNet-28-10",
    "eps": "8/255",
    "clean_acc": "89.69",
    "reported": "62.5",
    "autoattack_acc": "59.53",
    "footnote": "Trained with <a href=\"https://x.org\">500k</a> extra images &amp; more.",
}


def _write(root: Path, rel: str, data) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_read_a_well_formed_file(tmp_path):
    path = _write(tmp_path, "cifar10/Linf/Carmon2019Unlabeled.json", {**CARMON, "external": "58.1", "unreliable": True})
    item = read_defacto_file(path, tmp_path)
    m, r = item.model, item.record
    assert (m.id, m.dataset, m.threat_model, m.eps) == ("Carmon2019Unlabeled", "cifar10", "Linf", 8 / 255)
    assert m.paper.authors[0] == "Yair Carmon" and len(m.paper.authors) == 5
    assert (m.paper.link, m.paper.title) == (CARMON["link"], CARMON["name"])
    assert (m.paper.year, m.paper.venue, m.architecture, m.additional_data) == (2019, "NeurIPS 2019", "WideResNet-28-10", True)
    assert m.reported.robust_accuracy == pytest.approx(0.625)
    assert m.footnote == CARMON["footnote"]  # kept as written; the site sanitises it (leaderboard.rich_text)
    assert (r.clean_accuracy, r.robust_accuracy) == (pytest.approx(0.8969), pytest.approx(0.5953))
    assert r.version == "standard" and r.flags == ["unreliable"] and r.model["id"] == "Carmon2019Unlabeled"
    assert item.external["robust_accuracy"] == pytest.approx(0.581) and item.external["attack"] == IMPORTED_ATTACK


@pytest.mark.parametrize("rel, change, reason", [
    ("cifar10/Linf/A2020a.json", {"autoattack_acc": None}, "'autoattack_acc' is missing"),
    ("cifar10/Linf/A2020a.json", {"clean_acc": "eighty"}, "'clean_acc' must be a percentage"),
    ("cifar10/Linf/A2020a.json", {"clean_acc": "101"}, "in [0, 100]"),
    ("cifar10/Linf/A2020a.json", {"eps": "4/255"}, "is not the cifar10/Linf board's 8/255"),
    ("cifar10/Linf/A2020a.json", {"eps": "a lot"}, "'eps'"),
    ("cifar10/Linf/A2020a.json", {"additional_data": "yes"}, "'additional_data' must be true or false"),
    ("cifar10/Linf/A2020a.json", {"number_forward_passes": 0}, "positive integer"),
    ("cifar10/Linf/A2020a.json", {"authors": 3}, "'authors'"),
    ("cifar10/Linf/A2020a.json", {"eps": "0.032"}, "not even within the rounding"),
    ("cifar10/Linf/A2020a.json", {"eps": None}, "belong in a 'corruptions' folder"),
    ("cifar10/corruptions/A2020a.json", {"eps": None}, "'corruptions_acc' is missing"),
    ("cifar10/corruptions/A2020a.json", {"eps": None, "corruptions_acc": "90", "corruptions_mce": "-3"},
     "'corruptions_mce' must be a non-negative number"),
    ("cifar10/corruptions/A2020a.json", {"eps": None, "corruptions_acc": "90", "corruptions_acc_3d": "130"},
     "'corruptions_acc_3d' must be a percentage in [0, 100]"),
    ("cifar10/gaussian/A2020a.json", {}, "no robench board"),
    ("cifar10/A2020a.json", {}, "not at <dataset>/<threat_model>/<ModelID>.json"),
    ("cifar10/Linf/bad id!.json", {}, "model id 'bad id!' may only use letters, digits, '_', '.', '-'"),
    ("cifar 10/Linf/A2020a.json", {}, "dataset folder 'cifar 10' may only use letters, digits, '_', '.', '-'"),
    ("cifar10/corruptions/A2020a.json", {"eps": None, "corruptions_acc": "90", "corruptions_mce": "nan"},
     "'corruptions_mce' must be a non-negative number like \"65.3\", got 'nan'"),
])
def test_malformed_files_are_reported_with_their_reason(tmp_path, rel, change, reason):
    _write(tmp_path, rel, {**CARMON, **change})
    _write(tmp_path, "cifar10/Linf/Good2020Model.json", CARMON)
    report = import_dir(tmp_path, tmp_path / "out")
    assert [p.name for p in report.imported] == ["Good2020Model.json"]
    assert len(report.problems) == 1 and reason in report.problems[0] and rel in report.problems[0]


def test_every_malformed_file_is_reported_one_by_one(tmp_path):
    _write(tmp_path, "cifar10/Linf/Broken2020Json.json", "{oops")
    _write(tmp_path, "cifar10/Linf/List2020Json.json", [1, 2])
    _write(tmp_path, "cifar10/Linf/NoAcc2020X.json", {k: v for k, v in CARMON.items() if k != "clean_acc"})
    _write(tmp_path, "cifar10/Linf/Fine2020Model.json", CARMON)
    report = import_dir(tmp_path, tmp_path / "out")
    assert len(report.imported) == 1 and len(report.problems) == 3
    by_file = {p.split(":")[0].rsplit("/", 1)[-1]: p for p in report.problems}
    assert "not valid JSON" in by_file["Broken2020Json.json"]
    assert "not a JSON object" in by_file["List2020Json.json"]
    assert "'clean_acc' is missing" in by_file["NoAcc2020X.json"]
    loaded = load_results(tmp_path / "out")
    assert [m.id for m in loaded.listed] == ["Fine2020Model"] and not loaded.problems


@pytest.mark.parametrize("written, value", [("0", 0.0), ("0.5", 0.5), (0.25, 0.25), ("123.4", 123.4), ("", None)])
def test_an_mce_is_any_non_negative_number(tmp_path, written, value):
    path = _write(tmp_path, "cifar10/corruptions/Low2020Mce.json",
                  {**CARMON, "eps": None, "corruptions_acc": "90", "corruptions_mce": written})
    assert read_defacto_file(path, tmp_path).record.corruptions.mce == value


def test_unreadable_rows_of_an_unaggregated_table_are_named_and_the_table_still_kept(tmp_path):
    table = ("model_id,fog,fog,fog,fog,fog\n,1,2,3,4,5\n"
             "Short2020Row,0.9,0.8,0.7,0.6,\n" "Big2020Value,0.9,0.8,0.7,0.6,1.5\n" "Good2020Row,0.9,0.8,0.7,0.6,0.5\n")
    _write(tmp_path / "src", "cifar10/corruptions/unaggregated_results.csv", table)
    for model_id in ("Short2020Row", "Big2020Value", "Good2020Row"):
        _write(tmp_path / "src", f"cifar10/corruptions/{model_id}.json", {**CARMON, "eps": "8/255", "corruptions_acc": "70"})
    report = import_dir(tmp_path / "src", tmp_path / "out")
    notes = "\n".join(report.warnings)
    assert report.problems == [] and len(report.imported) == 3
    assert report.kept == [tmp_path / "src" / "cifar10/corruptions/unaggregated_results.csv"]
    assert "row 3 (Short2020Row): not read: '' (fog, severity 5) is not a number" in notes
    assert "row 4 (Big2020Value): not read: '1.5' is not a fraction in [0, 1]" in notes
    assert "eps '8/255' ignored: the corruptions threat model has none" in notes
    records = {r.model["id"]: r for r in load_results(tmp_path / "out").records}
    assert records["Good2020Row"].corruptions.accuracy == {"fog": [0.9, 0.8, 0.7, 0.6, 0.5]}
    assert records["Short2020Row"].corruptions.accuracy == {} and records["Big2020Value"].eps is None


def test_percent_text():
    assert percent_text(0.4404) == "44.04"
    assert percent_text(0.5) == "50.00"
    assert percent_text(1 / 3) == "33.3333333333"
    assert float(percent_text(0.123456)) / 100 == pytest.approx(0.123456, abs=1e-12)


SHARED_COLUMNS = ["rank", "model_id", "paper", "venue", "architecture", "additional_data", "clean_accuracy",
                  "robust_accuracy", "best_known_robust_accuracy", "eps", "version"]


def _our_board() -> tuple[list, list, list]:
    cards = [make_card("Madry2018Towards", title="Towards Deep Learning Models", authors=("A. Madry", "D. Tsipras"),
                       venue="ICLR", year=2018, footnote="Uses <PGD> & early stopping."),
             make_card("Zhang2019Theoretically", title="TRADES", additional_data=True, width=64),
             make_card("Flag2020Masked", title="Masked, with a comma", link="javascript:alert(1)"),
             make_card("Tie2020Model"),
             make_card("Other2021Board", "digits", "L2")]
    records = [make_record(cards[0], 0.976, 0.638), make_record(cards[1], 0.95, 0.70),
               make_record(cards[2], 0.99, 0.90, flags=["black_box_beats_white_box"]),
               make_record(cards[3], 0.976, 0.638), make_record(cards[4], 0.9, 0.41)]
    external = [{"dataset": "digits", "threat_model": "Linf", "model_id": "Flag2020Masked", "robust_accuracy": 0.12,
                 "attack": "BPDA", "who": "Jane Doe", "link": "https://example.org"}]
    return cards, records, external


def test_round_trip_export_then_import_gives_the_same_table(tmp_path):
    ours = aggregate(*_our_board())
    export_dir(ours, tmp_path / "defacto")
    exported = json.loads((tmp_path / "defacto/digits/Linf/Flag2020Masked.json").read_text())
    assert exported["autoattack_acc"] == "90.00" and exported["external"] == "12.00" and exported["unreliable"] is True
    assert exported["eps"] == BOARDS[("digits", "Linf")][1] and isinstance(exported["clean_acc"], str)

    report = import_dir(tmp_path / "defacto", tmp_path / "imported")
    assert not report.problems and len(report.imported) == 5
    loaded = load_results(tmp_path / "imported")
    theirs = aggregate(loaded.listed, loaded.records, loaded.external)
    for key, board in ours.boards.items():
        mine = board.table[SHARED_COLUMNS].reset_index(drop=True)
        back = theirs.boards[key].table[SHARED_COLUMNS].reset_index(drop=True)
        assert mine.equals(back), f"{key}:\n{mine}\n{back}"
        assert list(board.table["flags"] != "") == list(theirs.boards[key].table["flags"] != "")
    assert theirs.models[("digits", "Linf", "Madry2018Towards")].model.footnote == "Uses <PGD> & early stopping."

    # and exporting the imported boards again writes the same bytes
    export_dir(theirs, tmp_path / "again")
    first = {p.relative_to(tmp_path / "defacto"): p.read_bytes() for p in (tmp_path / "defacto").rglob("*.json")}
    second = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*.json")}
    assert first == second


def test_reimport_without_external_removes_the_stale_external(tmp_path):
    _write(tmp_path, "src/cifar10/Linf/Carmon2019Unlabeled.json", {**CARMON, "external": "50"})
    import_dir(tmp_path / "src", tmp_path / "out")
    assert len(load_results(tmp_path / "out").external) == 1
    _write(tmp_path, "src/cifar10/Linf/Carmon2019Unlabeled.json", CARMON)
    import_dir(tmp_path / "src", tmp_path / "out")
    assert load_results(tmp_path / "out").external == []


@pytest.mark.parametrize("written, ok", [("8/255", True), ("0.031", True), ("0.0314", True), ("0.03", True), (0.031, True),
                                         ("0.032", False), ("0.0313", False), ("8", False), ("3.1e-2", True), ("1/32", False)])
def test_an_eps_is_the_boards_within_the_rounding_of_what_is_written(written, ok):
    from leaderboard.interchange import eps_matches_board

    assert eps_matches_board(written, 8 / 255)[0] is ok
    assert eps_matches_board("0.5", 0.5) == (True, False) and eps_matches_board("1", 0.5)[0] is False


def _quirk_corpus(root: Path) -> dict[str, str]:
    """Files in the published format with every quirk of PROTOCOL.md section 6, as the exact text written."""
    base = {k: v for k, v in CARMON.items() if k != "footnote"}
    files = {
        "cifar10/Linf/Plain2019Strings.json": {**base, "clean_acc": "58", "autoattack_acc": "0.0", "unreliable": False},
        "cifar10/Linf/Rounded2020Eps.json": {**base, "eps": "0.031", "unreliable": False},
        "cifar10/Linf/Empty2020Fields.json": {**base, "reported": "", "authors": "", "footnote": ""},
        "cifar10/Linf/Null2020Footnote.json": {**base, "footnote": None},
        "cifar10/Linf/Html2021Footnote.json": {**base, "footnote": "Robust at 8/255.<br>Uses <a href=\"https://x.org/a?b=1&amp;c=2\">extra data</a>."},
        "cifar10/Linf/Latex2021Footnote.json": {**base, "footnote": "Evaluated at \\(\\ell_\\infty\\) radius 8/255."},
        "cifar10/Linf/Newline2021Name.json": {**base, "name": "A Title With A Newline\n"},
        "cifar10/Linf/Absent2021Unreliable.json": {**base},
        "cifar10/Linf/Marked2021Unreliable.json": {**base, "unreliable": True},
        "cifar10/Linf/Same2021External.json": {**base, "external": "59.53"},
        "cifar10/Linf/Lower2021External.json": {**base, "external": "57.10", "footnote": "MALT found more."},
        "cifar100/Linf/Typo2022Dataset.json": {**base, "dataset": "cifar10", "eps": "8/255"},
        "cifar10/L2/Rice2020Overfitting.json": {**base, "eps": "0.5", "clean_acc": "88.67", "autoattack_acc": "67.68"},
        "cifar10/corruptions/Hendrycks2020AugMix.json": {**base, "eps": None, "clean_acc": "95.83",
                                                          "corruptions_acc": "89.09"},
        "imagenet/corruptions/Alexnet2012Imagenet.json": {**base, "dataset": "imagenet", "eps": None, "clean_acc": "56.24",
                                                          "corruptions_acc": "21.12", "corruptions_mce": "100.0",
                                                          "corruptions_acc_3d": "", "corruptions_mce_3d": ""},
    }
    written = {}
    table = ("model_id,gaussian_noise,,,,,shot_noise,shot_noise,shot_noise,shot_noise,shot_noise\n,1,2,3,4,5,1,2,3,4,5\n"
             "Hendrycks2020AugMix,0.93,0.9012,0.88,0.85,0.8,0.95,0.91,0.9,0.86,0.81\n"  # (two corruptions of 15)
             "Nobody2020Listed,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9\n")
    _write(root, "cifar10/corruptions/unaggregated_results.csv", table)
    written["cifar10/corruptions/unaggregated_results.csv"] = table
    for i, (rel, data) in enumerate(sorted(files.items())):
        data.pop("autoattack_acc", None) if "corruptions" in rel else None
        text = json.dumps(data, indent=2 if i % 2 else None, ensure_ascii=bool(i % 3)) + ("\n" if i % 2 else "")
        _write(root, rel, text)
        written[rel] = text
    return written


def test_every_quirk_of_the_published_files_imports_and_exports_back_unchanged(tmp_path):
    corpus = _quirk_corpus(tmp_path / "src")
    report = import_dir(tmp_path / "src", tmp_path / "results")
    assert report.problems == [] and len(report.imported) == len(corpus) - 1 and len(report.kept) == 1  # the table
    notes = "\n".join(report.warnings)
    assert "Rounded2020Eps.json: eps '0.031' taken as the board's 8/255" in notes
    assert "Typo2022Dataset.json: 'dataset' says 'cifar10'; the folder's 'cifar100' is used" in notes
    assert "row 'Nobody2020Listed' matches no imported corruptions file" in notes
    loaded = load_results(tmp_path / "results")
    assert loaded.problems == [] and len(loaded.kept) == 1 and len(loaded.import_notes) == len(report.warnings)
    augmix = next(r for r in loaded.records if r.model["id"] == "Hendrycks2020AugMix")
    assert augmix.threat_model == "corruptions" and augmix.eps is None and augmix.robust_accuracy == pytest.approx(0.8909)
    assert augmix.corruptions.accuracy == {"gaussian_noise": [0.93, 0.9012, 0.88, 0.85, 0.8],
                                           "shot_noise": [0.95, 0.91, 0.9, 0.86, 0.81]}
    alexnet = next(r for r in loaded.records if r.model["id"] == "Alexnet2012Imagenet")
    assert alexnet.corruptions.mce == pytest.approx(100.0) and alexnet.corruptions.accuracy_3d is None
    typo = next(m for m in loaded.listed if m.id == "Typo2022Dataset")
    assert typo.dataset == "cifar100"
    aggregation = aggregate(loaded.listed, loaded.records, loaded.external)
    export_dir(aggregation, tmp_path / "back", kept_from=tmp_path / "results")
    back = {str(p.relative_to(tmp_path / "back")): p.read_text(encoding="utf-8") for p in (tmp_path / "back").rglob("*.*")}
    assert back == corpus


def test_an_export_changes_only_what_robench_changed(tmp_path):
    """An imported entry with a new external evaluation: external is added, every other value kept as written."""
    corpus = _quirk_corpus(tmp_path / "src")
    import_dir(tmp_path / "src", tmp_path / "results")
    loaded = load_results(tmp_path / "results")
    external = {"model_id": "Plain2019Strings", "dataset": "cifar10", "threat_model": "Linf", "robust_accuracy": 0.0,
                "attack": "MALT", "who": "someone", "link": "https://x.org"}
    aggregation = aggregate(loaded.listed, loaded.records, [*loaded.external, external])
    export_dir(aggregation, tmp_path / "back")
    before = json.loads(corpus["cifar10/Linf/Plain2019Strings.json"])
    after = json.loads((tmp_path / "back/cifar10/Linf/Plain2019Strings.json").read_text())
    assert after == before  # 0.0 robust already: the new evaluation is not lower, nothing changes
    external["robust_accuracy"], external["model_id"] = 0.5, "Absent2021Unreliable"
    aggregation = aggregate(loaded.listed, loaded.records, [*loaded.external, external])
    export_dir(aggregation, tmp_path / "back2")
    before = json.loads(corpus["cifar10/Linf/Absent2021Unreliable.json"])
    after = json.loads((tmp_path / "back2/cifar10/Linf/Absent2021Unreliable.json").read_text())
    assert after == {**before, "external": "50.00"} and "unreliable" not in after


def test_an_export_writes_a_figure_robench_changed_even_by_half_a_point(tmp_path):
    _write(tmp_path / "src", "cifar10/Linf/Carmon2019Unlabeled.json", CARMON)
    import_dir(tmp_path / "src", tmp_path / "results")
    loaded = load_results(tmp_path / "results")
    record = loaded.records[0]
    record.robust_accuracy = 0.5903  # re-evaluated: half a point below the file's 59.53
    out = tmp_path / "fresh" / "export"  # nothing there yet: the board folders are made
    written = export_dir(aggregate(loaded.listed, [record], []), out)
    after = json.loads((out / "cifar10/Linf/Carmon2019Unlabeled.json").read_text(encoding="utf-8"))
    assert written == [out / "cifar10/Linf/Carmon2019Unlabeled.json"]
    assert after == {**CARMON, "autoattack_acc": "59.03"}


def test_kept_tables_are_written_back_into_folders_an_export_has_not_made(tmp_path):
    table = "model_id,fog,fog,fog,fog,fog\n,1,2,3,4,5\nGood2020Row,0.9,0.8,0.7,0.6,0.5\n"
    _write(tmp_path / "src", "cifar10/corruptions/unaggregated_results.csv", table)
    import_dir(tmp_path / "src", tmp_path / "results")
    out = tmp_path / "fresh" / "export"
    written = export_dir(aggregate([], [], []), out, kept_from=tmp_path / "results")  # no rows: only the table
    assert written == [out / "cifar10/corruptions/unaggregated_results.csv"]
    assert written[0].read_text(encoding="utf-8") == table


def test_an_export_of_robench_entries_lists_the_authors_as_the_format_does(tmp_path):
    card = make_card("Own2020Model", "cifar10", "Linf", authors=("Ada Lovelace", "Alan Turing", "Grace Hopper"))
    export_dir(aggregate([card], [make_record(card, 0.9, 0.5)], []), tmp_path)
    data = json.loads((tmp_path / "cifar10/Linf/Own2020Model.json").read_text(encoding="utf-8"))
    assert data["authors"] == "Ada Lovelace, Alan Turing, Grace Hopper" and data["link"] == "https://example.org/paper"


@pytest.mark.parametrize("table, reason", [
    ("model_id,fog\n", "expected two header rows (corruptions, then severities 1..5) and one row per model"),
    ("model_id,fog,fog\n,1,2\nA2020a,0.9\n", "rows [3] do not have the header's 3 columns"),
    ("model_id,fog\n,severe\nA2020a,0.9\n", "the second header row must give severities 1..5, got ['severe']"),
])
def test_a_malformed_unaggregated_table_is_refused_with_its_reason(tmp_path, table, reason):
    _write(tmp_path / "src", "cifar10/corruptions/unaggregated_results.csv", table)
    report = import_dir(tmp_path / "src", tmp_path / "out")
    assert len(report.problems) == 1 and report.problems[0].endswith(f"unaggregated_results.csv: {reason}")
    assert report.kept == []


def test_cli_import_build_export(tmp_path, capsys):
    _write(tmp_path, "src/cifar10/Linf/Carmon2019Unlabeled.json", CARMON)
    _write(tmp_path, "src/cifar10/Linf/Broken2020Json.json", "{")
    table = "model_id,fog,fog,fog,fog,fog\n,1,2,3,4,5\nGood2020Row,0.9,0.8,0.7,0.6,0.5\n"
    _write(tmp_path, "src/cifar10/corruptions/unaggregated_results.csv", table)
    (tmp_path / "submissions").mkdir()
    results = tmp_path / "results"
    assert main(["leaderboard", "import", str(tmp_path / "nowhere"), "--out", str(results / "imported")]) == 2
    assert "robench leaderboard import: error: " in capsys.readouterr().err
    assert main(["leaderboard", "import", str(tmp_path / "src"), "--out", str(results / "imported")]) == 1
    captured = capsys.readouterr()
    assert "imported 1 model(s)" in captured.out and "Broken2020Json.json: not valid JSON" in captured.err

    site = tmp_path / "site"
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(site),
                 "--submissions", str(tmp_path / "submissions")]) == 0
    board = (site / "boards/cifar10_Linf.html").read_text(encoding="utf-8")
    assert "Carmon2019Unlabeled" in board and "59.53" in board
    assert (site / "data/cifar10_Linf.csv").read_text().count("Carmon2019Unlabeled") == 1

    assert main(["leaderboard", "export", "--results", str(results), "--submissions", str(tmp_path / "submissions"),
                 "--out", str(tmp_path / "exported")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"exported 1 model(s) and 1 kept table(s) to {tmp_path / 'exported'}"
    back = (tmp_path / "exported/cifar10/Linf/Carmon2019Unlabeled.json").read_text()
    assert back == json.dumps(CARMON)  # the imported file, as it was
    assert (tmp_path / "exported/cifar10/corruptions/unaggregated_results.csv").read_text() == table  # kept, written back

    assert main(["leaderboard", "build", "--results", str(tmp_path / "nowhere"), "--out", str(site),
                 "--submissions", str(tmp_path / "submissions")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_leaderboard_show_prints_each_board_best_first(tmp_path, capsys):
    """`robench leaderboard show` answers "which model is the most robust?" in the terminal."""
    from model_zoo import get_card, list_models

    for i, model_id in enumerate(list_models(dataset="digits", threat_model="Linf")):
        card = get_card(model_id, dataset="digits", threat_model="Linf")
        make_record(card, 0.95, 0.05 * (i + 1)).save(tmp_path / "digits" / "Linf" / f"{model_id}.standard.json")
    assert main(["leaderboard", "show", "--results", str(tmp_path), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = list_models(dataset="digits", threat_model="Linf")
    assert lines[0].startswith("digits Linf (eps 0.2):") and len(lines) == 4  # title, header, two rows
    assert lines[2].split()[:2] == ["1", ids[-1]] and lines[3].split()[:2] == ["2", ids[-2]]
    assert main(["leaderboard", "show", "--results", str(tmp_path), "--threat-model", "L2"]) == 1
    assert "no board with results matches; evaluate a model first (make run)" in capsys.readouterr().err


def test_a_board_in_the_terminal_names_its_measure_and_shows_a_missing_accuracy_as_a_dash():
    import math
    from types import SimpleNamespace

    import pandas as pd

    from leaderboard.cli import format_board

    table = pd.DataFrame([
        {"rank": 1, "model_id": "Measured2020", "clean_accuracy": 0.9, "robust_accuracy": 0.7,
         "best_known_robust_accuracy": 0.7, "n_examples": 500, "flags": ""},
        {"rank": 2, "model_id": "Listed2021", "clean_accuracy": 0.8, "robust_accuracy": math.nan,
         "best_known_robust_accuracy": 0.6, "n_examples": 0, "flags": "unreliable"},
    ])
    board = SimpleNamespace(table=table, name="digits_corruptions", budget_text="digits-C", is_corruptions=True)
    lines = format_board(board).splitlines()
    assert lines[0] == "digits corruptions (digits-C): 2 model(s)"
    assert lines[1].split() == ["rank", "model", "clean", "%", "corruptions", "%", "best", "known", "%", "points", "flags"]
    assert lines[2].split() == ["1", "Measured2020", "90.00", "70.00", "70.00", "500"]
    assert lines[3].split() == ["2", "Listed2021", "80.00", "-", "60.00", "0", "unreliable"]
    assert "robust %" in format_board(SimpleNamespace(**{**vars(board), "is_corruptions": False}))


def test_leaderboard_show_warns_of_a_record_it_could_not_read(tmp_path, capsys):
    from model_zoo import get_card

    card = get_card("Madry2018Towards", dataset="digits", threat_model="Linf")
    make_record(card, 0.95, 0.5).save(tmp_path / "digits" / "Linf" / "Madry2018Towards.standard.json")
    (tmp_path / "digits" / "Linf" / "Broken.standard.json").write_text("{", encoding="utf-8")
    assert main(["leaderboard", "show", "--results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Madry2018Towards" in out
    assert [line for line in err.splitlines() if "Broken.standard.json" in line][0].startswith("warning: not read: ")
