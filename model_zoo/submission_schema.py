"""Reading and validating submission files into :class:`~model_zoo.cards.ModelCard` values.

A submission file ``submissions/<dataset>/<threat_model>/<ModelID>.<yaml|yml|json>`` describes one
model (the format is in docs/model_zoo.md). Validation never stops at the first fault: every problem
of a file is reported at once as a :class:`Problem` (file, field, what was expected), and the
validator never raises on malformed input: a YAML/JSON syntax error, a list where a mapping was
expected or an absurd value all come back as problems.

* :func:`validate_file` returns the list of problems (empty when the file is valid), including the
  checks that need the repository: checkpoint path inside the repository and present (and, by
  default, its sha256), and id collisions with ``existing_ids`` and with sibling files.
* :func:`read_card` returns the card or raises :class:`SubmissionError` holding the problems.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple
from urllib.parse import urlparse

from benchmark.budgets import BOARDS
from benchmark.documents import DocumentError, load_document
from benchmark.data import DATASETS
from benchmark.threat_models import THREAT_MODELS, parse_eps

from .architectures import check_architecture
from .cards import Architecture, Checkpoint, ModelCard, Preprocessing, Reported
from .download import SHA256_PATTERN, check_url, sha256_file

__all__ = [
    "Problem", "SubmissionError", "read_card", "validate_file", "validate_text", "validate_document",
    "parse_text", "repo_root_of", "ID_PATTERN", "SUBMISSION_SUFFIXES", "CHECKPOINT_FORMATS", "INPUT_SHAPES",
]

#: <Surname><Year><FirstTitleWord>[_variant]
#: matched in full (``fullmatch``: a trailing newline is not part of an id)
ID_PATTERN = re.compile(
    r"^(?P<surname>[A-Z][A-Za-z]+)(?P<year>[0-9]{4})(?P<word>[A-Z][A-Za-z0-9]*)(?P<variant>(?:_[A-Za-z0-9]+)*)$"
)
SUBMISSION_SUFFIXES = (".yaml", ".yml", ".json")
#: checkpoint format -> the file suffixes it goes with
CHECKPOINT_FORMATS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "safetensors": (".safetensors",),
    "pt": (".pt", ".pth", ".bin", ".ckpt"),
})
#: (channels, height, width) of each board's inputs; ImageNet's size depends on the entry's crop
INPUT_SHAPES: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
})


class Problem(NamedTuple):
    """One fault of a submission file: where it is and what was expected."""

    file: str
    #: dotted path of the field ('paper.year', 'preprocessing.mean'), or '(file)' / '(document)'
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class SubmissionError(ValueError):
    """A submission file (or several, for a registry) is invalid; ``.problems`` lists every fault."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in submission file(s):\n{lines}")


# ------------------------------------------------------------------ parsing

def parse_text(text: str, suffix: str) -> tuple[Any, str | None]:
    """The document in ``text`` (JSON for '.json', else YAML; ``benchmark.documents``' rules) and None,
    or (None, why it cannot be read)."""
    try:
        return load_document(text, suffix), None
    except DocumentError as exc:
        return None, str(exc)


# ------------------------------------------------------------------ field types

@dataclass(frozen=True)
class _Kind:
    description: str
    accepts: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


_TEXT = _Kind("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
_INT = _Kind("an integer", _is_int)
_NUMBER = _Kind("a number", _is_number)
_BOOL = _Kind("true or false", lambda v: isinstance(v, bool))
_MAPPING = _Kind("a mapping", lambda v: isinstance(v, dict))
_TEXTS = _Kind("a list of non-empty strings", _list_of(_TEXT.accepts))
_NUMBERS = _Kind("a list of numbers", _list_of(_is_number))
_INTS = _Kind("a list of integers", _list_of(_is_int))
_EPS = _Kind('a number or a fraction such as "8/255"', lambda v: _is_number(v) or isinstance(v, str))


@dataclass(frozen=True)
class _Field:
    kind: _Kind
    required: bool = True
    nullable: bool = False
    #: the fields of a mapping whose keys are fixed (None: any keys)
    children: Mapping[str, "_Field"] | None = None


def _opt(kind: _Kind) -> _Field:
    return _Field(kind, required=False, nullable=True)


#: the submission format; docs/model_zoo.md describes each field
SCHEMA: Mapping[str, _Field] = MappingProxyType({
    "id": _Field(_TEXT),
    "dataset": _Field(_TEXT),
    "threat_model": _Field(_TEXT),
    "eps": _Field(_EPS),
    "paper": _Field(_MAPPING, children={
        "title": _Field(_TEXT), "link": _Field(_TEXT), "authors": _Field(_TEXTS), "venue": _Field(_TEXT),
        "year": _Field(_INT), "bibtex": _opt(_TEXT),
    }),
    "architecture": _Field(_MAPPING, children={
        "source": _Field(_TEXT), "name": _Field(_TEXT), "kwargs": _Field(_MAPPING, required=False),
    }),
    "num_classes": _Field(_INT),
    "preprocessing": _Field(_MAPPING, children={
        "mean": _Field(_NUMBERS), "std": _Field(_NUMBERS), "input_size": _Field(_INTS),
        "resize": _opt(_INT), "crop": _opt(_INT),
    }),
    "checkpoint": _Field(_MAPPING, children={
        "sha256": _Field(_TEXT), "format": _Field(_TEXT), "url": _opt(_TEXT), "path": _opt(_TEXT),
        "key_prefix": _opt(_TEXT),
    }),
    "training": _Field(_MAPPING),
    "additional_data": _Field(_BOOL),
    "number_forward_passes": _Field(_INT),
    "license": _Field(_TEXT),
    "reported": _Field(_MAPPING, children={"clean_accuracy": _Field(_NUMBER), "robust_accuracy": _opt(_NUMBER)}),
    "footnote": _opt(_TEXT),
})


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), f"a {type(value).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------ the validation run

@dataclass
class _Run:
    file: str
    #: look timm/torchvision names up even when that means importing the library (seconds)
    import_libraries: bool = True
    problems: list[Problem] = field(default_factory=list)
    #: dotted field path -> value, for the fields whose type is right
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.file, where, message))

    def get(self, where: str, default: Any = None) -> Any:
        return self.values.get(where, default)

    def has(self, *where: str) -> bool:
        return all(w in self.values for w in where)


def _check_mapping(run: _Run, data: dict, spec: Mapping[str, _Field], prefix: str) -> None:
    for key in data:
        if key not in spec:
            name = key if isinstance(key, str) and key.strip() else repr(key)
            close = difflib.get_close_matches(name, list(spec), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            run.add(prefix + name, f"unknown field; {hint}expected only: {', '.join(spec)}")
    for name, fspec in spec.items():
        where = prefix + name
        if name not in data:
            if fspec.required:
                run.add(where, f"missing required field; expected {fspec.kind.description}")
            continue
        value = data[name]
        if value is None and fspec.nullable:
            continue
        if not fspec.kind.accepts(value):
            run.add(where, f"expected {fspec.kind.description}{' or null' if fspec.nullable else ''}, "
                           f"got {_type_name(value)} ({_short(value)})")
            continue
        run.values[where] = value
        if fspec.children is not None:
            _check_mapping(run, value, fspec.children, where + ".")


def _check_id(run: _Run, path: PurePosixPath | None) -> None:
    if not run.has("id"):
        return
    model_id = run.get("id")
    match = ID_PATTERN.fullmatch(model_id)
    if match is None:
        run.add("id", f"{model_id!r} does not follow <Surname><Year><FirstTitleWord>[_variant], "
                      f"e.g. 'Madry2018Towards' or 'Madry2018Towards_L2' (pattern {ID_PATTERN.pattern})")
    elif run.has("paper.year") and int(match["year"]) != run.get("paper.year"):
        run.add("paper.year", f"{run.get('paper.year')} does not match the year {match['year']} in the id {model_id!r}")
    if path is not None and path.stem != model_id:
        run.add("id", f"{model_id!r} does not match the file name {path.name!r}; expected the file "
                      f"to be named {model_id}{path.suffix}")


def _check_board(run: _Run, path: PurePosixPath | None) -> tuple[str, str] | None:
    """Dataset and threat model (and the folders the file lies in); the board when both are right."""
    dataset, threat = run.get("dataset"), run.get("threat_model")
    ok = True
    if run.has("dataset") and dataset not in DATASETS:
        close = difflib.get_close_matches(dataset, list(DATASETS), n=1, cutoff=0.5)
        run.add("dataset", f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}"
                           + (f" (did you mean {close[0]!r}?)" if close else ""))
        ok = False
    if run.has("threat_model") and threat not in THREAT_MODELS:
        canonical = [t for t in THREAT_MODELS if t.lower() == threat.lower()]
        run.add("threat_model", f"unknown threat model {threat!r}; expected one of {', '.join(THREAT_MODELS)}"
                                + (f" (spelled {canonical[0]!r})" if canonical else ""))
        ok = False
    if not (ok and run.has("dataset", "threat_model")):
        return None
    if (dataset, threat) not in BOARDS:
        boards = ", ".join(f"{d}/{t}" for d, t in BOARDS)
        run.add("threat_model", f"there is no {dataset}/{threat} board; expected one of {boards}")
        return None
    if path is not None and len(path.parts) >= 3:
        folder_dataset, folder_threat = path.parts[-3], path.parts[-2]
        if folder_dataset != dataset:
            run.add("dataset", f"{dataset!r} but the file lies in the folder {folder_dataset!r}; expected "
                               f"submissions/{dataset}/{threat}/{path.name}")
        if folder_threat != threat:
            run.add("threat_model", f"{threat!r} but the file lies in the folder {folder_threat!r}; expected "
                                    f"submissions/{dataset}/{threat}/{path.name}")
    elif path is not None:
        run.add("(file)", f"expected the file at submissions/{dataset}/{threat}/{path.name}")
    return dataset, threat


def _check_eps(run: _Run, board: tuple[str, str] | None) -> float | None:
    if not run.has("eps"):
        return None
    try:
        eps = parse_eps(run.get("eps"))
    except (ValueError, OverflowError, TypeError) as exc:
        run.add("eps", f"{exc}")
        return None
    if not math.isfinite(eps):
        run.add("eps", f"expected a finite positive number, got {run.get('eps')!r}")
        return None
    if board is None:
        return None
    board_eps, text = BOARDS[board]
    if abs(eps - board_eps) > 1e-6 * max(1.0, board_eps):
        run.add("eps", f"{run.get('eps')!r} does not match the {board[0]}/{board[1]} board's eps; expected {text}")
        return None
    return board_eps


def _check_paper(run: _Run) -> None:
    if run.has("paper.link"):
        link = run.get("paper.link")
        try:
            parts = urlparse(link)
            bad = parts.scheme != "https" or not parts.netloc
        except ValueError:
            bad = True
        if bad:
            run.add("paper.link", f"{_short(link)} is not an https link; expected https://...")
    if run.has("paper.authors") and not run.get("paper.authors"):
        run.add("paper.authors", "expected at least one author")


def _check_architecture(run: _Run, board: tuple[str, str] | None) -> None:
    if run.has("num_classes") and board is not None and run.get("num_classes") != DATASETS[board[0]]:
        run.add("num_classes", f"{run.get('num_classes')} does not match {board[0]}; expected {DATASETS[board[0]]}")
    if not run.has("architecture.source", "architecture.name"):
        return
    kwargs = run.get("architecture.kwargs", {})
    if any(not isinstance(k, str) or not k.isidentifier() for k in kwargs):
        run.add("architecture.kwargs", f"expected keyword names (identifiers), got {_short(list(kwargs))}")
        return
    arch = Architecture(run.get("architecture.source"), run.get("architecture.name"), MappingProxyType(dict(kwargs)))
    num_classes = run.get("num_classes", 10)
    problem = check_architecture(arch, num_classes if num_classes > 0 else 10, run.import_libraries)
    if problem is not None:
        where = "architecture.source" if problem.startswith("unknown architecture source") else "architecture.name"
        run.add(where, problem)


def _check_preprocessing(run: _Run, board: tuple[str, str] | None) -> None:
    size = run.get("preprocessing.input_size")
    if size is not None:
        if len(size) != 3 or any(s < 1 for s in size):
            run.add("preprocessing.input_size", f"expected three positive integers [channels, height, width], got {size}")
            size = None
        elif board is not None and board[0] in INPUT_SHAPES and tuple(size) != INPUT_SHAPES[board[0]]:
            run.add("preprocessing.input_size", f"{size} does not match {board[0]}; expected {list(INPUT_SHAPES[board[0]])}")
    for name in ("mean", "std"):
        values = run.get(f"preprocessing.{name}")
        if values is None:
            continue
        if not values or any(not _finite(v) for v in values):
            run.add(f"preprocessing.{name}", f"expected one finite number per channel, got {_short(values)}")
        elif name == "std" and any(v <= 0 for v in values):
            run.add("preprocessing.std", f"expected positive values, got {values}")
        elif size is not None and len(values) != size[0]:
            run.add(f"preprocessing.{name}", f"has {len(values)} value(s) but input_size has {size[0]} channel(s); "
                                             f"expected {size[0]}")
    for name in ("resize", "crop"):
        value = run.get(f"preprocessing.{name}")
        if value is None:
            continue
        if board is not None and board[0] != "imagenet":
            run.add(f"preprocessing.{name}", f"only ImageNet entries resize or crop; expected null for {board[0]}")
        elif value < 1:
            run.add(f"preprocessing.{name}", f"expected a positive integer, got {value}")
    crop = run.get("preprocessing.crop")
    if crop is not None and size is not None and board is not None and board[0] == "imagenet" and tuple(size[1:]) != (crop, crop):
        run.add("preprocessing.input_size", f"{size} does not match the crop {crop}; expected [3, {crop}, {crop}]")


def _check_checkpoint(run: _Run, repo_root: Path | None, check_hash: bool) -> None:
    fmt = run.get("checkpoint.format")
    if fmt is not None and fmt not in CHECKPOINT_FORMATS:
        run.add("checkpoint.format", f"unknown format {fmt!r}; expected one of {', '.join(CHECKPOINT_FORMATS)}")
        fmt = None
    sha = run.get("checkpoint.sha256")
    if sha is not None and not SHA256_PATTERN.fullmatch(sha):
        run.add("checkpoint.sha256", f"{_short(sha)} is not a full sha256; expected 64 lowercase hex characters "
                                     "(sha256sum FILE)")
        sha = None
    url, rel = run.get("checkpoint.url"), run.get("checkpoint.path")
    if url is None and rel is None and run.has("checkpoint.format"):
        run.add("checkpoint", "expected exactly one of 'url' (https) and 'path' (relative to the repository root)")
    if url is not None and rel is not None:
        run.add("checkpoint", "has both 'url' and 'path'; expected exactly one of them")
    location = url if url is not None else rel
    if url is not None:
        problem = check_url(url)
        if problem:
            run.add("checkpoint.url", problem)
    if rel is not None:
        _check_checkpoint_path(run, rel, repo_root, sha if check_hash else None)
    if fmt is not None and location is not None:
        suffix = PurePosixPath(urlparse(location).path if url is not None else location).suffix.lower()
        other = [f for f, suffixes in CHECKPOINT_FORMATS.items() if f != fmt and suffix in suffixes]
        if other:
            run.add("checkpoint.format", f"{fmt!r} but the file ends in {suffix!r}; expected format {other[0]!r}")


def _check_checkpoint_path(run: _Run, rel: str, repo_root: Path | None, sha: str | None) -> None:
    pure = PurePosixPath(rel)
    if "\\" in rel or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", rel):
        run.add("checkpoint.path", f"{rel!r} is outside the repository; expected a path relative to the "
                                   "repository root with '/' separators and no '..'")
        return
    if repo_root is None:
        return
    full = repo_root / pure
    try:
        inside = full.resolve().is_relative_to(repo_root.resolve())
        is_file = full.is_file()
    except (OSError, ValueError) as exc:
        run.add("checkpoint.path", f"{rel!r} cannot be checked: {exc}")
        return
    if not inside:
        run.add("checkpoint.path", f"{rel!r} resolves outside the repository {repo_root} (a symbolic link?)")
    elif not is_file:
        run.add("checkpoint.path", f"{rel!r} does not exist under the repository root {repo_root}; expected the "
                                   "checkpoint file to be committed there")
    elif sha is not None:
        actual = sha256_file(full)
        if actual != sha:
            run.add("checkpoint.sha256", f"the file {rel} hashes to {actual}; expected the declared {sha}")


def _check_rest(run: _Run) -> None:
    training = run.get("training")
    if training is not None:
        recipe, description = training.get("recipe"), training.get("description")
        if not (isinstance(recipe, str) and recipe.strip()) and not (isinstance(description, str) and description.strip()):
            run.add("training", "expected a 'recipe' (a robench recipe name, with its settings) or a 'description' "
                                "(free text for external models)")
        bad_keys = [k for k in training if not isinstance(k, str)]
        if bad_keys:
            run.add("training", f"expected string keys, got {_short(bad_keys)}")
    passes = run.get("number_forward_passes")
    if passes is not None and passes < 1:
        run.add("number_forward_passes", f"expected at least 1, got {passes}")
    for name in ("clean_accuracy", "robust_accuracy"):
        value = run.get(f"reported.{name}")
        if value is not None and not 0.0 <= value <= 1.0:
            run.add(f"reported.{name}", f"{value} is outside [0, 1]; expected a fraction (0.8714, not 87.14)")
    clean, robust = run.get("reported.clean_accuracy"), run.get("reported.robust_accuracy")
    if clean is not None and robust is not None and 0 <= clean <= 1 and 0 <= robust <= 1 and robust > clean:
        run.add("reported.robust_accuracy", f"{robust} exceeds the clean accuracy {clean}; expected at most {clean}")


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _build_card(run: _Run, eps: float, source_file: str | None) -> ModelCard:
    v = run.values
    pre = Preprocessing(
        mean=tuple(float(m) for m in v["preprocessing.mean"]), std=tuple(float(s) for s in v["preprocessing.std"]),
        input_size=tuple(v["preprocessing.input_size"]),  # type: ignore[arg-type]
        resize=v.get("preprocessing.resize"), crop=v.get("preprocessing.crop"),
    )
    checkpoint = Checkpoint(
        sha256=v["checkpoint.sha256"], format=v["checkpoint.format"], url=v.get("checkpoint.url"),
        path=v.get("checkpoint.path"), key_prefix=v.get("checkpoint.key_prefix"),
    )
    return ModelCard(
        id=v["id"], dataset=v["dataset"], threat_model=v["threat_model"], eps=eps,
        name=v["paper.title"], link=v["paper.link"], authors=tuple(v["paper.authors"]), venue=v["paper.venue"],
        year=v["paper.year"],
        architecture=Architecture(v["architecture.source"], v["architecture.name"],
                                  _freeze(v.get("architecture.kwargs", {}))),
        num_classes=v["num_classes"], preprocessing=pre, checkpoint=checkpoint, training=_freeze(v["training"]),
        additional_data=v["additional_data"], number_forward_passes=v["number_forward_passes"],
        license=v["license"],
        reported=Reported(float(v["reported.clean_accuracy"]),
                          None if v.get("reported.robust_accuracy") is None else float(v["reported.robust_accuracy"])),
        bibtex=v.get("paper.bibtex"), footnote=v.get("footnote"), source_file=source_file,
    )


def _validate(
    data: Any, file: str, path: PurePosixPath | None, repo_root: Path | None, check_hash: bool,
    source_file: str | None, import_libraries: bool,
) -> tuple[ModelCard | None, list[Problem]]:
    run = _Run(file, import_libraries)
    if not isinstance(data, dict):
        what = "empty" if data is None else _type_name(data)
        run.add("(document)", f"the document is {what}; expected a mapping of the submission fields "
                              f"({', '.join(SCHEMA)})")
        return None, run.problems
    _check_mapping(run, data, SCHEMA, "")
    _check_id(run, path)
    board = _check_board(run, path)
    eps = _check_eps(run, board)
    _check_paper(run)
    _check_architecture(run, board)
    _check_preprocessing(run, board)
    _check_checkpoint(run, repo_root, check_hash)
    _check_rest(run)
    if run.problems or eps is None:
        return None, run.problems
    return _build_card(run, eps, source_file), []


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
) -> tuple[ModelCard | None, list[Problem]]:
    """Validate an already parsed document as if read from ``file``: (card, []) or (None, problems).

    ``file`` gives the expected id (its stem) and board (its two parent folders); ``repo_root``
    (default: inferred from ``file``) anchors checkpoint paths. ``check_hash`` hashes a repository
    checkpoint; ``import_libraries`` False skips timm/torchvision name checks whose library is not
    imported yet. Never raises on bad data.
    """
    path = Path(file)
    root = Path(repo_root) if repo_root is not None else repo_root_of(path)
    return _validate(data, str(file), PurePosixPath(path.as_posix()), root, check_hash, _source_file(path, root),
                     import_libraries)


def validate_text(
    text: str,
    file: str | os.PathLike,
    *,
    repo_root: str | os.PathLike | None = None,
    check_hash: bool = False,
    import_libraries: bool = True,
) -> tuple[ModelCard | None, list[Problem]]:
    """Parse (by ``file``'s suffix) and validate a document's text; see :func:`validate_document`."""
    suffix = Path(file).suffix.lower()
    if suffix not in SUBMISSION_SUFFIXES:
        return None, [Problem(str(file), "(file)", f"unsupported file type {suffix or '(none)'!r}; "
                                                    f"expected one of {', '.join(SUBMISSION_SUFFIXES)}")]
    data, error = parse_text(text, suffix)
    if error is not None:
        return None, [Problem(str(file), "(document)", error)]
    return validate_document(data, file, repo_root=repo_root, check_hash=check_hash, import_libraries=import_libraries)


def _read(path: Path) -> tuple[str | None, list[Problem]]:
    try:
        return path.read_text(encoding="utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [Problem(str(path), "(file)", f"not UTF-8 text: {exc}")]
    except OSError as exc:
        return None, [Problem(str(path), "(file)", f"cannot be read: {exc.strerror or exc}")]


def _collisions(path: Path, card: ModelCard, existing_ids: Iterable[str | tuple[str, str, str]]) -> list[Problem]:
    problems = []
    mine = card.id.casefold()
    for taken in existing_ids:
        same_board = isinstance(taken, str) or (tuple(taken[:2]) == (card.dataset, card.threat_model))
        taken_id = taken if isinstance(taken, str) else taken[2]
        if same_board and taken_id.casefold() == mine:
            problems.append(Problem(str(path), "id", f"{card.id!r} collides with the existing model {taken_id!r} "
                                                     f"on {card.dataset}/{card.threat_model}; expected a new id "
                                                     "(add a _variant suffix)"))
            break
    try:
        siblings = [p for p in path.parent.iterdir()
                    if p.suffix.lower() in SUBMISSION_SUFFIXES and p.stem.casefold() == mine and p.name != path.name]
    except OSError:
        siblings = []
    for other in sorted(siblings):
        problems.append(Problem(str(path), "id", f"{card.id!r} is also defined by {other.name} in the same folder; "
                                                 "expected one file per id"))
    return problems


def validate_file(
    path: str | os.PathLike,
    repo_root: str | os.PathLike | None = None,
    existing_ids: Iterable[str | tuple[str, str, str]] = (),
    *,
    check_hash: bool = True,
) -> list[Problem]:
    """Every problem of one submission file; an empty list when it is valid.

    ``existing_ids`` are ids already taken, as plain ids (taken on every board) or card keys
    ``(dataset, threat_model, id)``; leave out the file's own entry when re-checking a file that is
    already registered (``Registry.validate`` does this). Collisions are case-insensitive. With
    ``check_hash`` a checkpoint given by ``path`` is hashed and compared with the declared sha256.
    """
    file = Path(path)
    root = Path(repo_root) if repo_root is not None else repo_root_of(file)
    if file.suffix.lower() not in SUBMISSION_SUFFIXES:
        return [Problem(str(file), "(file)", f"unsupported file type {file.suffix or '(none)'!r}; "
                                             f"expected one of {', '.join(SUBMISSION_SUFFIXES)}")]
    text, problems = _read(file)
    if text is None:
        return problems
    card, problems = validate_text(text, file, repo_root=root, check_hash=check_hash)
    if card is None:
        return problems
    return _collisions(file, card, existing_ids)


def read_card(path: str | os.PathLike, repo_root: str | os.PathLike | None = None) -> ModelCard:
    """The card of one submission file, or :class:`SubmissionError` listing all of its problems.

    ``repo_root`` defaults to the parent of the ``submissions`` folder holding the file. Fast enough
    for every registry load: the checkpoint file's existence is checked but not its hash (loading
    verifies it), and timm/torchvision names only when that library is imported already
    (:func:`validate_file` checks both).
    """
    file = Path(path)
    root = Path(repo_root) if repo_root is not None else repo_root_of(file)
    text, problems = _read(file)
    if text is None:
        raise SubmissionError(problems)
    card, problems = validate_text(text, file, repo_root=root, check_hash=False, import_libraries=False)
    if card is None:
        raise SubmissionError(problems)
    return card
