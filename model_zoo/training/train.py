"""``train(recipe, ...)``: one seeded, bit-reproducible training run on the digits training split."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from benchmark.data import load_dataset, num_classes
from benchmark.threat_models import get_threat_model

from ..cards import TRAINING_REPEATS
from ..download import sha256_file
from ._loop import accuracy, build_model, cpu_fingerprint, deterministic_cpu, fit
from .recipes import RecipeContext, get_recipe, resolve_settings

__all__ = ["TrainedModel", "train", "save_checkpoint", "digits_test_accuracy"]


@dataclass
class TrainedModel:
    model: nn.Module
    #: ``{"recipe": ..., <every setting>, "seed": ..., "torch_version": ..., "cpu": ...}`` (torch version and CPU
    #: are records, not settings: others may change the last bits); ``training_block`` is what a card holds of it
    settings: dict[str, Any]
    #: wall-clock seconds of the run (teacher included for distillation)
    seconds: float
    #: CPU seconds of this process during the run (the cost on one idle core; wall time grows on a busy machine)
    cpu_seconds: float

    @property
    def training_block(self) -> dict[str, Any]:
        """A submission file's ``training`` block: the settings less what the card says itself (architecture,
        threat model, eps: ``model_zoo.cards.TRAINING_REPEATS``)."""
        return {k: v for k, v in self.settings.items() if k not in TRAINING_REPEATS}

    @property
    def architecture(self) -> dict[str, Any]:
        """The card's ``architecture`` entry for this model."""
        return {"source": "robench", "name": self.settings["architecture"], "kwargs": dict(self.settings["arch_kwargs"])}


def train(
    recipe: str,
    *,
    threat_model: str | None = None,
    eps: float | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    data: tuple[Tensor, Tensor] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainedModel:
    """Train a fresh model with a recipe on the digits training split (or on ``data``).

    Runs on the CPU with one thread and deterministic algorithms, so the same recipe, settings,
    seed, torch version and CPU (``cpu_fingerprint``) give bit-identical weights. ``overrides`` changes any setting (see
    ``resolve_settings``); ``threat_model``/``eps`` are for the adversarial recipes only.
    """
    rec = get_recipe(recipe)
    settings = resolve_settings(rec, overrides, threat_model, eps)
    x, y = data if data is not None else load_dataset("digits", "train")
    x, y = x.detach().float().cpu().contiguous(), y.detach().long().cpu()
    classes = num_classes("digits")
    start, cpu_start = time.perf_counter(), time.process_time()
    with deterministic_cpu():
        model = build_model(settings["architecture"], settings["arch_kwargs"], classes, seed)
        ctx = RecipeContext(
            settings=settings,
            threat_model=get_threat_model(settings["threat_model"]) if rec.adversarial else None,
            eps=settings.get("eps"),
            seed=seed,
            x=x,
            y=y,
            num_classes=classes,
        )
        objective = rec.build(ctx)
        fit(model, objective, x, y, epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
            seed=seed, optimizer=settings["optimizer"], weight_decay=settings["weight_decay"], momentum=settings["momentum"],
            on_epoch=on_epoch)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    block = {"recipe": rec.name, **settings, "seed": int(seed), "torch_version": str(torch.__version__),
             "cpu": cpu_fingerprint()}
    return TrainedModel(model.eval(), block, seconds, cpu_seconds)


def digits_test_accuracy(model: nn.Module) -> float:
    """Clean accuracy on the 500-point digits test split (the number a card's ``reported`` holds)."""
    x, y = load_dataset("digits", "test")
    with deterministic_cpu():
        return accuracy(model, x, y)


def save_checkpoint(model: nn.Module, path: str | Path) -> str:
    """Write the state dict as safetensors (no metadata, so the bytes depend on the weights only); its sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    os.chmod(tmp, 0o644)  # readable like any other repository file (the writer creates it owner-only)
    tmp.replace(path)
    return sha256_file(path)
