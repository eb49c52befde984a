"""Rebuilding a shipped checkpoint from its submission file's ``training`` block.

The submission file is the one source of truth: its ``training`` block names the recipe and
every setting, and its ``checkpoint`` and ``reported.clean_accuracy`` entries are what
``update_submission`` rewrites after retraining (maintainers do this when a recipe or a
board's eps changes). Full validation of a submission file is the zoo's job
(``model_zoo.submission_schema``); this module reads only what training needs.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from benchmark.documents import load_document, load_yaml

from .recipes import get_recipe
from .train import TrainedModel, train

__all__ = ["TrainingSpec", "read_training_spec", "train_from_submission", "update_submission"]


@dataclass(frozen=True)
class TrainingSpec:
    """What a submission file says about how its checkpoint was trained."""

    model_id: str
    recipe: str
    seed: int
    #: every setting of the training block except recipe and seed
    settings: Mapping[str, Any]
    #: the checkpoint's repository-relative path (None for a checkpoint given by url)
    checkpoint_path: str | None
    checkpoint_sha256: str | None
    #: the torch version and the CPU (``cpu_fingerprint``) that produced the shipped bytes (others may differ in the last bits)
    torch_version: str | None = None
    cpu: str | None = None


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = load_document(text, path.suffix)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a submission file holds one mapping, got {type(data).__name__}")
    return data


def read_training_spec(path: str | Path) -> TrainingSpec:
    """The recipe, seed and settings of a submission trained by a robench recipe; a clear error otherwise.

    The settings are the card's ``training`` block plus what the card itself says: the architecture,
    and, for the adversarial recipes, the threat model and eps (``model_zoo.cards.TRAINING_REPEATS``).
    """
    from ..submission_schema import read_card

    path = Path(path)
    card = read_card(path)
    if card.training.recipe is None:
        raise ValueError(f"{path}: the 'training' block names no robench recipe (external models cannot be retrained)")
    recipe = get_recipe(card.training.recipe)
    settings = {**card.training.settings, "architecture": card.architecture.name,
                "arch_kwargs": dict(card.architecture.kwargs)}
    if recipe.adversarial:
        settings.update(threat_model=card.threat_model, eps=card.eps)
    return TrainingSpec(card.id, recipe.name, card.training.seed, settings, card.checkpoint.path, card.checkpoint.sha256,
                        card.training.torch_version, card.training.cpu)


def train_from_submission(path: str | Path, **kwargs: Any) -> TrainedModel:
    """Retrain the model a submission file describes (``kwargs`` go to ``train``, e.g. ``on_epoch``)."""
    spec = read_training_spec(path)
    return train(spec.recipe, seed=spec.seed, overrides=spec.settings, **kwargs)


def _replace_one(text: str, key: str, value: str, path: Path) -> str:
    pattern = re.compile(rf"^(\s*{key}:[ \t]*)[^\n#]*?([ \t]*(#.*)?)$", re.MULTILINE)
    hits = pattern.findall(text)
    if len(hits) != 1:
        raise ValueError(f"{path}: expected exactly one '{key}:' line to update, found {len(hits)}")
    return pattern.sub(lambda m: f"{m.group(1)}{value}{m.group(2)}", text)


def update_submission(path: str | Path, sha256: str, clean_accuracy: float) -> None:
    """Write a new checkpoint sha256 and reported clean accuracy into a submission file, keeping the rest as is."""
    path = Path(path)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    if path.suffix == ".json":
        data = _load(path)
        data.setdefault("checkpoint", {})["sha256"] = sha256
        data.setdefault("reported", {})["clean_accuracy"] = clean_accuracy
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = _replace_one(path.read_text(), "sha256", sha256, path)
        text = _replace_one(text, "clean_accuracy", repr(float(clean_accuracy)), path)
        check = load_yaml(text)
        if check["checkpoint"]["sha256"] != sha256 or check["reported"]["clean_accuracy"] != clean_accuracy:
            raise ValueError(f"{path}: the rewritten file does not read back the new values")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
