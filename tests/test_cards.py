"""The card declared once: a field added to the declaration reaches the checker, the JSON Schema, the CLI and the site;
the generated schema in docs/ is current and accepts what the checker accepts; old files migrate."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import Field

from leaderboard.aggregate import aggregate
from leaderboard.site import build_site
from leaderboard.synthetic import make_record
from model_zoo.cards import TRAINING_REPEATS, HttpsLink, ModelCard, json_schema
from model_zoo.cli import describe_card
from model_zoo.migrate import migrate_file
from model_zoo.submission_schema import read_card, validate_document, validate_file
from model_zoo.training.submission import read_training_spec
from test_submission_schema import submission_document, write_submission

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "submission.schema.json"
SHIPPED = sorted((REPO / "submissions").glob("*/*/*.yaml"))


class CardWithCode(ModelCard):
    """The declaration with one more optional field, as a contributor would add it."""

    code: HttpsLink | None = Field(None, title="Code", description="Where the training code lives.")


def _valid(tmp_path: Path) -> tuple[Path, dict]:
    path = write_submission(tmp_path, submission_document())
    return path, yaml.safe_load(path.read_text())


def test_a_field_added_to_the_declaration_reaches_checker_schema_cli_and_site(tmp_path: Path) -> None:
    path, doc = _valid(tmp_path)
    doc["code"] = "https://example.org/code"
    card, problems = validate_document(doc, path, repo_root=tmp_path, card_type=CardWithCode)
    assert problems == [] and card is not None and card.code == "https://example.org/code"
    # the checker: the field's own rule, and the plain declaration still refuses what it does not declare
    bad = validate_document({**doc, "code": "ftp://x"}, path, repo_root=tmp_path, card_type=CardWithCode)[1]
    assert [(p.field, "is not an https link" in p.message) for p in bad] == [("code", True)]
    plain = validate_document(doc, path, repo_root=tmp_path)[1]
    assert [p.field for p in plain] == ["code"] and "unknown field" in plain[0].message
    # the schema
    assert json_schema(CardWithCode)["properties"]["code"]["title"] == "Code"
    assert "code" not in json_schema()["properties"]
    # the CLI's card and the site's model page
    assert "  Code:" in describe_card(card) and "https://example.org/code" in describe_card(card)
    build_site(aggregate([card], [make_record(card, 0.9, 0.5)]), tmp_path / "site")
    page = (tmp_path / "site" / "models" / "digits" / "Linf" / "Doe2024Example.html").read_text()
    assert "<dt>Code</dt><dd>https://example.org/code</dd>" in page


def test_the_schema_in_docs_is_the_generated_one() -> None:
    """docs/submission.schema.json is written by `robench submit schema --out docs/submission.schema.json`."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_independent_validator_accepts_every_shipped_file_by_the_schema(path: Path, schema_validator) -> None:
    assert [e.message for e in schema_validator.iter_errors(yaml.safe_load(path.read_text()))] == []


@pytest.mark.parametrize("change, where", [
    (lambda d: d.pop("license"), "license"),
    (lambda d: d.update(licence="MIT"), "licence"),
    (lambda d: d["paper"].update(year="2024"), "paper.year"),
    (lambda d: d["checkpoint"].update(url="https://example.org/x.safetensors"), "checkpoint"),
    (lambda d: d["training"].update(eps=0.1), "training"),
    (lambda d: d.update(training={"epochs": 3}), "training"),
    (lambda d: d.update(dataset="mnist"), "dataset"),
    (lambda d: d.update(id="doe2024example"), "id"),
    (lambda d: d["reported"].update(clean_accuracy=97.5), "reported.clean_accuracy"),
])
def test_the_schema_and_the_checker_refuse_the_same_faults(tmp_path: Path, schema_validator, change, where) -> None:
    path, doc = _valid(tmp_path)
    assert list(schema_validator.iter_errors(doc)) == []
    broken = copy.deepcopy(doc)
    change(broken)
    assert list(schema_validator.iter_errors(broken)), "the schema let the fault through"
    problems = validate_document(broken, path, repo_root=tmp_path)[1]
    assert any(p.field == where or p.field.startswith(where + ".") for p in problems), problems


# ------------------------------------------------------------------ files of the old form

OLD_FORM = """id: Doe2024Example   # kept as it is
dataset: digits
threat_model: Linf
eps: {eps}
training:
  recipe: pgd_at   # the recipe
  threat_model: Linf
  eps: {training_eps}
  architecture: digits_mlp
  arch_kwargs:
    hidden: 8
  epochs: 1
  seed: 0
"""


def _old_form(tmp_path: Path, training_eps: float | None = None) -> Path:
    """A valid submission whose training block repeats the card, as files did before the card was declared once."""
    path, doc = _valid(tmp_path)
    text = path.read_text()
    head = OLD_FORM.format(eps=doc["eps"], training_eps=doc["eps"] if training_eps is None else training_eps)
    rest = {k: v for k, v in doc.items() if k not in ("id", "dataset", "threat_model", "eps", "training")}
    path.write_text(head + yaml.safe_dump(rest, sort_keys=False))
    assert text != path.read_text()
    return path


def test_an_old_form_file_is_refused_with_the_fix_named(tmp_path: Path) -> None:
    path = _old_form(tmp_path)
    problems = validate_file(path, tmp_path)
    assert sorted(p.field for p in problems) == sorted(f"training.{k}" for k in TRAINING_REPEATS)
    assert all("robench submit migrate" in p.message for p in problems)


def test_migrate_removes_the_repeats_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _old_form(tmp_path)
    before = yaml.safe_load(path.read_text())
    assert sorted(migrate_file(path)) == sorted(TRAINING_REPEATS)
    text = path.read_text()
    assert "# kept as it is" in text and "recipe: pgd_at   # the recipe" in text
    after = yaml.safe_load(text)
    assert after == {**before, "training": {"recipe": "pgd_at", "epochs": 1, "seed": 0}}
    assert validate_file(path, tmp_path) == [] and read_card(path).training.settings == {"epochs": 1}
    spec = read_training_spec(path)
    assert spec.settings == {"epochs": 1, "architecture": "digits_mlp", "arch_kwargs": {"hidden": 8},
                             "threat_model": "Linf", "eps": before["eps"]}
    assert migrate_file(path) == []  # already migrated


def test_migrate_refuses_a_repeat_that_disagrees_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = _old_form(tmp_path, training_eps=0.35)
    text = path.read_text()
    with pytest.raises(ValueError, match="training.eps is 0.35 but the card's eps is"):
        migrate_file(path)
    assert path.read_text() == text


def test_migrate_takes_a_repeated_eps_written_as_a_fraction_of_the_same_value(tmp_path: Path) -> None:
    path = _old_form(tmp_path)
    eps = yaml.safe_load(path.read_text())["eps"]
    path.write_text(re.sub(r"(?m)^  eps: .*$", f"  eps: {eps * 1000:g}/1000", path.read_text()))
    assert yaml.safe_load(path.read_text())["training"]["eps"] == f"{eps * 1000:g}/1000"
    assert "eps" in migrate_file(path) and "eps" not in yaml.safe_load(path.read_text())["training"]


def test_migrate_refuses_a_repeated_eps_that_is_no_number(tmp_path: Path) -> None:
    path = _old_form(tmp_path)
    path.write_text(re.sub(r"(?m)^  eps: .*$", "  eps: a lot", path.read_text()))
    text = path.read_text()
    with pytest.raises(ValueError, match="training.eps is 'a lot' but the card's eps is"):
        migrate_file(path)
    assert path.read_text() == text


def test_migrate_refuses_a_flow_training_block_over_several_lines(tmp_path: Path) -> None:
    doc = submission_document()
    path = write_submission(tmp_path, doc)
    rest = yaml.safe_dump({k: v for k, v in doc.items() if k != "training"}, sort_keys=False)
    path.write_text(rest + "training: {recipe: pgd_at,\n  eps: %r, epochs: 1}\n" % doc["eps"])
    text = path.read_text()
    with pytest.raises(ValueError, match="neither a block mapping nor a one-line flow mapping; edit it by hand"):
        migrate_file(path)
    assert path.read_text() == text


def test_migrate_refuses_an_architecture_that_disagrees(tmp_path: Path) -> None:
    path = _old_form(tmp_path)
    path.write_text(path.read_text().replace("  architecture: digits_mlp", "  architecture: digits_cnn"))
    with pytest.raises(ValueError, match="training.architecture is 'digits_cnn' but the card's architecture.name is 'digits_mlp'"):
        migrate_file(path)


def test_migrate_rewrites_json_and_one_line_training_blocks(tmp_path: Path) -> None:
    doc = submission_document()
    doc["training"] = {"recipe": "pgd_at", "eps": doc["eps"], "architecture": "digits_mlp",
                       "arch_kwargs": {"hidden": 8}, "epochs": 1}
    as_json = write_submission(tmp_path / "j", doc, suffix=".json")
    assert migrate_file(as_json) == ["eps", "architecture", "arch_kwargs"]
    assert json.loads(as_json.read_text())["training"] == {"recipe": "pgd_at", "epochs": 1}
    as_yaml = write_submission(tmp_path / "y", doc)
    data = yaml.safe_load(as_yaml.read_text())
    rest = yaml.safe_dump({k: v for k, v in data.items() if k != "training"}, sort_keys=False)
    as_yaml.write_text(rest + "training: {recipe: pgd_at, eps: %r, architecture: digits_mlp, arch_kwargs: {hidden: 8}, "
                              "epochs: 1}\n" % doc["eps"])
    assert migrate_file(as_yaml) == ["eps", "architecture", "arch_kwargs"]
    assert as_yaml.read_text().endswith("\ntraining: {recipe: pgd_at, epochs: 1}\n")  # the order kept
    assert validate_file(as_yaml, tmp_path / "y") == []


def test_robench_submit_migrate_names_what_it_removed_and_each_file_it_could_not_rewrite(tmp_path: Path, capsys) -> None:
    from robench.cli import main

    old = _old_form(tmp_path / "a")
    wrong = _old_form(tmp_path / "b", training_eps=0.35)
    assert main(["submit", "migrate", str(old), str(wrong)]) == 1
    out, err = capsys.readouterr()
    removed = ", ".join(f"training.{k}" for k in ("threat_model", "eps", "architecture", "arch_kwargs"))  # the file's order
    assert out == f"{old}: removed {removed} (the card says them)\n"
    assert err.startswith(f"{wrong}: training.eps is 0.35 but the card's eps is ")
    assert main(["submit", "migrate", str(old)]) == 0
    assert capsys.readouterr().out == f"{old}: already in the current form\n"


def test_every_shipped_file_is_in_the_current_form() -> None:
    for path in SHIPPED:
        training = yaml.safe_load(path.read_text())["training"]
        assert not set(training) & set(TRAINING_REPEATS), path


def test_card_parts_read_as_one_line_each():
    """What `robench models show` and the model pages print for the preprocessing and the reported numbers."""
    from model_zoo.cards import Preprocessing, ReportedListing, Training

    digits = Preprocessing(mean=(0.0,), std=(1.0,), input_size=(1, 8, 8))
    assert str(digits) == "mean [0.0], std [1.0], input [1, 8, 8]"
    imagenet = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=(3, 224, 224),
                             resize=256, crop=224)
    assert str(imagenet) == ("mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225], input [3, 224, 224], "
                             "resize 256, crop 224")
    assert str(ReportedListing(clean_accuracy=0.9, robust_accuracy=None)) == "clean 90.00%, robust –"
    assert str(ReportedListing(clean_accuracy=0.8765, robust_accuracy=0.5)) == "clean 87.65%, robust 50.00%"
    assert str(Training(recipe="pgd_at", seed=0)) == "robench recipe pgd_at, seed 0"
    assert str(Training(recipe="pgd_at", seed=1, epochs=30, lr=0.1)) == "robench recipe pgd_at, seed 1 (epochs=30, lr=0.1)"
    assert str(Training(description="trained by the authors")) == "trained by the authors"
