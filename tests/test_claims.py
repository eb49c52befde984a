"""External claims rank only when their adversarial examples are checked, at the board's eps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from benchmark.attacks import PGD
from benchmark.data import load_dataset
from benchmark.external import read_external
from leaderboard.claims import verify_claims
from model_zoo import load_model

MODEL = "Madry2018Towards"


def _claim(folder: Path, **fields) -> Path:
    path = folder / f"{MODEL}__Doe.yaml"
    path.write_text(yaml.safe_dump({
        "model_id": MODEL, "dataset": "digits", "threat_model": "Linf", "eps": 0.2, "who": "Jane Doe",
        "attack": "a strong attack", "robust_accuracy": 0.0, "link": "https://example.org/r", **fields,
    }))
    return path


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> tuple[Path, int]:
    """Adversarial examples that PGD finds against the zoo model at the board's eps, and how many."""
    folder = tmp_path_factory.mktemp("claims")
    model = load_model(MODEL, dataset="digits", threat_model="Linf")
    x, y = load_dataset("digits", "test", n_examples=100)
    out = PGD("Linf", n_iter=20)(model, x, y, 0.2)
    indices = out.success.nonzero().flatten()
    save_file({"x_adv": out.x_adv[indices].contiguous(), "indices": indices.contiguous()}, str(folder / "adv.safetensors"))
    return folder, len(indices)


def test_a_claim_without_examples_ranks_nothing(tmp_path):
    """A typed 0.0% used to set the model's best known robust accuracy to 0 on the board."""
    verified, notes = verify_claims([read_external(_claim(tmp_path))])
    assert verified == [] and len(notes) == 1 and "no adversarial examples given" in notes[0]


def test_a_claim_at_another_eps_ranks_nothing(tmp_path, examples):
    folder, _ = examples
    verified, notes = verify_claims([read_external(_claim(folder, eps=1.0, adversarial_examples="adv.safetensors"))])
    assert verified == [] and "eps 1 is not the board's 0.2" in notes[0]


def test_an_eps_off_by_more_than_float_rounding_is_another_eps(tmp_path, examples):
    folder, _ = examples
    off = 0.2 * (1 + 1e-8)
    verified, notes = verify_claims([read_external(_claim(folder, eps=off, adversarial_examples="adv.safetensors"))])
    assert verified == [] and len(notes) == 1 and "eps 0.200000002 is not the board's 0.2" in notes[0]  # not "0.2 is not 0.2"


def test_the_test_points_are_read_from_the_data_folder_given(examples, monkeypatch, tmp_path):
    import benchmark.data

    folder, _ = examples
    real, asked = benchmark.data.load_dataset, []

    def spy(name, split="test", **kwargs):
        asked.append((name, split, kwargs.get("data_dir")))
        return real(name, split, **kwargs)

    monkeypatch.setattr(benchmark.data, "load_dataset", spy)
    (verified,), notes = verify_claims([read_external(_claim(folder, adversarial_examples="adv.safetensors"))],
                                       data_dir=str(tmp_path))
    assert notes == [] and asked == [("digits", "test", str(tmp_path))]


def test_a_claim_on_the_l2_board_is_checked_against_the_l2_model(tmp_path):
    model = load_model(MODEL, dataset="digits", threat_model="L2")
    x, y = load_dataset("digits", "test", n_examples=100)
    out = PGD("L2", n_iter=20)(model, x, y, 0.8)
    indices = out.success.nonzero().flatten()
    save_file({"x_adv": out.x_adv[indices].contiguous(), "indices": indices.contiguous()}, str(tmp_path / "adv.safetensors"))
    claim = read_external(_claim(tmp_path, threat_model="L2", eps=0.8, adversarial_examples="adv.safetensors"))
    (verified,), notes = verify_claims([claim])
    full_x, full_y = load_dataset("digits", "test")
    with torch.no_grad():
        correct = model(full_x).argmax(1) == full_y
    assert len(indices) > 0 and notes == []
    assert verified.robust_accuracy == pytest.approx((int(correct.sum()) - int(correct[indices].sum())) / len(full_y))


def test_checked_examples_rank_at_the_accuracy_they_prove(examples):
    folder, broken = examples
    assert broken > 0
    claim = read_external(_claim(folder, adversarial_examples="adv.safetensors"))
    (verified,), notes = verify_claims([claim])
    assert notes == []
    model = load_model(MODEL, dataset="digits", threat_model="Linf")
    x, y = load_dataset("digits", "test")
    from benchmark.external import load_adversarial_file

    _, indices = load_adversarial_file(folder / "adv.safetensors")
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    proven = (int(correct.sum()) - int(correct[indices].sum())) / len(y)  # the correctly classified ones they break
    assert verified.robust_accuracy == pytest.approx(proven)  # what the examples prove, not the typed 0.0
    assert verified.attack.endswith("(verified)")


def test_one_bad_example_and_the_claim_ranks_nothing(examples, tmp_path):
    from benchmark.external import load_adversarial_file

    folder, _ = examples
    x_adv, indices = load_adversarial_file(folder / "adv.safetensors")
    x, _ = load_dataset("digits", "test")
    x_adv[0] = (x[indices[0]] + 0.3).clamp(0, 1)  # outside the 0.2 ball
    save_file({"x_adv": x_adv.contiguous(), "indices": indices.contiguous()}, str(tmp_path / "adv.safetensors"))
    verified, notes = verify_claims([read_external(_claim(tmp_path, adversarial_examples="adv.safetensors"))])
    assert verified == [] and f"1 of {len(indices)} adversarial examples rejected" in notes[0]


def test_the_build_ranks_checked_claims_and_notes_the_others(tmp_path, examples):
    """`robench leaderboard build` (collect): a verified claim enters the best known robust accuracy, a
    claim without examples is a build note."""
    import shutil

    from leaderboard.cli import collect
    from leaderboard.synthetic import make_record
    from model_zoo import get_card

    repo = Path(__file__).resolve().parents[1]
    submissions = tmp_path / "submissions"
    shutil.copytree(repo / "submissions", submissions)
    external = submissions / "digits" / "Linf" / "external"
    external.mkdir()
    folder, _ = examples
    shutil.copy(folder / "adv.safetensors", external / "adv.safetensors")
    _claim(external, adversarial_examples="adv.safetensors")
    (external / "Madry2018Towards__Roe.yaml").write_text(
        _claim(tmp_path).read_text().replace("Jane Doe", "Joe Roe"))  # 0.0% typed, no examples
    card = get_card(MODEL, dataset="digits", threat_model="Linf")
    results = tmp_path / "results"
    make_record(card, 0.99, 0.98).save(results / "digits" / "Linf" / f"{MODEL}.standard.json")
    aggregation, problems = collect(results, submissions)
    row = aggregation.boards[("digits", "Linf")].table.set_index("model_id").loc[MODEL]
    assert 0.5 < row["best_known_robust_accuracy"] < 0.98  # the verified claim, not the typed 0.0
    assert any("Madry2018Towards__Roe.yaml: not ranked: no adversarial examples" in p for p in problems)
