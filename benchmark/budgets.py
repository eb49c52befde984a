"""The boards: which (dataset, threat model) pairs exist, and each one's eps.

Three threat models have boards: the Lp ones (``Linf``, ``L2``: attacks within an eps-ball) and
``corruptions`` (accuracy under common corruptions: no eps, so its boards' eps is None).

The digits budgets were calibrated on the shipped zoo (docs/datasets.md): the undefended
model falls below 10% robust accuracy and the best adversarially trained one stays above 50%.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping

from .data import DATASETS
from .threat_models import get_threat_model

__all__ = ["BOARDS", "BOARD_ORIGINS", "CORRUPTIONS", "CORRUPTED_SETS", "BOARD_THREAT_MODELS", "default_eps", "check_board", "format_eps",
           "board_threat_model", "is_corruptions", "same_eps"]

#: the threat model of common corruptions (benchmark.corruption_eval): a board without eps
CORRUPTIONS = "corruptions"
#: every threat model a board may have, canonical spelling
BOARD_THREAT_MODELS: tuple[str, ...] = ("Linf", "L2", CORRUPTIONS)
#: how the corrupted sets of each dataset are called
CORRUPTED_SETS: Mapping[str, str] = MappingProxyType({
    "digits": "digits-C", "cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C", "imagenet": "ImageNet-C"})

#: (dataset, threat model) -> (eps, how it is written on the board); a corruptions board has no eps (None) and
#: shows the name of its corrupted sets
BOARDS: Mapping[tuple[str, str], tuple[float | None, str]] = MappingProxyType({
    ("digits", "Linf"): (0.2, "0.2"),
    ("digits", "L2"): (0.8, "0.8"),
    ("cifar10", "Linf"): (8 / 255, "8/255"),
    ("cifar10", "L2"): (0.5, "0.5"),
    ("cifar100", "Linf"): (8 / 255, "8/255"),
    ("imagenet", "Linf"): (4 / 255, "4/255"),
    **{(dataset, CORRUPTIONS): (None, name) for dataset, name in CORRUPTED_SETS.items()},
})
#: why each board has its eps (docs/datasets.md's table is written from this)
BOARD_ORIGINS: Mapping[tuple[str, str], str] = MappingProxyType({
    **{board: "the field's standard" for board in BOARDS if board[0] != "digits"},
    ("digits", CORRUPTIONS): "robench's own (docs/corruptions.md)",
    ("digits", "Linf"): "calibrated (below)",
    ("digits", "L2"): "calibrated (below)",
})


def same_eps(a: float | None, b: float | None) -> bool:
    """Equal budgets (up to float rounding); None, a corruptions board's, equals only None."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def is_corruptions(threat_model: str) -> bool:
    return str(threat_model).lower() == CORRUPTIONS


def board_threat_model(name: str) -> str:
    """The canonical spelling of a board's threat model (``linf`` gives ``Linf``), or a clear error."""
    if is_corruptions(name):
        return CORRUPTIONS
    try:
        return get_threat_model(name).name
    except ValueError:
        raise ValueError(f"unknown threat model {name!r}; known: {', '.join(BOARD_THREAT_MODELS)}") from None


def check_board(dataset: str, threat_model: str) -> tuple[str, str]:
    """Canonical (dataset, threat model) names of an existing board, or a clear error."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    tm = board_threat_model(threat_model)
    if (dataset, tm) not in BOARDS:
        boards = ", ".join(f"{d}/{t}" for d, t in BOARDS)
        raise ValueError(f"there is no {dataset}/{tm} board; boards: {boards}")
    return dataset, tm


def default_eps(dataset: str, threat_model: str) -> float | None:
    """The board's eps (None on a corruptions board)."""
    return BOARDS[check_board(dataset, threat_model)][0]


def format_eps(dataset: str, threat_model: str, eps: float | None) -> str:
    """The board's own spelling for its eps (e.g. '8/255'), else a short decimal; "" for no eps (corruptions)."""
    if eps is None:
        return ""
    board_eps, text = BOARDS.get((dataset, threat_model), (None, None))
    if board_eps is not None and abs(board_eps - eps) < 1e-9:
        return text
    return f"{eps:.6g}"
