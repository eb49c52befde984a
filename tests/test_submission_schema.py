"""Submission files: a valid one becomes a card; each fault gets its own message; nothing crashes the validator.

``submission_document`` and ``write_submission`` are also used by the other zoo test files.
"""
from __future__ import annotations

import copy
import datetime
import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from benchmark.budgets import BOARDS, default_eps
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.torch import save_file

from model_zoo.architectures import DigitsMLP
from test_hostile_readers import FUZZ_EXAMPLES
from model_zoo.cards import ModelCard
from model_zoo.download import sha256_file
from model_zoo.submission_schema import (
    Problem, SubmissionError, read_card, validate_document, validate_file, validate_text,
)


def submission_document(model_id: str = "Doe2024Example", dataset: str = "digits", threat_model: str = "Linf") -> dict:
    """A valid digits document (a DigitsMLP with hidden=8) whose checkpoint sits next to it; sha256 is filled
    in by ``write_submission``."""
    year = int(re.search(r"[0-9]{4}", model_id)[0])
    return {
        "id": model_id,
        "dataset": dataset,
        "threat_model": threat_model,
        "eps": default_eps(dataset, threat_model) if dataset == "digits" else "8/255",
        "paper": {
            "title": "An Example of Robust Training",
            "link": "https://example.org/paper",
            "authors": ["Jane Doe", "John Roe"],
            "venue": "ICLR",
            "year": year,
        },
        "architecture": {"source": "robench", "name": "digits_mlp", "kwargs": {"hidden": 8}},
        "num_classes": 10,
        "preprocessing": {"mean": [0.5], "std": [0.25], "input_size": [1, 8, 8]},
        "checkpoint": {"path": f"submissions/{dataset}/{threat_model}/{model_id}.safetensors",
                       "sha256": "0" * 64, "format": "safetensors"},
        # robench's recipes train digits models; any other model describes its training
        "training": {"recipe": "pgd_at", "epochs": 1, "seed": 0} if dataset == "digits" else {"description": "PGD-AT"},
        "additional_data": False,
        "number_forward_passes": 1,
        "license": "MIT",
        "reported": {"clean_accuracy": 0.9, "robust_accuracy": 0.5},
        "footnote": None,
    }


def write_submission(
    root: Path, doc: dict, suffix: str = ".yaml", net: torch.nn.Module | None = None, name: str | None = None,
    checkpoint: bool = True,
) -> Path:
    """Write ``doc`` under ``root/submissions/<dataset>/<threat>/``; with ``checkpoint``, also a real safetensors
    checkpoint at its ``checkpoint.path`` (a seeded DigitsMLP(hidden=8) unless ``net`` is given), whose sha256
    goes into the document."""
    doc = copy.deepcopy(doc)
    ckpt = doc.get("checkpoint", {})
    if checkpoint and isinstance(ckpt, dict) and isinstance(ckpt.get("path"), str) and ".." not in ckpt["path"]:
        file = root / ckpt["path"]
        file.parent.mkdir(parents=True, exist_ok=True)
        if net is None:
            torch.manual_seed(0)
            net = DigitsMLP(hidden=8)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(file))
        ckpt["sha256"] = sha256_file(file)
    path = root / "submissions" / str(doc.get("dataset")) / str(doc.get("threat_model")) / f"{name or doc.get('id')}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) if suffix == ".json" else yaml.safe_dump(doc, sort_keys=False))
    return path


# ------------------------------------------------------------------ valid files

@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_valid_file_becomes_a_frozen_card(tmp_path: Path, suffix: str) -> None:
    path = write_submission(tmp_path, submission_document(), suffix)
    assert validate_file(path, tmp_path) == []
    card = read_card(path)
    assert isinstance(card, ModelCard)
    assert card.key == ("digits", "Linf", "Doe2024Example")
    assert card.eps == default_eps("digits", "Linf") and card.paper.year == 2024
    assert card.paper.authors == ("Jane Doe", "John Roe")
    assert card.architecture.kwargs["hidden"] == 8
    assert card.preprocessing.input_size == (1, 8, 8)
    assert card.source_file == f"submissions/digits/Linf/Doe2024Example{suffix}"
    assert card.checkpoint.sha256 == sha256_file(tmp_path / card.checkpoint.path)
    with pytest.raises(ValidationError, match="frozen"):
        card.id = "Other2024Name"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        card.training.seed = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        card.architecture.kwargs["hidden"] = 5  # type: ignore[index]


def test_eps_written_as_a_fraction_is_the_boards_eps(tmp_path: Path) -> None:
    doc = submission_document("Doe2024Wide", dataset="cifar10")
    doc["architecture"] = {"source": "robench", "name": "wide_resnet", "kwargs": {"depth": 10, "width": 1}}
    doc["preprocessing"] = {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "input_size": [3, 32, 32]}
    path = write_submission(tmp_path, {**doc, "training": {"recipe": "pgd_at"}})
    assert [p.field for p in validate_file(path, tmp_path)] == ["training.recipe"]  # recipes train digits models
    path = write_submission(tmp_path, doc)
    card = read_card(path)
    assert card.eps == 8 / 255
    doc["eps"] = 0.0314
    problems = validate_document(doc, path, repo_root=tmp_path)[1]
    assert [(p.field, "expected 8/255" in p.message) for p in problems] == [("eps", True)]


# ------------------------------------------------------------------ broken files, one fault each

def _set(where: str, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = where.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _delete(where: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = where.split(".")
        node = doc
        for p in parents:
            node = node[p]
        del node[last]
    return mutate


BROKEN: dict[str, tuple[Callable[[dict], None], str, str]] = {
    # name: (mutation, field, part of the message)
    "missing license": (_delete("license"), "license", "missing required field; expected a non-empty string"),
    "empty license": (_set("license", "  "), "license", "expected a non-empty string"),
    "unknown field": (_set("licence", "MIT"), "licence", "did you mean 'license'"),
    "unknown nested field": (_set("paper.yaer", 2024), "paper.yaer", "did you mean 'year'"),
    "wrong type": (_set("num_classes", "ten"), "num_classes", "expected an integer, got a string"),
    "bool is not an int": (_set("number_forward_passes", True), "number_forward_passes", "expected an integer"),
    "eps off the board": (_set("eps", 0.35), "eps", "does not match the digits/Linf board's eps; expected " + BOARDS[("digits", "Linf")][1]),
    "eps not a number": (_set("eps", "eight"), "eps", "not a number or a fraction"),
    "unknown dataset": (_set("dataset", "mnist"), "dataset", "unknown dataset 'mnist'"),
    "threat model spelling": (_set("threat_model", "linf"), "threat_model", "spelled 'Linf'"),
    "no such board": (lambda d: d.update(dataset="cifar100", threat_model="L2"), "threat_model",
                      "there is no cifar100/L2 board"),
    "wrong folder": (_set("threat_model", "L2"), "threat_model", "lies in the folder 'Linf'"),
    "id breaks the rule": (_set("id", "doe2024example"), "id", "does not follow <Surname><Year><FirstTitleWord>"),
    "id vs file name": (_set("id", "Doe2024Other"), "id", "does not match the file name 'Doe2024Example.yaml'"),
    "year vs id": (_set("paper.year", 2023), "paper.year", "does not match the year 2024 in the id"),
    "url not https": (_set("checkpoint", {"url": "http://example.org/m.safetensors", "sha256": "a" * 64,
                                          "format": "safetensors"}), "checkpoint.url", "must use https"),
    "path outside the repo": (_set("checkpoint.path", "../elsewhere/m.safetensors"), "checkpoint.path",
                              "outside the repository"),
    "absolute path": (_set("checkpoint.path", "/etc/m.safetensors"), "checkpoint.path", "outside the repository"),
    "missing checkpoint file": (_set("checkpoint.path", "submissions/digits/Linf/Nope.safetensors"),
                                "checkpoint.path", "does not exist under the repository root"),
    "short sha256": (_set("checkpoint.sha256", "abc123"), "checkpoint.sha256", "64 lowercase hex"),
    "url and path": (_set("checkpoint.url", "https://example.org/m.safetensors"), "checkpoint",
                     "has both 'url' and 'path'"),
    "format vs suffix": (_set("checkpoint.format", "pt"), "checkpoint.format", "expected format 'safetensors'"),
    "unknown format": (_set("checkpoint.format", "onnx"), "checkpoint.format", "unknown format 'onnx'"),
    "forward passes": (_set("number_forward_passes", 0), "number_forward_passes", "expected at least 1, got 0"),
    "num classes": (_set("num_classes", 100), "num_classes", "does not match digits; expected 10"),
    "accuracy in percent": (_set("reported.clean_accuracy", 97.5), "reported.clean_accuracy", "outside [0, 1]"),
    "robust above clean": (_set("reported.robust_accuracy", 0.95), "reported.robust_accuracy", "exceeds the clean"),
    "mean length": (_set("preprocessing.mean", [0.5, 0.5, 0.5]), "preprocessing.mean",
                    "has 3 value(s) but input_size has 1 channel(s)"),
    "std not positive": (_set("preprocessing.std", [0.0]), "preprocessing.std", "expected positive values"),
    "input size": (_set("preprocessing.input_size", [3, 32, 32]), "preprocessing.input_size",
                   "does not match digits; expected [1, 8, 8]"),
    "crop outside imagenet": (_set("preprocessing.crop", 224), "preprocessing.crop", "only ImageNet"),
    "unknown architecture": (_set("architecture.name", "digit_mlp"), "architecture.name", "did you mean digits_mlp"),
    "unknown source": (_set("architecture.source", "keras"), "architecture.source", "unknown source 'keras'"),
    "bad kwargs": (_set("architecture.kwargs", {"depth": 3}), "architecture.kwargs", "does not accept the kwargs"),
    "bad kwarg value": (_set("architecture.kwargs", {"hidden": -3}), "architecture.kwargs", "got -3"),
    "training": (_set("training", {"epochs": 3}), "training", "expected a 'recipe'"),
    "authors": (_set("paper.authors", "Jane Doe"), "paper.authors", "expected a list of non-empty strings"),
    "paper link": (_set("paper.link", "arxiv 1706.06083"), "paper.link", "is not an https link"),
    # a template's placeholders passed the check and were published
    "placeholder link": (_set("paper.link", "https://arxiv.org/abs/xxxx.xxxxx"), "paper.link", "placeholder ('xxxx')"),
    "placeholder bibtex": (_set("paper.bibtex", "@article{...}"), "paper.bibtex", "placeholder ('...')"),
    "placeholder title": (_set("paper.title", "<title of the paper>"), "paper.title", "placeholder"),
    "mapping expected": (_set("reported", [0.9, 0.5]), "reported", "expected a mapping, got a list"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_fault_gets_its_specific_message(tmp_path: Path, name: str) -> None:
    mutate, where, message = BROKEN[name]
    doc = submission_document()
    path = write_submission(tmp_path, doc)  # writes the checkpoint; the broken document is validated next
    broken = copy.deepcopy(yaml.safe_load(path.read_text()))
    mutate(broken)
    path.write_text(yaml.safe_dump(broken))
    problems = validate_file(path, tmp_path)
    assert any(p.field == where and message in p.message for p in problems), problems
    assert all(p.file == str(path) for p in problems)
    with pytest.raises(SubmissionError) as info:
        read_card(path)
    assert {p.field for p in info.value.problems} >= {where} - {"checkpoint.sha256"}


CARD_FIELDS = ("id, dataset, threat_model, eps, paper, additional_data, number_forward_passes, reported, license, "
               "footnote, architecture, num_classes, preprocessing, checkpoint, training")
#: faults and every problem they give, word for word: what the submitter reads
EXACT: dict[str, tuple[Callable[[dict], None], list[tuple[str, str]]]] = {
    "input size with a zero": (_set("preprocessing.input_size", [1, 0, 8]), [
        ("preprocessing.input_size", "expected three positive integers [channels, height, width], got [1, 0, 8]")]),
    "input size of two numbers": (_set("preprocessing.input_size", [8, 8]), [
        ("preprocessing.input_size", "expected three positive integers [channels, height, width], got [8, 8]")]),
    "backslashes in a relative path": (_set("checkpoint.path", "submissions\\digits\\m.safetensors"), [
        ("checkpoint.path", "'submissions\\\\digits\\\\m.safetensors' is outside the repository; expected a path "
                            "relative to the repository root with '/' separators and no '..'")]),
    "keyword names": (_set("architecture.kwargs", {"1x": 2}), [
        ("architecture.kwargs", "expected keyword names (identifiers), got ['1x']")]),
    "keys that are not strings": (_set("architecture.kwargs", {1: 2}), [
        ("architecture.kwargs", "expected string keys, got 1")]),
    "a boolean": (_set("additional_data", "yes"), [("additional_data", "expected true or false, got a string ('yes')")]),
    "a number": (_set("reported.clean_accuracy", "high"), [
        ("reported.clean_accuracy", "expected a number, got a string ('high')")]),
    "a list of numbers": (_set("preprocessing.mean", "0.5"), [
        ("preprocessing.mean", "expected a list of numbers, got a string ('0.5')")]),
    "an item of a list": (_set("preprocessing.mean", [True]), [("preprocessing.mean", "item 0: expected a number, got a boolean (True)")]),
    "a choice with an underscore in its name": (_set("threat_model", "L1"), [
        ("threat_model", "unknown threat model 'L1'; expected one of Linf, L2, corruptions (did you mean 'L2'?)")]),
    "an empty list": (_set("paper.authors", []), [("paper.authors", "expected at least 1 item(s), got none")]),
    # pydantic adds "too short" when no item is valid: the items' own problems are what is wrong
    "a list of wrong items": (_set("paper.authors", [1, 2]), [
        ("paper.authors", "item 0: expected a non-empty string, got an integer (1)"),
        ("paper.authors", "item 1: expected a non-empty string, got an integer (2)")]),
    # its schema's anyOf only requires one of two keys: the block is still a mapping
    "a mapping with one of two keys": (_set("training", [1, 2]), [("training", "expected a mapping, got a list ([1, 2])")]),
    "a missing mapping": (_delete("training"), [("training", "missing required field; expected a mapping")]),
    "a nullable field": (_set("footnote", 5), [("footnote", "expected a non-empty string or null, got an integer (5)")]),
    "a blank string": (_set("license", "  "), [("license", "expected a non-empty string")]),
    "a path that climbs out": (_set("checkpoint.path", "submissions/../../m.safetensors"), [
        ("checkpoint.path", "'submissions/../../m.safetensors' is outside the repository; expected a path relative to "
                            "the repository root with '/' separators and no '..'")]),
    "resizing outside ImageNet": (_set("preprocessing.resize", 256), [
        ("preprocessing.resize", "only ImageNet entries resize or crop; expected null for digits")]),
    "a boolean budget": (_set("eps", True), [("eps", 'expected a number or a fraction such as "8/255", got True')]),
    "a value of another type": (_set("paper.year", datetime.date(2024, 1, 1)), [
        ("paper.year", "expected an integer, got a date (datetime.date(2024, 1, 1))")]),
    "an unknown field like no other": (_set("zzz", 1), [("zzz", "unknown field; expected only: " + CARD_FIELDS)]),
    "a blank field name": (_set(" ", 1), [("' '", "unknown field; expected only: " + CARD_FIELDS)]),
    "an integer": (_set("num_classes", 10.5), [("num_classes", "expected an integer, got a number (10.5)")]),
    "no channel": (_set("preprocessing.mean", []), [("preprocessing.mean", "expected one finite number per channel, got []")]),
    # a rule over the whole card (the board's budget) was reported at the field '(document).eps'
    "a missing budget": (_delete("eps"), [("eps", "missing; a Linf board has a budget (docs/datasets.md lists each board's)")]),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_faults_are_worded_exactly(tmp_path: Path, name: str) -> None:
    mutate, expected = EXACT[name]
    path = write_submission(tmp_path, submission_document())
    broken = copy.deepcopy(yaml.safe_load(path.read_text()))
    mutate(broken)
    path.write_text(yaml.safe_dump(broken))
    assert [(p.field, p.message) for p in validate_file(path, tmp_path)] == expected


def test_a_file_that_cannot_be_read_is_one_problem(tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "digits" / "Linf" / "Doe2024Example.yaml"
    folder.mkdir(parents=True)
    assert validate_file(folder, tmp_path) == [Problem(str(folder), "(file)", "cannot be read: Is a directory")]
    latin = folder.with_name("Doe2024Latin.yaml")
    latin.write_bytes(b"id: \xff\n")
    assert validate_file(latin, tmp_path) == [Problem(str(latin), "(file)", "not UTF-8 text: 'utf-8' codec can't "
                                                                             "decode byte 0xff in position 4: invalid start byte")]
    latin.write_text("id: [unclosed\n")
    (problem,) = validate_file(latin, tmp_path)
    assert problem.file == str(latin) and problem.field == "(document)" and problem.message.startswith("invalid YAML: ")
    other = folder.with_suffix(".toml")
    other.write_text("id = 1")
    assert validate_file(other, tmp_path) == [
        Problem(str(other), "(file)", "unsupported file type '.toml'; expected one of .yaml, .yml, .json")]


def test_a_checkpoint_linked_from_outside_the_repository_is_refused(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "elsewhere.safetensors"
    path = write_submission(repo, submission_document())
    ckpt = repo / "submissions" / "digits" / "Linf" / "Doe2024Example.safetensors"
    ckpt.rename(outside)
    ckpt.symlink_to(outside)
    assert [(p.field, p.message) for p in validate_file(path, repo)] == [
        ("checkpoint.path", f"'submissions/digits/Linf/Doe2024Example.safetensors' resolves outside the repository "
                            f"{repo} (a symbolic link?)")]


@pytest.mark.parametrize("threat_model, eps, expected", [
    ("Linf", None, ("eps", "missing; a Linf board has a budget (docs/datasets.md lists each board's)")),
    ("corruptions", 0.2, ("eps", "0.2, but a corruptions board has no eps; leave it out (or write null)")),
])
def test_a_rule_across_fields_is_listed_with_the_fields_own_faults(tmp_path: Path, threat_model, eps, expected) -> None:
    """The card's budget rule is a model validator, which pydantic skips once a field fails: it went unreported
    until every other fault was fixed."""
    doc = submission_document(threat_model=threat_model)
    doc["eps"] = eps
    if eps is None:
        del doc["eps"]
    alone = write_submission(tmp_path / "alone", doc)
    assert [(p.field, p.message) for p in validate_file(alone, tmp_path / "alone")] == [expected]
    doc["footnote"], doc["paper"]["authors"] = 5, "Jane Doe"
    path = write_submission(tmp_path / "more", doc)
    assert [(p.field, p.message) for p in validate_file(path, tmp_path / "more")] == [
        ("paper.authors", "expected a list of non-empty strings, got a string ('Jane Doe')"),
        ("footnote", "expected a non-empty string or null, got an integer (5)"),
        expected,
    ]
    doc["threat_model"] = 7  # the rule reads a field that failed: it says nothing more
    problems = validate_file(write_submission(tmp_path / "typo", doc, name="Doe2024Example"), tmp_path / "typo")
    assert "eps" not in [p.field for p in problems] and "threat_model" in [p.field for p in problems]


def test_a_card_problem_reads_as_written() -> None:
    from model_zoo.cards import CardProblems

    assert str(CardProblems(("eps", "expected 0.2"), ("", "no board"))) == "eps: expected 0.2; no board"


def test_a_cards_rows_are_its_fields_as_text(tmp_path: Path) -> None:
    doc = submission_document()
    doc["training"] = {"recipe": "pgd_at", "seed": 0, "epochs": 1, "lr": 0.1}
    card = read_card(write_submission(tmp_path, doc))
    assert card.rows() == [
        ("Id", "Doe2024Example"), ("Dataset", "digits"), ("Threat model", "Linf"), ("Eps", "0.2"),
        ("Paper", "An Example of Robust Training"), ("Link", "https://example.org/paper"),
        ("Authors", "Jane Doe, John Roe"), ("Venue", "ICLR"), ("Year", "2024"), ("Extra training data", "no"),
        ("Forward passes per prediction", "1"), ("Reported by the authors", "clean 90.00%, robust 50.00%"),
        ("License", "MIT"), ("Architecture", "digits_mlp(hidden=8) (robench)"), ("Classes", "10"),
        ("Preprocessing", "mean [0.5], std [0.25], input [1, 8, 8]"), ("Checkpoint sha256", card.checkpoint.sha256),
        ("Format", "safetensors"), ("Path", "submissions/digits/Linf/Doe2024Example.safetensors"),
        ("Training", "robench recipe pgd_at, seed 0 (epochs=1, lr=0.1)"),
    ]
    assert ("Extra training data", "yes") in read_card(write_submission(tmp_path, {**doc, "additional_data": True})).rows()


def test_the_edges_of_the_rules_are_valid(tmp_path: Path) -> None:
    """Accuracies of exactly 0 and 1, and a file named by the shortest path that shows its board."""
    doc = submission_document()
    doc["reported"] = {"clean_accuracy": 1.0, "robust_accuracy": 0.0}
    path = write_submission(tmp_path, doc)
    assert validate_file(path, tmp_path) == []
    text = path.read_text()
    assert validate_text(text, "digits/Linf/Doe2024Example.yaml", repo_root=tmp_path)[1] == []
    (short,) = validate_text(text, "Linf/Doe2024Example.yaml", repo_root=tmp_path)[1]
    assert (short.field, short.message) == ("(file)", "expected the file at submissions/digits/Linf/Doe2024Example.yaml")


def test_an_imagenet_input_size_must_be_its_crop(tmp_path: Path) -> None:
    doc = submission_document("Doe2024Net", dataset="imagenet")
    doc.update(eps="4/255", num_classes=1000, architecture={"source": "torchvision", "name": "resnet18", "kwargs": {}},
               preprocessing={"mean": [0.5] * 3, "std": [0.2] * 3, "input_size": [3, 256, 256], "crop": 224})
    path = write_submission(tmp_path, doc)
    assert [(p.field, p.message) for p in validate_file(path, tmp_path)] == [
        ("preprocessing.input_size", "[3, 256, 256] does not match the crop 224; expected [3, 224, 224]")]
    doc["preprocessing"]["input_size"] = [3, 224, 224]
    assert validate_file(write_submission(tmp_path, doc), tmp_path) == []


@pytest.mark.parametrize("suffix, text, message", [
    (".yaml", "id: [unclosed\n", "invalid YAML"),
    (".json", '{"id": "Doe2024Example",}', "invalid JSON at line 1"),
    (".yaml", "id: Doe2024Example\nid: Doe2024Other\n", "duplicate key 'id'"),
    (".json", '{"id": "Doe2024Example", "id": "Doe2024Other"}', "duplicate key 'id'"),
    (".yaml", "- just\n- a list\n", "the document is a list; expected a mapping"),
    (".yaml", "", "the document is empty"),
    (".yaml", "[" * 1000 + "]" * 1000, "nested too deeply"),
    (".yaml", "[" * 100_000 + "]" * 100_000, "more than 64 levels"),  # took minutes: the scanner is quadratic in depth
    (".json", '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    (".yaml", "id: " + "A" * (1 << 20), "characters; expected at most 1,048,576"),
    (".yaml", "id: &name Doe2024Example\nfootnote: *name\n", "anchors and aliases are not allowed (line 1, column 5)"),
    (".toml", "id = 1", "unsupported file type '.toml'"),
])
def test_syntax_errors_are_problems_not_crashes(tmp_path: Path, suffix: str, text: str, message: str) -> None:
    path = tmp_path / "submissions" / "digits" / "Linf" / f"Doe2024Example{suffix}"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    problems = validate_file(path, tmp_path)
    assert len(problems) == 1 and message in problems[0].message, problems


#: nine levels of nine aliases each: a few hundred bytes that a YAML loader would expand to 9**9 strings
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


@pytest.mark.timeout(60)
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """One such file used to hang every command that reads the submissions (the registry reads them all)."""
    from model_zoo.registry import Registry

    doc = submission_document()
    del doc["footnote"]
    path = write_submission(tmp_path, doc)  # valid, but for the footnote: a wrongly typed field used to expand
    path.write_text(path.read_text() + "footnote:\n" + "".join("  " + line + "\n" for line in ALIAS_BOMB.splitlines()))
    (problem,) = validate_file(path, tmp_path)
    assert "anchors and aliases are not allowed" in problem.message
    with pytest.raises(SubmissionError, match="anchors and aliases are not allowed"):
        Registry(tmp_path / "submissions")


def test_a_byte_order_mark_is_read_past_in_both_formats(tmp_path: Path) -> None:
    for suffix in (".yaml", ".json"):
        path = write_submission(tmp_path / suffix[1:], submission_document(), suffix)
        path.write_text("\ufeff" + path.read_text(), encoding="utf-8")
        assert validate_file(path, tmp_path / suffix[1:]) == []


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    doc = submission_document()
    path = write_submission(tmp_path, doc)
    doc = yaml.safe_load(path.read_text())
    doc["eps"] = 0.35
    doc["checkpoint"]["sha256"] = "XYZ"
    del doc["license"]
    doc["reported"]["clean_accuracy"] = 1.5
    doc["architecture"]["name"] = "nope"
    path.write_text(yaml.safe_dump(doc))
    problems = validate_file(path, tmp_path)
    assert {p.field for p in problems} == {"eps", "checkpoint.sha256", "license", "reported.clean_accuracy",
                                           "architecture.name"}
    text = str(SubmissionError(problems))
    assert "5 problem(s)" in text and str(path) in text


def test_checkpoint_hash_is_checked_against_the_file(tmp_path: Path) -> None:
    path = write_submission(tmp_path, submission_document())
    ckpt = tmp_path / "submissions/digits/Linf/Doe2024Example.safetensors"
    ckpt.write_bytes(ckpt.read_bytes() + b"tampered")
    problems = validate_file(path, tmp_path)
    assert [p.field for p in problems] == ["checkpoint.sha256"]
    assert sha256_file(ckpt) in problems[0].message
    assert validate_file(path, tmp_path, check_hash=False) == []


def test_id_collisions(tmp_path: Path) -> None:
    path = write_submission(tmp_path, submission_document())
    assert validate_file(path, tmp_path, existing_ids=[("digits", "L2", "Doe2024Example")]) == []
    for taken in (("digits", "Linf", "doe2024example"), "Doe2024Example"):
        problems = validate_file(path, tmp_path, existing_ids=[taken])
        assert [p.field for p in problems] == ["id"] and "collides" in problems[0].message
    twin = write_submission(tmp_path, submission_document(), suffix=".json")
    problems = validate_file(twin, tmp_path)
    assert [(p.file, p.field, p.message) for p in problems] == [(str(twin), "id", (
        "'Doe2024Example' is also defined by Doe2024Example.yaml in the same folder; expected one file per id"))]


def test_a_folder_that_cannot_be_listed_leaves_the_twin_check_out(tmp_path: Path, monkeypatch) -> None:
    path = write_submission(tmp_path, submission_document())

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    assert validate_file(path, tmp_path) == []


def test_problem_reads_as_file_field_message() -> None:
    p = Problem("submissions/digits/Linf/X.yaml", "eps", "expected 0.1")
    assert str(p) == "submissions/digits/Linf/X.yaml: eps: expected 0.1"


# ------------------------------------------------------------------ property-based: never a crash

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
_FIELDS = ["id", "dataset", "threat_model", "eps", "paper", "paper.year", "paper.authors", "architecture",
           "architecture.name", "architecture.source", "architecture.kwargs", "num_classes", "preprocessing",
           "preprocessing.mean", "preprocessing.input_size", "preprocessing.crop", "checkpoint", "checkpoint.url",
           "checkpoint.path", "checkpoint.sha256", "checkpoint.format", "training", "reported",
           "reported.clean_accuracy", "license", "number_forward_passes"]

_FILE_NAME = "submissions/digits/Linf/Doe2024Example.yaml"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A repository with a valid submission (and its checkpoint); returns (root, the document)."""
    root = tmp_path_factory.mktemp("repo")
    path = write_submission(root, submission_document())
    return root, yaml.safe_load(path.read_text())


def _check_outcome(outcome: tuple[ModelCard | None, list[Problem]], file: Path) -> None:
    card, problems = outcome
    assert (card is None) == bool(problems)
    for p in problems:
        assert isinstance(p, Problem) and p.field and p.message and p.file == str(file)


@settings(max_examples=FUZZ_EXAMPLES or 150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_json)
def test_random_documents_give_problems_not_crashes(repo: tuple[Path, dict], document: Any) -> None:
    root, _ = repo
    _check_outcome(validate_document(document, root / _FILE_NAME, repo_root=root), root / _FILE_NAME)


@settings(max_examples=FUZZ_EXAMPLES or 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(_FIELDS), _json), max_size=4))
def test_random_field_values_give_problems_not_crashes(repo: tuple[Path, dict], changes: list[tuple[str, Any]]) -> None:
    root, valid = repo
    doc = copy.deepcopy(valid)
    for where, value in changes:
        try:
            _set(where, value)(doc)
        except (TypeError, KeyError):
            pass  # the parent was already replaced by a non-mapping
    card, problems = validate_document(doc, root / _FILE_NAME, repo_root=root, check_hash=True)
    _check_outcome((card, problems), root / _FILE_NAME)
    if not changes:
        assert card is not None


@settings(max_examples=FUZZ_EXAMPLES or 150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200) | _json.map(yaml.safe_dump) | _json.map(json.dumps),
       suffix=st.sampled_from([".yaml", ".json"]))
def test_random_text_gives_problems_not_crashes(repo: tuple[Path, dict], text: str, suffix: str) -> None:
    root, _ = repo
    file = (root / _FILE_NAME).with_suffix(suffix)
    _check_outcome(validate_text(text, file, repo_root=root), file)


@pytest.mark.parametrize("field, value, message", [
    ("paper.link", "http://example.org/paper", "is not an https link"),
    ("id", "Doe2024Example\n", "does not follow <Surname><Year>"),
    ("checkpoint.sha256", "0" * 64 + "\n", "is not a full sha256"),
])
def test_patterns_hold_to_the_letter(tmp_path: Path, field: str, value: str, message: str) -> None:
    """`$` also matches before a final newline: "Doe2024Example\\n" was listed as a second model."""
    doc = submission_document()
    path = write_submission(tmp_path, doc)
    data = yaml.safe_load(path.read_text())
    section, _, key = field.rpartition(".")
    (data[section] if section else data)[key] = value
    path.write_text(yaml.safe_dump(data))
    assert any(p.field == field and message in p.message for p in validate_file(path, tmp_path))
