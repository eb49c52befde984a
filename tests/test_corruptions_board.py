"""The corruptions threat model through every layer: the record (strictly read, its numbers checked against each
other), the runner and the command line, the journal and torchrun, cards and the schema, the boards, the CSV and
the site's heat map."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.corruption_eval import correct_bits, evaluate_corruptions  # noqa: E402
from benchmark.journal import Journal  # noqa: E402
from benchmark.record import CorruptionDetails, RecordError  # noqa: E402
from benchmark.runner import EvaluationError, evaluate  # noqa: E402
from leaderboard.aggregate import aggregate, write_csvs  # noqa: E402
from leaderboard.plots import heatmap_svg  # noqa: E402
from leaderboard.site import build_site  # noqa: E402
from leaderboard.sources import read_record  # noqa: E402
from leaderboard.synthetic import make_card, make_corruption_record, make_record  # noqa: E402
from model_zoo.cards import ModelCard, json_schema  # noqa: E402
from robench.cli import main as cli_main  # noqa: E402
from tests.runner_models import WEIGHTS_ENV, shared_weights  # noqa: E402


class MeanThreshold(nn.Module):
    """Class 1 when the image's mean intensity is above 0.5, else class 0; counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.fail_after: int | None = None

    def forward(self, x):
        self.seen += len(x)
        if self.fail_after is not None and self.seen > self.fail_after:
            raise KeyboardInterrupt("killed")
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def _tiny_sets():
    means = np.array([40, 100, 160, 220, 60, 200], dtype=np.uint8)
    clean = np.repeat(means[:, None, None], 8, 1).repeat(8, 2)
    labels = np.array([0, 0, 1, 0, 1, 1])
    sets = {(name, s): np.clip(clean.astype(int) + 30 * s * k, 0, 255).astype(np.uint8)
            for k, name in enumerate(("same", "brighter", "much_brighter")) for s in range(1, 6)}
    return sets, clean, labels


# ------------------------------------------------------------------ the record

def _saved(tmp_path, record):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record.to_dict()))
    return path


def test_a_corruptions_record_reads_back_and_its_edited_numbers_are_refused(tmp_path):
    sets, clean, labels = _tiny_sets()
    record = evaluate_corruptions(MeanThreshold(), "tiny", sets=sets, clean=clean, labels=labels)
    assert read_record(_saved(tmp_path, record)) == record
    data = record.to_dict()
    edits = {
        "an eps": ("eps", 0.1, "a corruptions record has no eps"),
        "the mean": ("robust_accuracy", record.robust_accuracy + 0.01, "is not the mean over the corruptions"),
        "a corruption's mean": ("corruptions", {**data["corruptions"], "per_corruption": {
            **data["corruptions"]["per_corruption"], "same": 0.9}}, "is not the mean of its severities"),
        "a point's bit": ("corruptions", {**data["corruptions"], "correct": {
            **data["corruptions"]["correct"], "same/1": correct_bits(np.ones(6, bool))}}, "6/6 points correct"),
        "four severities": ("corruptions", {**data["corruptions"], "accuracy": {
            **data["corruptions"]["accuracy"], "same": [0.5] * 4}}, "expected five fractions"),
        "no details": ("corruptions", None, "corruptions: missing"),
    }
    for name, (field, value, message) in edits.items():
        with pytest.raises(RecordError, match=message):
            read_record(_saved(tmp_path, type(record).from_dict({**data, field: value})))
    lp = make_record(make_card("Lp2020Model"), 0.9, 0.5)
    lp.corruptions = CorruptionDetails()
    with pytest.raises(RecordError, match="only a corruptions record has them"):
        read_record(_saved(tmp_path, lp))


def test_the_summary_lists_every_corruption_and_the_mean():
    sets, clean, labels = _tiny_sets()
    text = evaluate_corruptions(MeanThreshold(), "tiny", sets=sets, clean=clean, labels=labels).summary()
    assert "eps" not in text and "much_brighter" in text and "mean corruption accuracy:" in text


# ------------------------------------------------------------------ journal, runner, command line, torchrun

def test_an_interrupted_run_resumes_from_its_journal_with_the_same_record(tmp_path):
    sets, clean, labels = _tiny_sets()
    whole = evaluate_corruptions(MeanThreshold(), "tiny", sets=sets, clean=clean, labels=labels)
    model = MeanThreshold()
    model.fail_after = 6 * 7  # the clean set and six corrupted sets, then the run dies
    journal = tmp_path / "run.journal"
    with pytest.raises(KeyboardInterrupt):
        evaluate_corruptions(model, "tiny", sets=sets, clean=clean, labels=labels, journal=journal)
    finished = Journal(journal, json.loads(journal.read_text().splitlines()[0])["config"]).completed()
    assert sorted(finished) == list(range(7))
    again = MeanThreshold()
    resumed = evaluate_corruptions(again, "tiny", sets=sets, clean=clean, labels=labels, journal=journal)
    assert again.seen == 6 * (16 - 7)  # only the sets the journal did not hold
    assert {k: v for k, v in resumed.to_dict().items() if k not in ("created", "timings")} == \
           {k: v for k, v in whole.to_dict().items() if k not in ("created", "timings")}
    assert not journal.exists()  # the record is whole: the journal is gone


def test_each_rank_evaluates_every_world_th_set_only(monkeypatch):
    import benchmark.corruption_eval as corruption_eval

    sets, clean, labels = _tiny_sets()
    handed: dict = {}
    monkeypatch.setattr(corruption_eval.dist_utils, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(corruption_eval.dist_utils, "gather_chunks", lambda results: handed.update(results) or results)
    model = MeanThreshold()
    assert evaluate_corruptions(model, "tiny", sets=sets, clean=clean, labels=labels) is None  # rank 1 writes nothing
    assert sorted(handed) == [1, 3, 5, 7, 9, 11, 13, 15] and model.seen == 6 * 8  # the clean set (0) is rank 0's


def test_evaluate_routes_the_corruptions_threat_model_and_refuses_what_it_lacks(tmp_path):
    model = MeanThreshold()
    for kwargs, message in (({"eps": 0.1}, "has no eps"), ({"version": "fast"}, "one version, 'standard'"),
                            ({"x": torch.zeros(2, 1, 8, 8), "y": torch.zeros(2, dtype=torch.long)}, "x and y cannot")):
        with pytest.raises(EvaluationError, match=message):
            evaluate(model, "digits", "corruptions", **kwargs)
    with pytest.raises(EvaluationError, match="CIFAR-10-C.*missing"):
        evaluate(model, "cifar10", "corruptions", data_dir=tmp_path)
    record = evaluate(model, "digits", "Corruptions", n_examples=20, out=tmp_path)
    assert record.threat_model == "corruptions" and record.n_examples == 20 and len(record.corruptions.accuracy) == 15
    assert read_record(tmp_path / "digits" / "corruptions" / "MeanThreshold.standard.json") == record


def test_robench_evaluate_and_evaluate_zoo_cover_the_corruptions_board(tmp_path, capsys):
    assert cli_main(["evaluate", "--model", "LeCun1998Gradient", "--threat-model", "corruptions", "--n-examples", "50",
                     "--out", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "mean corruption accuracy" in shown and "contrast" in shown
    record = read_record(tmp_path / "digits" / "corruptions" / "LeCun1998Gradient.standard.json")
    assert record.model["checkpoint_sha256"] and record.n_examples == 50
    assert cli_main(["evaluate-zoo", "--dataset", "digits", "--threat-model", "corruptions", "--n-examples", "50",
                     "--out", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "LeCun1998Gradient (digits corruptions): record up to date, skipped" in out
    from model_zoo import list_models

    listed = list_models(dataset="digits", threat_model="corruptions")
    assert len(listed) >= 7 and sorted(p.name for p in (tmp_path / "digits" / "corruptions").glob("*.json")) == \
        sorted(f"{name}.standard.json" for name in listed)


def test_torchrun_two_processes_write_the_record_one_process_writes(tmp_path, monkeypatch):
    args = ["--model", "tests.runner_models:digits_mlp", "--threat-model", "corruptions", "--n-examples", "40",
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", WEIGHTS_ENV: str(shared_weights())}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "robench.run", *args, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    assert cli_main(["evaluate", *args, "--out", str(tmp_path / "one")]) == 0
    path = Path("digits", "corruptions", "digits_mlp.standard.json")

    def comparable(root):
        return {k: v for k, v in json.loads((root / path).read_text()).items() if k not in ("created", "timings")}

    assert comparable(tmp_path / "one") == comparable(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two" / path).parent.iterdir()) == [path.name]  # journals gone


# ------------------------------------------------------------------ cards and schema

def _corruptions_card_document():
    doc = yaml.safe_load((REPO / "submissions/digits/corruptions/LeCun1998Gradient.yaml").read_text())
    assert "eps" not in doc
    return doc


def test_a_corruptions_card_has_no_eps_and_an_lp_card_needs_one():
    doc = _corruptions_card_document()
    assert ModelCard.model_validate(doc).eps is None
    schema = json_schema()
    jsonschema.validate(doc, schema)
    with pytest.raises(ValueError, match="a corruptions board has no eps"):
        ModelCard.model_validate({**doc, "eps": 0.2})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "eps": 0.2}, schema)
    lp = {**doc, "threat_model": "Linf"}
    with pytest.raises(ValueError, match="eps: missing; a Linf board has a budget"):
        ModelCard.model_validate(lp)
    with pytest.raises(jsonschema.ValidationError, match="'eps' is a required property"):
        jsonschema.validate(lp, schema)


# ------------------------------------------------------------------ boards, CSV, site

ACCURACY = {"noise": [0.9, 0.8, 0.7, 0.6, 0.5], "blur": [0.95, 0.9, 0.85, 0.8, 0.75]}


def test_the_corruptions_board_ranks_by_mean_accuracy_and_its_csv_keeps_mce(tmp_path):
    cards = [make_card(f"Corr{2020 + i}Model", "digits", "corruptions") for i in range(3)]
    records = [make_corruption_record(cards[0], 0.99, ACCURACY),
               make_corruption_record(cards[1], 0.90, {k: [min(1.0, v + 0.05) for v in vals] for k, vals in ACCURACY.items()},
                                      mce=87.5),
               make_corruption_record(cards[2], 0.95, {k: [v - 0.1 for v in vals] for k, vals in ACCURACY.items()})]
    aggregation = aggregate(cards, records)
    table = aggregation.boards[("digits", "corruptions")].table
    assert list(table["model_id"]) == ["Corr2021Model", "Corr2020Model", "Corr2022Model"]
    assert table["robust_accuracy"].tolist() == pytest.approx([0.825, 0.775, 0.675])
    assert table["corruptions_mce"].tolist()[0] == pytest.approx(87.5)
    csv = (tmp_path / "data")
    write_csvs(aggregation, csv)
    text = (csv / "digits_corruptions.csv").read_text().splitlines()
    assert "corruptions_mce" in text[0].split(",") and ",87.5," in text[1]


def test_the_site_shows_the_corruptions_board_and_a_heat_map_per_model(tmp_path):
    card = make_card("Corr2020Model", "digits", "corruptions")
    lp = make_card("Lp2020Model", "digits", "Linf")
    build_site(aggregate([card, lp], [make_corruption_record(card, 0.99, ACCURACY), make_record(lp, 0.9, 0.5)]), tmp_path)
    board = (tmp_path / "boards" / "digits_corruptions.html").read_text()
    assert "digits · corruptions · digits-C" in board and "Corruptions %" in board
    assert 'data-column="apgd-ce"' not in board and 'data-column="best_known_robust_accuracy"' not in board
    assert "corruption accuracy (%)" in board  # the scatter's axis
    lp_board = (tmp_path / "boards" / "digits_Linf.html").read_text()
    assert 'data-column="corruptions_mce"' not in lp_board and 'data-column="apgd-ce"' in lp_board
    page = (tmp_path / "models" / "digits" / "corruptions" / "Corr2020Model.html").read_text()
    assert 'src="Corr2020Model.corruptions.svg"' in page and "<td>noise</td>" in page and "<strong>70.00</strong>" in page
    assert "Robustness curve" not in page
    heat = (tmp_path / "models/digits/corruptions/Corr2020Model.corruptions.svg").read_text()
    assert "Accuracy (%) per corruption and severity; clean 99.0%" in heat
    index = (tmp_path / "index.html").read_text()
    assert "digits-C" in index
    assert "corruptions-3d" not in page and not (tmp_path / "models/digits/corruptions/Corr2020Model.corruptions-3d.svg").exists()


def test_a_record_with_3d_corruptions_gets_their_heat_map_too(tmp_path):
    card = make_card("Three2022Dee", "imagenet", "corruptions")
    record = make_corruption_record(card, 0.8, ACCURACY, mce=70.0)
    record.corruptions.accuracy_3d_sets = {"flash": [0.9, 0.8, 0.7, 0.6, 0.5]}
    record.corruptions.accuracy_3d = 0.7
    build_site(aggregate([card], [record]), tmp_path)
    page = (tmp_path / "models/imagenet/corruptions/Three2022Dee.html").read_text()
    assert 'src="Three2022Dee.corruptions-3d.svg"' in page and "Mean over the 3D corruptions 70.00%" in page
    assert ">flash<" in (tmp_path / "models/imagenet/corruptions/Three2022Dee.corruptions-3d.svg").read_text()
    board = (tmp_path / "boards/imagenet_corruptions.html").read_text()
    assert 'data-column="corruptions_mce"' in board and 'data-column="corruptions_accuracy_3d"' in board


def test_the_heat_map_shades_by_error_and_escapes_names():
    svg = heatmap_svg({"<b>x</b>": [1.0, 0.75, 0.5, 0.25, 0.0]}, clean=0.99)
    fills = [part.split('fill="')[1][:7] for part in svg.split("<rect")[2:]]
    # white at no error, halfway at 25% errors, full red from 50% on (the mean, 50% errors, included)
    assert fills == ["#ffffff", "#d89090", "#b22222", "#b22222", "#b22222", "#b22222"]
    assert "<b>x</b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "clean 99.0%" in svg
    with pytest.raises(ValueError, match="five accuracies"):
        heatmap_svg({"a": [0.5] * 4})


# ------------------------------------------------------------------ the real layouts, end to end

class ConstantLevel(nn.Module):
    """Predicts class round(mean intensity * 255 / 25): an image of constant value 25 k is class k."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        level = (x.flatten(1).mean(1) * 255 / 25).round().long().clamp(0, self.num_classes - 1)
        return torch.nn.functional.one_hot(level, self.num_classes).float()


def test_cifar10_c_from_its_published_files_end_to_end(tmp_path):
    import pickle

    from benchmark.corruptions import CORRUPTIONS

    n = 10
    levels = (25 * np.arange(n)).astype(np.uint8)  # point i: constant value 25 i, class i
    (tmp_path / "cifar-10-batches-py").mkdir()
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.repeat(levels[:, None], 3072, 1), b"labels": list(range(n))}, fh)
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    for k, name in enumerate(CORRUPTIONS):
        shifted = [levels + (25 if (k == 0 and s >= 3) else 0) for s in range(1, 6)]  # gaussian_noise from severity 3
        np.save(folder / f"{name}.npy", np.concatenate([np.broadcast_to(v[:, None, None, None], (n, 32, 32, 3)) for v in shifted]))
    np.save(folder / "labels.npy", np.tile(np.arange(n), 5))
    record = evaluate(ConstantLevel(), "cifar10", "corruptions", data_dir=tmp_path)
    assert record.clean_accuracy == 1.0 and record.corruptions.accuracy["fog"] == [1.0] * 5  # invariant: its clean accuracy
    # shifted one class up: wrong but for class 9, which the model cannot go above
    assert record.corruptions.accuracy["gaussian_noise"] == [1.0, 1.0, 0.1, 0.1, 0.1]
    assert record.robust_accuracy == pytest.approx((14 + 2.3 / 5) / 15) and record.corruptions.mce is None
    np.save(folder / "labels.npy", np.tile(np.arange(n)[::-1], 5))
    with pytest.raises(EvaluationError, match="labels.npy does not list the cifar10 test set's labels"):
        evaluate(ConstantLevel(), "cifar10", "corruptions", data_dir=tmp_path)


def test_imagenet_c_from_its_folders_end_to_end_with_mce_against_alexnet(tmp_path, monkeypatch):
    import benchmark.data
    from PIL import Image

    from benchmark.corruption_eval import ALEXNET_IMAGENET_C_ERRORS
    from benchmark.corruptions import CORRUPTIONS, CORRUPTIONS_3D

    monkeypatch.setattr(benchmark.data, "imagenet_file_names", lambda: ["a.JPEG", "b.JPEG"])
    shade = {"n01": 0, "n02": 25}  # classes 0 and 1 of ConstantLevel

    def write(folder, swapped=False):
        for wnid, name in (("n01", "a.JPEG"), ("n02", "b.JPEG")):
            (folder / wnid).mkdir(parents=True, exist_ok=True)
            value = shade["n02" if wnid == "n01" else "n01"] if swapped else shade[wnid]
            Image.new("RGB", (224, 224), (value,) * 3).save(folder / wnid / name, format="JPEG", quality=100)

    write(tmp_path / "val")
    for name in CORRUPTIONS:
        for s in range(1, 6):
            write(tmp_path / "ImageNet-C" / name / str(s), swapped=name == "fog")  # fog swaps the two classes
    record = evaluate(ConstantLevel(2), "imagenet", "corruptions", data_dir=tmp_path)
    assert record.clean_accuracy == 1.0 and record.corruptions.accuracy["fog"] == [0.0] * 5
    assert record.robust_accuracy == pytest.approx(14 / 15) and record.corruptions.accuracy_3d is None
    # ImageNet-3DCC beside it: its 12 corruptions are evaluated too, apart from the board's mean
    for name in CORRUPTIONS_3D:
        for s in range(1, 6):
            write(tmp_path / "ImageNet-3DCC" / name / str(s), swapped=name == "flash" and s >= 4)
    record_3d = evaluate(ConstantLevel(2), "imagenet", "corruptions", data_dir=tmp_path, out=tmp_path / "out")
    assert read_record(tmp_path / "out/imagenet/corruptions/ConstantLevel.standard.json") == record_3d
    assert record_3d.robust_accuracy == record.robust_accuracy and record_3d.corruptions.mce == record.corruptions.mce
    assert record_3d.corruptions.accuracy_3d_sets["flash"] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert record_3d.corruptions.accuracy_3d == pytest.approx((11 + 0.6) / 12)
    assert len(record_3d.corruptions.sets_sha256) == 75 + 60 and "flash/5" in record_3d.corruptions.correct
    # fog's errors sum to 5, AlexNet's to 5 x 0.819324; every other corruption's to 0
    assert record.corruptions.mce == pytest.approx(100 * (1 / ALEXNET_IMAGENET_C_ERRORS["fog"]) / 15)
    # the first point alone reads only the first image: the second may be missing everywhere
    for folder in tmp_path.glob("**/n02"):
        (folder / "b.JPEG").unlink()
    first = evaluate(ConstantLevel(2), "imagenet", "corruptions", data_dir=tmp_path, n_examples=1)
    assert first.n_examples == 1 and first.corruptions.accuracy["fog"] == [0.0] * 5 and first.clean_accuracy == 1.0
