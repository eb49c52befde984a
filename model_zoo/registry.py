"""The registry: every submission file under ``submissions/<dataset>/<threat_model>/``, read into cards.

One card per (dataset, threat model, id). A registry is built from a submissions folder (by default
the ``submissions`` folder of the repository holding this package); all files are read and every
problem of every file is raised at once as a :class:`~model_zoo.submission_schema.SubmissionError`.
Two files defining the same id on a board (``X.yaml`` and ``x.json``) raise :class:`DuplicateModelError`.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import os
from pathlib import Path
from typing import Iterable

from benchmark.budgets import check_board
from benchmark.data import DATASETS
from benchmark.budgets import board_threat_model

from .cards import ModelCard
from .submission_schema import SUBMISSION_SUFFIXES, Problem, SubmissionError, read_card, validate_file

__all__ = [
    "Registry", "DuplicateModelError", "UnknownModelError", "default_registry", "default_submissions_dir",
    "list_models", "list_cards", "get_card",
]

Patterns = str | Iterable[str] | None


class DuplicateModelError(ValueError):
    """Two submission files define the same model id on one board."""


class UnknownModelError(LookupError):
    """No card has this id on the requested board; the message lists the closest ids."""


def default_submissions_dir() -> Path:
    """``<repository root>/submissions``, the repository root being the parent of the model_zoo package."""
    return Path(__file__).resolve().parent.parent / "submissions"


def _patterns(value: Patterns) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


class Registry:
    """The cards of one submissions folder, read once at construction.

    ``repo_root`` (the folder checkpoint paths are relative to) defaults to the submissions folder's parent.
    """

    def __init__(self, submissions_dir: str | os.PathLike | None = None, repo_root: str | os.PathLike | None = None) -> None:
        if submissions_dir is not None and not Path(submissions_dir).is_dir():
            raise FileNotFoundError(f"submissions folder {submissions_dir} does not exist")
        self.submissions_dir = Path(submissions_dir) if submissions_dir is not None else default_submissions_dir()
        self.repo_root = Path(repo_root) if repo_root is not None else self.submissions_dir.resolve().parent
        self._cards: dict[tuple[str, str, str], ModelCard] = {}
        self._files: dict[tuple[str, str, str], Path] = {}
        self._load()

    def submission_files(self) -> list[Path]:
        """The files ``<dataset>/<threat_model>/<name>.<yaml|yml|json>`` of the submissions folder, sorted."""
        if not self.submissions_dir.is_dir():
            return []
        return sorted(p for p in self.submissions_dir.glob("*/*/*")
                      if p.is_file() and p.suffix.lower() in SUBMISSION_SUFFIXES)

    def _load(self) -> None:
        problems: list[Problem] = []
        seen: dict[tuple[str, str, str], Path] = {}
        for path in self.submission_files():
            try:
                card = read_card(path, self.repo_root)
            except SubmissionError as exc:
                problems.extend(exc.problems)
                continue
            folded = (card.dataset, card.threat_model, card.id.casefold())
            if folded in seen:
                raise DuplicateModelError(
                    f"model id {card.id!r} is defined twice on {card.dataset}/{card.threat_model}: "
                    f"by {seen[folded]} and by {path}"
                )
            seen[folded] = path
            self._cards[card.key] = card
            self._files[card.key] = path
        if problems:
            raise SubmissionError(problems)

    # -------------------------------------------------------------- lookups

    def cards(
        self,
        dataset: str | None = None,
        threat_model: str | None = None,
        include: Patterns = None,
        exclude: Patterns = None,
    ) -> list[ModelCard]:
        """Cards sorted by (dataset, threat model, id); ``include``/``exclude`` are fnmatch patterns on ids
        (case-insensitive; a str or a list)."""
        if dataset is not None and dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
        threat = board_threat_model(threat_model) if threat_model is not None else None
        inc, exc = _patterns(include), _patterns(exclude)
        out = []
        for key in sorted(self._cards):
            card = self._cards[key]
            if dataset is not None and card.dataset != dataset:
                continue
            if threat is not None and card.threat_model != threat:
                continue
            if inc and not _matches(card.id, inc):
                continue
            if exc and _matches(card.id, exc):
                continue
            out.append(card)
        return out

    def list_models(
        self,
        dataset: str | None = None,
        threat_model: str | None = None,
        include: Patterns = None,
        exclude: Patterns = None,
    ) -> list[str]:
        """Sorted, distinct model ids (an id may exist on several boards when no board is given)."""
        return sorted({c.id for c in self.cards(dataset, threat_model, include, exclude)})

    def get_card(self, name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> ModelCard:
        """The card of ``name`` on the board (dataset, threat model), or :class:`UnknownModelError`."""
        dataset, threat = check_board(dataset, threat_model)
        card = self._cards.get((dataset, threat, name))
        if card is not None:
            return card
        on_board = [c.id for c in self.cards(dataset, threat)]
        close = difflib.get_close_matches(name, on_board, n=5, cutoff=0.5)
        case = [i for i in on_board if i.casefold() == name.casefold()]
        elsewhere = sorted(f"{d}/{t}" for d, t, i in self._cards if i == name)
        message = f"no model {name!r} on the {dataset}/{threat} board"
        if case or close:
            message += f"; closest: {', '.join(dict.fromkeys(case + close))}"
        if elsewhere:
            message += f"; {name!r} exists on {', '.join(elsewhere)}"
        if not (case or close or elsewhere):
            message += f" ({len(on_board)} models there; see `robench models --dataset {dataset} --threat-model {threat}`)"
        raise UnknownModelError(message)

    def file_of(self, card: ModelCard) -> Path:
        """The submission file a card was read from."""
        return self._files[card.key]

    def validate(self, path: str | os.PathLike, *, check_hash: bool = True) -> list[Problem]:
        """Every problem of a (new or registered) submission file, collisions checked against this registry."""
        target = Path(path).resolve()
        existing = [key for key, file in self._files.items() if file.resolve() != target]
        return validate_file(path, self.repo_root, existing, check_hash=check_hash)

    def __len__(self) -> int:
        return len(self._cards)

    def __contains__(self, key: object) -> bool:
        return key in self._cards

    def __repr__(self) -> str:
        return f"Registry({str(self.submissions_dir)!r}, {len(self)} models)"


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of the repository's own ``submissions`` folder (read once per process)."""
    return Registry()


def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else default_registry()


def list_models(
    dataset: str | None = None,
    threat_model: str | None = None,
    include: Patterns = None,
    exclude: Patterns = None,
    *,
    registry: Registry | None = None,
) -> list[str]:
    """Sorted model ids, filtered by board and fnmatch patterns (e.g. ``include="Madry*"``)."""
    return _registry(registry).list_models(dataset, threat_model, include, exclude)


def list_cards(
    dataset: str | None = None,
    threat_model: str | None = None,
    include: Patterns = None,
    exclude: Patterns = None,
    *,
    registry: Registry | None = None,
) -> list[ModelCard]:
    """Like :func:`list_models`, returning the cards (one per board an id appears on)."""
    return _registry(registry).cards(dataset, threat_model, include, exclude)


def get_card(name: str, dataset: str = "cifar10", threat_model: str = "Linf", *, registry: Registry | None = None) -> ModelCard:
    """The frozen card of model ``name`` on the (dataset, threat model) board."""
    return _registry(registry).get_card(name, dataset, threat_model)
