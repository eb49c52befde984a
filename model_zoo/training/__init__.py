"""Training recipes for the shipped digits zoo: seeded, bit-reproducible on CPU.

>>> from model_zoo.training import train, save_checkpoint
>>> result = train("pgd_at", threat_model="Linf")          # doctest: +SKIP
>>> save_checkpoint(result.model, "pgd_at.safetensors")    # doctest: +SKIP

``robench train RECIPE`` is the command-line face (``model_zoo.training.cli``); docs/training.md
lists the recipes, their settings and the shipped models.
"""
from ._loop import cpu_fingerprint
from .recipes import COMMON_DEFAULTS, RECIPES, Recipe, get_recipe, resolve_settings
from .submission import read_training_spec, train_from_submission, update_submission
from .train import TrainedModel, digits_test_accuracy, save_checkpoint, train

__all__ = [
    "RECIPES", "COMMON_DEFAULTS", "Recipe", "get_recipe", "resolve_settings",
    "TrainedModel", "train", "save_checkpoint", "digits_test_accuracy",
    "read_training_spec", "train_from_submission", "update_submission", "cpu_fingerprint",
]
