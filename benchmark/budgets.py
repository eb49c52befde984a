"""The boards: which (dataset, threat model) pairs exist, and each one's eps.

The digits budgets were calibrated on the shipped zoo (docs/datasets.md): the undefended
model falls below 10% robust accuracy and the best adversarially trained one stays above 50%.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from .data import DATASETS
from .threat_models import get_threat_model

__all__ = ["BOARDS", "BOARD_ORIGINS", "default_eps", "check_board", "format_eps"]

#: (dataset, threat model) -> (eps, how it is written on the board)
BOARDS: Mapping[tuple[str, str], tuple[float, str]] = MappingProxyType({
    ("digits", "Linf"): (0.2, "0.2"),
    ("digits", "L2"): (0.8, "0.8"),
    ("cifar10", "Linf"): (8 / 255, "8/255"),
    ("cifar10", "L2"): (0.5, "0.5"),
    ("cifar100", "Linf"): (8 / 255, "8/255"),
    ("imagenet", "Linf"): (4 / 255, "4/255"),
})
#: why each board has its eps (docs/datasets.md's table is written from this)
BOARD_ORIGINS: Mapping[tuple[str, str], str] = MappingProxyType({
    **{board: "the field's standard" for board in BOARDS if board[0] != "digits"},
    ("digits", "Linf"): "calibrated (below)",
    ("digits", "L2"): "calibrated (below)",
})


def check_board(dataset: str, threat_model: str) -> tuple[str, str]:
    """Canonical (dataset, threat model) names of an existing board, or a clear error."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    tm = get_threat_model(threat_model).name
    if (dataset, tm) not in BOARDS:
        boards = ", ".join(f"{d}/{t}" for d, t in BOARDS)
        raise ValueError(f"there is no {dataset}/{tm} board; boards: {boards}")
    return dataset, tm


def default_eps(dataset: str, threat_model: str) -> float:
    return BOARDS[check_board(dataset, threat_model)][0]


def format_eps(dataset: str, threat_model: str, eps: float) -> str:
    """The board's own spelling for its eps (e.g. '8/255'), else a short decimal."""
    board_eps, text = BOARDS.get((dataset, threat_model), (None, None))
    if board_eps is not None and abs(board_eps - eps) < 1e-9:
        return text
    return f"{eps:.6g}"
