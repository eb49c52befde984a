"""The registry: built from a submissions folder, filters, duplicates, unknown names; the CLI; the real zoo."""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest
from benchmark.budgets import BOARDS, default_eps
import torch

from model_zoo import get_card, list_cards, list_models, load_model
from model_zoo.cli import register
from model_zoo.download import sha256_file
from model_zoo.registry import DuplicateModelError, Registry, UnknownModelError, default_registry
from model_zoo.submission_schema import SubmissionError, validate_file
from test_submission_schema import submission_document, write_submission


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """A repository with four cards: three on digits/Linf, one on digits/L2 (sharing an id with Linf)."""
    for model_id, threat in [("Madry2018Towards", "Linf"), ("Madry2018Towards", "L2"), ("Zhang2019Theoretically", "Linf"),
                             ("Madry2018Towards_Wide", "Linf")]:
        write_submission(tmp_path, submission_document(model_id, threat_model=threat))
    return tmp_path


def test_listing_and_filters(zoo: Path) -> None:
    reg = Registry(zoo / "submissions")
    assert len(reg) == 4 and reg.repo_root == zoo.resolve()
    assert reg.list_models() == ["Madry2018Towards", "Madry2018Towards_Wide", "Zhang2019Theoretically"]
    assert reg.list_models("digits", "L2") == ["Madry2018Towards"]
    assert reg.list_models(threat_model="linf", include="madry*") == ["Madry2018Towards", "Madry2018Towards_Wide"]
    assert reg.list_models("digits", "Linf", exclude=["*_Wide", "Zhang*"]) == ["Madry2018Towards"]
    assert reg.list_models("digits", "Linf", exclude="*_wide") == ["Madry2018Towards", "Zhang2019Theoretically"]
    assert reg.list_models("cifar10") == []
    assert [c.key for c in list_cards(include="Madry2018Towards", registry=reg)] == [
        ("digits", "L2", "Madry2018Towards"), ("digits", "Linf", "Madry2018Towards")]
    assert list_models("digits", "Linf", include="Zhang*", registry=reg) == ["Zhang2019Theoretically"]
    with pytest.raises(ValueError, match=r"^unknown dataset 'mnist'; known: digits, cifar10, cifar100, imagenet$"):
        reg.list_models("mnist")
    given = Registry(zoo / "submissions", repo_root=str(zoo))
    assert given.repo_root == zoo and len(given) == 4
    with pytest.raises(SubmissionError, match="does not exist under the repository root"):
        Registry(zoo / "submissions", repo_root=zoo / "submissions")  # checkpoint paths are read from the root given


def test_get_card(zoo: Path) -> None:
    reg = Registry(zoo / "submissions")
    card = get_card("Madry2018Towards", "digits", "L2", registry=reg)
    assert card.key == ("digits", "L2", "Madry2018Towards") and card.eps == default_eps("digits", "L2")
    assert reg.file_of(card) == zoo / "submissions/digits/L2/Madry2018Towards.yaml"
    with pytest.raises(ValueError, match="unknown threat model 'L1'"):
        reg.get_card("Madry2018Towards", "digits", "L1")
    with pytest.raises(ValueError, match="there is no cifar100/L2 board"):
        reg.get_card("Madry2018Towards", "cifar100", "L2")


def test_unknown_name_lists_close_matches(zoo: Path) -> None:
    reg = Registry(zoo / "submissions")
    with pytest.raises(UnknownModelError, match="closest: Madry2018Towards, Madry2018Towards_Wide"):
        reg.get_card("Madry2018Toward", "digits", "Linf")
    with pytest.raises(UnknownModelError, match="closest: Zhang2019Theoretically"):
        reg.get_card("zhang2019theoretically", "digits", "Linf")
    with pytest.raises(UnknownModelError, match=r"^no model 'Zhang2019Theoretically' on the digits/L2 board; "
                                                 r"'Zhang2019Theoretically' exists on digits/Linf$"):
        reg.get_card("Zhang2019Theoretically", "digits", "L2")
    with pytest.raises(UnknownModelError, match="no model 'Nothing' on the cifar10/Linf board"):
        reg.get_card("Nothing")  # the defaults are cifar10 / Linf


def test_at_most_five_close_matches_are_named(zoo: Path) -> None:
    for suffix in ("B", "C", "D", "E", "F"):
        write_submission(zoo, submission_document(f"Madry2018Towards_{suffix}"))
    with pytest.raises(UnknownModelError) as info:
        Registry(zoo / "submissions").get_card("Madry2018Towards_", "digits", "Linf")
    closest = str(info.value).split("closest: ")[1].split(", ")
    assert len(closest) == 5 and all(name.startswith("Madry2018Towards") for name in closest)


def test_duplicate_ids_raise(zoo: Path) -> None:
    write_submission(zoo, submission_document("Zhang2019Theoretically"), suffix=".json")
    with pytest.raises(DuplicateModelError) as info:
        Registry(zoo / "submissions")
    first, second = (zoo / "submissions/digits/Linf" / f"Zhang2019Theoretically.{s}" for s in ("json", "yaml"))
    assert str(info.value) == (f"model id 'Zhang2019Theoretically' is defined twice on digits/Linf: by {first} and by "
                               f"{second}")


def test_every_problem_of_every_file_is_raised_together(zoo: Path) -> None:
    for name in ("Madry2018Towards.yaml", "Zhang2019Theoretically.yaml"):
        path = zoo / "submissions/digits/Linf" / name
        path.write_text(path.read_text().replace("license: MIT", "license: ''"))
    with pytest.raises(SubmissionError) as info:
        Registry(zoo / "submissions")
    assert sorted(Path(p.file).name for p in info.value.problems) == ["Madry2018Towards.yaml", "Zhang2019Theoretically.yaml"]
    assert {p.field for p in info.value.problems} == {"license"}


def test_validate_skips_the_files_own_entry(zoo: Path) -> None:
    reg = Registry(zoo / "submissions")
    assert reg.validate(zoo / "submissions/digits/Linf/Madry2018Towards.yaml") == []
    copy = zoo / "elsewhere" / "submissions/digits/Linf/Madry2018Towards.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy(zoo / "submissions/digits/Linf/Madry2018Towards.yaml", copy)
    problems = validate_file(copy, zoo, existing_ids=[c.key for c in reg.cards()])
    assert [p.field for p in problems] == ["id"] and "collides" in problems[0].message
    through_registry = reg.validate(copy, check_hash=False)
    assert [p.field for p in through_registry] == ["id"] and "collides" in through_registry[0].message


def test_validate_hashes_the_checkpoint_unless_told_not_to(zoo: Path) -> None:
    reg = Registry(zoo / "submissions")
    path = zoo / "submissions/digits/Linf/Madry2018Towards.yaml"
    checkpoint = zoo / "submissions/digits/Linf/Madry2018Towards.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"tampered")
    problems = reg.validate(path)
    assert [p.field for p in problems] == ["checkpoint.sha256"] and "expected" in problems[0].message
    assert reg.validate(path, check_hash=False) == []
    card = get_card("Zhang2019Theoretically", "digits", registry=reg)  # the threat model defaults to Linf
    assert card.key == ("digits", "Linf", "Zhang2019Theoretically")


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Registry(tmp_path / "nowhere")
    (tmp_path / "submissions").mkdir()
    assert Registry(tmp_path / "submissions").list_models() == []


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="robench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table_and_show(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub = str(zoo / "submissions")
    code, out, _ = _run_cli(["models", "--submissions", sub, "--threat-model", "Linf"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["id", "dataset", "threat", "eps"]
    assert len(lines) == 2 + 3 and "Zhang2019Theoretically  digits" in out and "90.00" in out
    code, out, _ = _run_cli(["models", "show", "Madry2018Towards", "--submissions", sub], capsys)
    assert code == 0 and out.count("Madry2018Towards  (digits / ") == 2  # on both boards
    assert re.search(r"\n  Checkpoint sha256: +[0-9a-f]{64}\n", out) and re.search(r"\n  License: +MIT\n", out)
    code, out, _ = _run_cli(["models", "--submissions", sub, "show", "Madry2018Towards", "--dataset", "digits",
                             "--threat-model", "L2"], capsys)
    assert code == 0 and out.count(f"Madry2018Towards  (digits / L2, eps {BOARDS[('digits', 'L2')][1]})") == 1
    code, _, err = _run_cli(["models", "show", "Madry2018Toward", "--submissions", sub], capsys)
    assert code == 2 and "closest: Madry2018Towards" in err


def test_cli_table_rows_and_a_broken_submissions_folder(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub = str(zoo / "submissions")
    code, out, _ = _run_cli(["models", "--submissions", sub, "--threat-model", "L2"], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all(line == line.rstrip() for line in lines)  # no padding at the ends
    assert lines[2].split()[:4] == ["Madry2018Towards", "digits", "L2", BOARDS[("digits", "L2")][1]]
    assert lines[2].split()[-1] == "no"  # extra data: none
    path = zoo / "submissions/digits/Linf/Zhang2019Theoretically.yaml"
    path.write_text(path.read_text().replace("license: MIT", "license: ''"))
    code, out, err = _run_cli(["models", "--submissions", sub], capsys)
    assert code == 2 and out == "" and err.startswith("robench models: error: ") and "license" in err


# ------------------------------------------------------------------ the real zoo, one test per card

def _real_cards() -> list:
    try:
        return [pytest.param(c, id="/".join(c.key)) for c in default_registry().cards()]
    except (SubmissionError, DuplicateModelError) as exc:
        return [pytest.param(exc, id="registry-broken")]


@pytest.mark.parametrize("card", _real_cards())
def test_real_card_validates_and_its_checkpoint_matches(card: object) -> None:
    if isinstance(card, Exception):
        pytest.fail(f"the repository's submissions do not load: {card}")
    registry = default_registry()
    problems = registry.validate(registry.file_of(card))
    assert problems == [], "\n".join(map(str, problems))
    if card.checkpoint.path is not None:
        assert sha256_file(registry.repo_root / card.checkpoint.path) == card.checkpoint.sha256
        model = load_model(card.id, card.dataset, card.threat_model)
        c, h, w = card.preprocessing.input_size
        with torch.no_grad():
            assert model(torch.rand(2, c, h, w)).shape == (2, card.num_classes)
        # the device asked for is where the weights go ("meta": no memory, any machine)
        assert {t.device.type for t in load_model(card.id, card.dataset, card.threat_model, "meta").state_dict().values()} == {"meta"}


@pytest.mark.parametrize("card", _real_cards())
def test_real_model_reaches_its_cards_clean_accuracy(card: object) -> None:
    """Every shipped model reproduces its claimed clean accuracy on the test split within 0.5 points."""
    if isinstance(card, Exception):
        pytest.fail(f"the repository's submissions do not load: {card}")
    if card.dataset != "digits":
        pytest.skip("only the embedded digits data is available offline")
    from benchmark.data import load_dataset

    x, y = load_dataset(card.dataset, "test")
    model = load_model(card.id, card.dataset, card.threat_model)
    with torch.no_grad():
        measured = (model(x).argmax(1) == y).float().mean().item()
    assert abs(measured - card.reported.clean_accuracy) <= 0.005, (measured, card.reported.clean_accuracy)
