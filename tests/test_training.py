"""The training recipes: bit-reproducibility, every recipe runs, settings are validated, the shipped
checkpoints agree with their submission files, and defensive distillation really masks gradients."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from benchmark.budgets import default_eps
from benchmark.data import load_dataset
from model_zoo.architectures.digits import DigitsCNN
from model_zoo.cards import TRAINING_REPEATS
from model_zoo.download import sha256_file
from model_zoo.training import (
    RECIPES, cpu_fingerprint, digits_test_accuracy, get_recipe, read_training_spec, resolve_settings,
    save_checkpoint, train, update_submission,
)
from model_zoo.training.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
DIGITS_SUBMISSIONS = sorted((ROOT / "submissions" / "digits").glob("*/*.yaml"))
SHIPPED = [p for p in DIGITS_SUBMISSIONS if "recipe" in (yaml.safe_load(p.read_text()).get("training") or {})]


@pytest.fixture(scope="module")
def small_data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_dataset("digits", "train")
    return x[:96], y[:96]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_bit_reproducible(tmp_path: Path) -> None:
    quick = {"epochs": 2}
    first, second = train("standard", overrides=quick), train("standard", overrides=quick)
    assert _same_state(first.model, second.model)
    assert save_checkpoint(first.model, tmp_path / "a.safetensors") == save_checkpoint(second.model, tmp_path / "b.safetensors")
    other_seed = train("standard", overrides=quick, seed=1)
    assert not _same_state(first.model, other_seed.model)


def test_training_leaves_global_state_alone(small_data) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    train("standard", overrides={"epochs": 1}, data=small_data)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_trains_one_epoch(name: str, small_data) -> None:
    recipe = get_recipe(name)
    overrides = {"epochs": 1, "batch_size": 32}
    if "steps" in recipe.defaults:
        overrides["steps"] = 2
    if "teacher_epochs" in recipe.defaults:
        overrides["teacher_epochs"] = 1
    losses: list[float] = []
    result = train(name, overrides=overrides, data=small_data, on_epoch=lambda epoch, loss: losses.append(loss))
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses[0]))
    assert result.settings["recipe"] == name and result.settings["seed"] == 0
    assert result.settings["epochs"] == 1
    if recipe.adversarial:
        assert result.settings["threat_model"] == "Linf" and result.settings["eps"] == default_eps("digits", "Linf")
    fresh = DigitsCNN(width=result.settings["arch_kwargs"]["width"])
    fresh.load_state_dict(result.model.state_dict(), strict=True)  # keys match the architecture
    assert not result.model.training
    logits = result.model(small_data[0][:5])
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()


def test_settings_are_validated() -> None:
    pgd = get_recipe("pgd_at")
    assert resolve_settings(pgd, threat_model="l2")["eps"] == default_eps("digits", "L2")
    assert resolve_settings(pgd, {"epochs": 3, "step_size": 1})["step_size"] == 1.0
    with pytest.raises(ValueError, match="no setting.*stpes"):
        resolve_settings(pgd, {"stpes": 3})
    with pytest.raises(TypeError, match="'epochs' must be int"):
        resolve_settings(pgd, {"epochs": "ten"})
    with pytest.raises(ValueError, match="takes no threat model"):
        resolve_settings(get_recipe("standard"), threat_model="Linf")
    with pytest.raises(ValueError, match="eps must be positive"):
        resolve_settings(pgd, eps=0.0)
    with pytest.raises(ValueError, match="did you mean trades"):
        get_recipe("trade")
    with pytest.raises(ValueError, match="unknown robench architecture"):
        train("standard", overrides={"architecture": "resnet", "epochs": 1})


def test_cli_trains_and_writes_a_summary(tmp_path: Path, capsys) -> None:
    assert train_main(["standard", "--set", "epochs=1", "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "standard_seed0.json").read_text())
    assert summary["sha256"] == sha256_file(tmp_path / "standard_seed0.safetensors")
    assert summary["training"]["epochs"] == 1 and 0 <= summary["clean_accuracy"] <= 1
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        train_main(["standard", "--set", "epochs"])
    with pytest.raises(SystemExit, match="no setting"):
        train_main(["standard", "--set", "epoch=1"])


def test_update_submission_rewrites_only_hash_and_accuracy(tmp_path: Path) -> None:
    source = SHIPPED[0]
    card = tmp_path / source.name
    card.write_text(source.read_text())
    update_submission(card, "ab" * 32, 0.5)
    data, before = yaml.safe_load(card.read_text()), yaml.safe_load(source.read_text())
    assert data["checkpoint"]["sha256"] == "ab" * 32 and data["reported"]["clean_accuracy"] == 0.5
    data["checkpoint"]["sha256"], data["reported"]["clean_accuracy"] = before["checkpoint"]["sha256"], before["reported"]["clean_accuracy"]
    assert data == before
    with pytest.raises(ValueError, match="sha256"):
        update_submission(card, "not-a-hash", 0.5)


def test_an_adversarial_recipe_trains_at_the_cards_threat_model_and_eps() -> None:
    """The training block no longer repeats them: the card's own threat model, eps and architecture are the settings."""
    for path in SHIPPED:
        spec, data = read_training_spec(path), yaml.safe_load(path.read_text())
        assert not set(data["training"]) & set(TRAINING_REPEATS)
        assert (spec.settings["architecture"], spec.settings["arch_kwargs"]) == (
            data["architecture"]["name"], data["architecture"]["kwargs"])
        if get_recipe(spec.recipe).adversarial:
            assert (spec.settings["threat_model"], spec.settings["eps"]) == (data["threat_model"], data["eps"])
        else:
            assert "eps" not in spec.settings and "threat_model" not in spec.settings


def test_the_zoo_ships_every_recipe() -> None:
    shipped = {yaml.safe_load(p.read_text())["training"]["recipe"] for p in SHIPPED}
    assert shipped == set(RECIPES)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_training_blocks_resolve_and_hashes_match(path: Path) -> None:
    spec = read_training_spec(path)
    data = yaml.safe_load(path.read_text())
    settings = resolve_settings(get_recipe(spec.recipe), spec.settings)
    # every setting of the recipe is written out in the file (a changed default cannot change a shipped model)
    assert {k: v for k, v in settings.items() if k not in TRAINING_REPEATS} == {
        k: v for k, v in data["training"].items() if k not in ("recipe", "seed", "torch_version", "cpu")}
    assert sha256_file(ROOT / spec.checkpoint_path) == spec.checkpoint_sha256


def _shipped_standard() -> Path:
    return next(p for p in SHIPPED if yaml.safe_load(p.read_text())["training"]["recipe"] == "standard")


@pytest.fixture(scope="module")
def retrained_standard():
    """The shipped undefended model retrained from its submission file (a few seconds)."""
    spec = read_training_spec(_shipped_standard())
    return spec, train(spec.recipe, seed=spec.seed, overrides=spec.settings)


def test_standard_checkpoint_is_reproduced_to_its_reported_accuracy(retrained_standard) -> None:
    """On any torch version and CPU, the recipe gives the card's clean accuracy (the bits may differ)."""
    spec, result = retrained_standard
    reported = yaml.safe_load(_shipped_standard().read_text())["reported"]["clean_accuracy"]
    assert abs(digits_test_accuracy(result.model) - reported) <= 0.01


def test_standard_checkpoint_is_reproduced_bit_for_bit(retrained_standard, tmp_path: Path) -> None:
    """Where the torch version and the CPU are the ones that made the shipped bytes, the bytes are equal."""
    spec, result = retrained_standard
    here = (torch.__version__, cpu_fingerprint())
    if (spec.torch_version, spec.cpu) != here:
        pytest.skip(f"checkpoint trained with torch {spec.torch_version} on CPU {spec.cpu}, running {here[0]} on {here[1]}")
    assert save_checkpoint(result.model, tmp_path / "retrained.safetensors") == spec.checkpoint_sha256


def test_training_records_torch_and_cpu() -> None:
    block = train("standard", overrides={"epochs": 1, "arch_kwargs": {"width": 4}}).settings
    assert block["torch_version"] == torch.__version__ and block["cpu"] == cpu_fingerprint()
    machine, capability, flags = cpu_fingerprint().split("/")
    assert machine and capability == torch.backends.cpu.get_cpu_capability() and len(flags) == 12


def test_shipped_distillation_model_masks_gradients() -> None:
    """At T = 1 the student's softmax saturates: the cross-entropy input gradient is exactly 0 on most points."""
    from safetensors.torch import load_file

    path = next(p for p in SHIPPED if yaml.safe_load(p.read_text())["training"]["recipe"] == "distillation")
    spec = read_training_spec(path)
    model = DigitsCNN(**spec.settings.get("arch_kwargs", {"width": 16}))
    model.load_state_dict(load_file(ROOT / spec.checkpoint_path), strict=True)
    x, y = load_dataset("digits", "test")
    x.requires_grad_(True)
    loss = F.cross_entropy(model.eval()(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    zero = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    assert zero > 0.5, f"only {zero:.0%} of the test points have a zero input gradient"
