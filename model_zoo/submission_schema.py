"""Reading and checking submission files: a document becomes a :class:`~model_zoo.cards.ModelCard` or a list of problems.

The card's fields, types and single-part rules are declared once, in ``model_zoo.cards``; this
module validates a document against that declaration (pydantic reports every fault at once, each at
its location, worded in robench's terms by ``model_zoo.card_problems``) and adds the rules that need more than the card:
the board (eps, classes and input size of the dataset), the file's name and folder, the repository
(a checkpoint path inside it, present, with the declared hash), and the architecture's constructor.
It never raises on malformed input: a YAML/JSON syntax error, a list where a mapping was expected
or an absurd value all come back as :class:`Problem` values.

* :func:`validate_file` returns the list of problems (empty when the file is valid), including id
  collisions with ``existing_ids`` and with sibling files.
* :func:`read_card` returns the card or raises :class:`SubmissionError` holding the problems.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from benchmark.budgets import BOARDS
from benchmark.data import DATASETS, INPUT_SHAPES
from benchmark.documents import DocumentError, load_document

from .architectures import check_architecture
from .card_problems import Problem, SubmissionError, type_name, validate_parts
from .cards import ID_PATTERN, Architecture, Checkpoint, ModelCard
from .download import sha256_file

__all__ = [
    "Problem", "SubmissionError", "read_card", "validate_file", "validate_text", "validate_document",
    "repo_root_of", "ID_PATTERN", "SUBMISSION_SUFFIXES",
]

SUBMISSION_SUFFIXES = (".yaml", ".yml", ".json")


# ------------------------------------------------------------------ rules that need the board, the file or the repository

def _board_rules(v: dict[str, Any], path: PurePosixPath | None, problems: list[tuple[str, str]],
                 import_libraries: bool) -> None:
    """The rules that tie the card to its board and its file; each written here once."""
    model_id, year = v.get("id"), getattr(v.get("paper"), "year", None)
    if model_id is not None:
        match = ID_PATTERN.fullmatch(model_id)
        if match and year is not None and int(match["year"]) != year:
            problems.append(("paper.year", f"{year} does not match the year {match['year']} in the id {model_id!r}"))
        if path is not None and path.stem != model_id:
            problems.append(("id", f"{model_id!r} does not match the file name {path.name!r}; expected the file "
                                   f"to be named {model_id}{path.suffix}"))
    dataset, threat = v.get("dataset"), v.get("threat_model")
    board = (dataset, threat) if dataset is not None and threat is not None else None
    if board is not None and board not in BOARDS:
        boards = ", ".join(f"{d}/{t}" for d, t in BOARDS)
        problems.append(("threat_model", f"there is no {dataset}/{threat} board; expected one of {boards}"))
        board = None
    if board is not None and path is not None:
        if len(path.parts) < 3:
            problems.append(("(file)", f"expected the file at submissions/{dataset}/{threat}/{path.name}"))
        else:
            for name, folder, value in (("dataset", path.parts[-3], dataset), ("threat_model", path.parts[-2], threat)):
                if folder != value:
                    problems.append((name, f"{value!r} but the file lies in the folder {folder!r}; expected "
                                           f"submissions/{dataset}/{threat}/{path.name}"))
    if board is None:
        return
    board_eps, text = BOARDS[board]
    if v.get("eps") is not None and board_eps is not None and abs(v["eps"] - board_eps) > 1e-6 * max(1.0, board_eps):
        problems.append(("eps", f"{v['eps']!r} does not match the {dataset}/{threat} board's eps; expected {text}"))
    if "num_classes" in v and v["num_classes"] != DATASETS[dataset]:
        problems.append(("num_classes", f"{v['num_classes']} does not match {dataset}; expected {DATASETS[dataset]}"))
    pre = v.get("preprocessing")
    size, crop = getattr(pre, "input_size", None), getattr(pre, "crop", None)
    if size is not None and dataset in INPUT_SHAPES and size != INPUT_SHAPES[dataset]:
        problems.append(("preprocessing.input_size", f"{list(size)} does not match {dataset}; "
                                                     f"expected {list(INPUT_SHAPES[dataset])}"))
    for name in ("resize", "crop"):
        if getattr(pre, name, None) is not None and dataset != "imagenet":
            problems.append((f"preprocessing.{name}", f"only ImageNet entries resize or crop; expected null for {dataset}"))
    if dataset == "imagenet" and crop is not None and size is not None and size[1:] != (crop, crop):
        problems.append(("preprocessing.input_size", f"{list(size)} does not match the crop {crop}; "
                                                     f"expected [3, {crop}, {crop}]"))
    arch = v.get("architecture")
    if isinstance(arch, Architecture):
        problem = check_architecture(arch, v.get("num_classes", DATASETS[dataset]), import_libraries)
        if problem is not None:
            about_kwargs = "kwargs" in problem or any(f"{k} must" in problem for k in arch.kwargs)
            where = ("architecture.source" if problem.startswith("unknown architecture source")
                     else "architecture.kwargs" if about_kwargs else "architecture.name")
            problems.append((where, problem))
        recipe = getattr(v.get("training"), "recipe", None)
        if recipe is not None and (arch.source != "robench" or dataset != "digits"):
            problems.append(("training.recipe", f"robench recipes train robench architectures on digits; this card is "
                                                f"{arch.source} {arch.name!r} on {dataset} (describe its training instead)"))


def _repository_rules(checkpoint: Any, repo_root: Path | None, check_hash: bool, problems: list[tuple[str, str]]) -> None:
    rel = checkpoint.path
    if rel is None:
        return
    pure = PurePosixPath(rel)
    if "\\" in rel or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", rel):
        problems.append(("checkpoint.path", f"{rel!r} is outside the repository; expected a path relative to the "
                                            "repository root with '/' separators and no '..'"))
        return
    if repo_root is None:
        return
    full = repo_root / pure
    try:
        inside = full.resolve().is_relative_to(repo_root.resolve())
        is_file = full.is_file()
    except (OSError, ValueError) as exc:
        problems.append(("checkpoint.path", f"{rel!r} cannot be checked: {exc}"))
        return
    if not inside:
        problems.append(("checkpoint.path", f"{rel!r} resolves outside the repository {repo_root} (a symbolic link?)"))
    elif not is_file:
        problems.append(("checkpoint.path", f"{rel!r} does not exist under the repository root {repo_root}; expected "
                                            "the checkpoint file to be committed there"))
    elif check_hash and (actual := sha256_file(full)) != checkpoint.sha256:
        problems.append(("checkpoint.sha256", f"the file {rel} hashes to {actual}; expected the declared {checkpoint.sha256}"))


# ------------------------------------------------------------------ public entry points

def repo_root_of(path: str | os.PathLike) -> Path:
    """The repository root a submission file belongs to: the parent of ``submissions/<dataset>/<threat>/``."""
    resolved = Path(path).resolve()
    return resolved.parents[3] if len(resolved.parents) > 3 else resolved.parent


def _source_file(path: Path, repo_root: Path) -> str:
    try:
        return path.resolve().relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        return str(path)


def validate_document(
    data: Any,
    file: str | os.PathLike,
    *,
    repo_root: str | os.PathLike | None = None,
    check_hash: bool = False,
    import_libraries: bool = True,
    card_type: type[ModelCard] = ModelCard,
) -> tuple[ModelCard | None, list[Problem]]:
    """Validate an already parsed document as if read from ``file``: (card, []) or (None, problems).

    ``file`` gives the expected id (its stem) and board (its two parent folders); ``repo_root``
    (default: inferred from ``file``) anchors checkpoint paths. ``check_hash`` hashes a repository
    checkpoint; ``import_libraries`` False skips timm/torchvision name checks whose library is not
    imported yet. ``card_type`` is the card declaration (a subclass of ModelCard adds fields). Never
    raises on bad data.
    """
    path = Path(file)
    root = Path(repo_root) if repo_root is not None else repo_root_of(path)
    if not isinstance(data, dict):
        what = "empty" if data is None else type_name(data)
        return None, [Problem(str(file), "(document)", f"the document is {what}; expected a mapping of the "
                                                       f"submission fields ({', '.join(card_type.model_fields)})")]
    card, found, parts = validate_parts(card_type, data)
    _board_rules(parts, PurePosixPath(path.as_posix()), found, import_libraries)
    if isinstance(parts.get("checkpoint"), Checkpoint):
        _repository_rules(parts["checkpoint"], root, check_hash, found)
    if found or card is None:
        return None, [Problem(str(file), where, message) for where, message in dict.fromkeys(found)]
    return card.read_from(_source_file(path, root)), []


def _unsupported(file: str | os.PathLike) -> list[Problem]:
    suffix = Path(file).suffix.lower()
    return [] if suffix in SUBMISSION_SUFFIXES else [Problem(str(file), "(file)", (
        f"unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(SUBMISSION_SUFFIXES)}"))]


def validate_text(
    text: str, file: str | os.PathLike, *, repo_root: str | os.PathLike | None = None, check_hash: bool = False,
    import_libraries: bool = True,
) -> tuple[ModelCard | None, list[Problem]]:
    """Parse (by ``file``'s suffix) and validate a document's text; see :func:`validate_document`."""
    if problems := _unsupported(file):
        return None, problems
    try:
        data = load_document(text, Path(file).suffix.lower())
    except DocumentError as exc:
        return None, [Problem(str(file), "(document)", str(exc))]
    return validate_document(data, file, repo_root=repo_root, check_hash=check_hash, import_libraries=import_libraries)


def _check_file(path: str | os.PathLike, repo_root: str | os.PathLike | None, check_hash: bool,
                import_libraries: bool) -> tuple[ModelCard | None, list[Problem]]:
    file = Path(path)
    if problems := _unsupported(file):
        return None, problems
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(str(file), "(file)", f"not UTF-8 text: {exc}")]
    except OSError as exc:
        return None, [Problem(str(file), "(file)", f"cannot be read: {exc.strerror or exc}")]
    return validate_text(text, file, repo_root=repo_root, check_hash=check_hash, import_libraries=import_libraries)


def _collisions(path: Path, card: ModelCard, existing_ids: Iterable[str | tuple[str, str, str]]) -> list[Problem]:
    mine = card.id.casefold()
    taken = [t if isinstance(t, str) else t[2] for t in existing_ids
             if isinstance(t, str) or tuple(t[:2]) == (card.dataset, card.threat_model)]
    problems = [Problem(str(path), "id", f"{card.id!r} collides with the existing model {t!r} on {card.dataset}/"
                                         f"{card.threat_model}; expected a new id (add a _variant suffix)")
                for t in taken if t.casefold() == mine][:1]
    try:
        siblings = sorted(p for p in path.parent.iterdir()
                          if p.suffix.lower() in SUBMISSION_SUFFIXES and p.stem.casefold() == mine and p.name != path.name)
    except OSError:
        siblings = []
    return problems + [Problem(str(path), "id", f"{card.id!r} is also defined by {other.name} in the same folder; "
                                                "expected one file per id") for other in siblings]


def validate_file(
    path: str | os.PathLike, repo_root: str | os.PathLike | None = None,
    existing_ids: Iterable[str | tuple[str, str, str]] = (), *, check_hash: bool = True,
) -> list[Problem]:
    """Every problem of one submission file; an empty list when it is valid.

    ``existing_ids`` are ids already taken, as plain ids (taken on every board) or card keys
    ``(dataset, threat_model, id)``; leave out the file's own entry when re-checking a file that is
    already registered (``Registry.validate`` does this). Collisions are case-insensitive. With
    ``check_hash`` a checkpoint given by ``path`` is hashed and compared with the declared sha256.
    """
    card, problems = _check_file(path, repo_root, check_hash, import_libraries=True)
    return problems if card is None else _collisions(Path(path), card, existing_ids)


def read_card(path: str | os.PathLike, repo_root: str | os.PathLike | None = None) -> ModelCard:
    """The card of one submission file, or :class:`SubmissionError` listing all of its problems.

    ``repo_root`` defaults to the parent of the ``submissions`` folder holding the file. Fast enough
    for every registry load: the checkpoint file's existence is checked but not its hash (loading
    verifies it), and timm/torchvision names only when that library is imported already
    (:func:`validate_file` checks both).
    """
    card, problems = _check_file(path, repo_root, check_hash=False, import_libraries=False)
    if card is None:
        raise SubmissionError(problems)
    return card
