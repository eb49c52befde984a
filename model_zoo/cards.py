"""The model card, declared once: every field of a submission file, its type, its constraints and its meaning.

A card is read from its submission file ``submissions/<dataset>/<threat_model>/<ModelID>.<json|yaml>``;
nothing about a model lives anywhere else. The declarations below are pydantic v2 frozen models,
and everything else is derived from them:

* the submission checker (``model_zoo.submission_schema``) validates a document against
  :class:`ModelCard` and adds only the rules that need the board or the repository;
* the JSON Schema in ``docs/submission.schema.json`` is :func:`json_schema` (``robench submit
  schema --out`` writes it);
* the leaderboard shows any :class:`Listing` (a zoo card, or an entry imported from another
  leaderboard's files, ``leaderboard.entries.ImportedListing``), and its model pages list every
  declared field with its title.

Rules that involve only one part of a card (a checkpoint has a url or a path, robust accuracy is at
most clean accuracy) are validators of that part. A rule's failure is a :class:`CardProblems`,
which names the field it is about, so that the checker can report it there.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal, Mapping
from urllib.parse import urlparse

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt,
    StrictStr, WithJsonSchema, model_validator,
)

from benchmark.data import DATASETS
from benchmark.record import SAFE_NAME
from benchmark.budgets import BOARD_THREAT_MODELS, CORRUPTIONS
from benchmark.threat_models import parse_eps

from .download import SHA256_PATTERN, check_url

__all__ = [
    "ModelCard", "Listing", "Paper", "PaperListing", "Architecture", "Preprocessing", "Checkpoint", "Reported",
    "ReportedListing", "Training", "CardProblems", "ID_PATTERN", "SHA256_PATTERN", "CHECKPOINT_FORMATS",
    "TRAINING_REPEATS", "json_schema",
]

#: <Surname><Year><FirstTitleWord>[_variant], matched in full (a trailing newline is not part of an id)
ID_PATTERN = re.compile(
    r"^(?P<surname>[A-Z][A-Za-z]+)(?P<year>[0-9]{4})(?P<word>[A-Z][A-Za-z0-9]*)(?P<variant>(?:_[A-Za-z0-9]+)*)$"
)
#: model ids and board names that may become file names on the site (imported ids follow only this)
#: checkpoint format -> the file suffixes it goes with
CHECKPOINT_FORMATS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "safetensors": (".safetensors",),
    "pt": (".pt", ".pth", ".bin", ".ckpt"),
})
#: keys an old ``training:`` block repeated from the card -> the card field that says it now
TRAINING_REPEATS: Mapping[str, str] = MappingProxyType({
    "threat_model": "threat_model", "eps": "eps", "architecture": "architecture.name", "arch_kwargs": "architecture.kwargs",
})


class CardProblems(ValueError):
    """The faults one validator found: (field relative to the validated part, message) pairs."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in self.problems))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------ field types

def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _model_id(value: str) -> str:
    if ID_PATTERN.fullmatch(value) is None:
        raise ValueError(f"{value!r} does not follow <Surname><Year><FirstTitleWord>[_variant], e.g. 'Madry2018Towards' "
                         f"or 'Madry2018Towards_L2' (pattern {ID_PATTERN.pattern})")
    return value


def _safe_name(value: str) -> str:
    if SAFE_NAME.fullmatch(value) is None:
        raise ValueError(f"{value!r} may only use letters, digits, '_', '.', '-'")
    return value


def _one_of(what: str, known: Any) -> Any:
    def check(value: str) -> str:
        if value in known:
            return value
        import difflib

        spelled = [k for k in known if k.lower() == value.lower()]
        close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.5)
        hint = f" (spelled {spelled[0]!r})" if spelled else f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(known)}{hint}")
    return check


def _eps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f'expected a number or a fraction such as "8/255", got {_short(value)}')
    return parse_eps(value)


#: text left from a template: "xxxx.xxxxx", "...", "TODO", "<title>", "{...}"
_PLACEHOLDER = re.compile(r"x{4}|\.\.\.|…|\bTODO\b|\bTBD\b|<[^<>]*>|\{\s*\}", re.IGNORECASE)


def _not_a_placeholder(value: str) -> str:
    found = _PLACEHOLDER.search(value)
    if found:
        raise ValueError(f"{_short(value)} looks like a template's placeholder ({found.group(0)!r}); "
                         "expected the real text")
    return value


def _https(value: str) -> str:
    try:
        parts = urlparse(value)
        good = parts.scheme == "https" and bool(parts.netloc) and value == value.strip() and "\n" not in value
    except ValueError:
        good = False
    if not good:
        raise ValueError(f"{_short(value)} is not an https link; expected https://...")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is outside [0, 1]; expected a fraction (0.8714, not 87.14)")
    return float(value)


def _sha256(value: str) -> str:
    if SHA256_PATTERN.fullmatch(value) is None:
        raise ValueError(f"{_short(value)} is not a full sha256; expected 64 lowercase hex characters (sha256sum FILE)")
    return value


def _keywords(value: Mapping[str, Any]) -> Mapping[str, Any]:
    bad = [k for k in value if not k.isidentifier()]
    if bad:
        raise ValueError(f"expected keyword names (identifiers), got {_short(bad)}")
    return MappingProxyType(dict(value))


def _positive_ints(value: tuple[int, ...]) -> tuple[int, ...]:
    if len(value) != 3 or any(v < 1 for v in value):
        raise ValueError(f"expected three positive integers [channels, height, width], got {list(value)}")
    return value


def _finite_values(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value:
        raise ValueError("expected one finite number per channel, got []")
    return tuple(float(v) for v in value)


Text = Annotated[StrictStr, AfterValidator(_non_blank), Field(min_length=1)]
Number = StrictFloat
Fraction01 = Annotated[Number, AfterValidator(_fraction), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
ModelId = Annotated[StrictStr, AfterValidator(_model_id), WithJsonSchema({"type": "string", "pattern": ID_PATTERN.pattern})]
SafeName = Annotated[StrictStr, AfterValidator(_safe_name), WithJsonSchema({"type": "string", "pattern": SAFE_NAME.pattern})]
DatasetName = Annotated[StrictStr, AfterValidator(_one_of("dataset", DATASETS)), WithJsonSchema({"enum": list(DATASETS)})]
ThreatModelName = Annotated[StrictStr, AfterValidator(_one_of("threat model", BOARD_THREAT_MODELS)),
                            WithJsonSchema({"enum": list(BOARD_THREAT_MODELS)})]
Eps = Annotated[float, BeforeValidator(_eps), WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?/[0-9]+$"}]})]
HttpsLink = Annotated[StrictStr, AfterValidator(_https), AfterValidator(_not_a_placeholder),
                      WithJsonSchema({"type": "string", "pattern": "^https://"})]
Sha256 = Annotated[StrictStr, AfterValidator(_sha256), WithJsonSchema({"type": "string", "pattern": SHA256_PATTERN.pattern})]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=False)


# ------------------------------------------------------------------ the parts of a card

class PaperListing(_Frozen):
    """The paper as any board entry gives it (imported entries may lack a year or a link)."""

    title: StrictStr = Field("", title="Paper", description="The paper's title.")
    link: StrictStr = Field("", title="Link", description="Where the paper can be read.")
    authors: tuple[StrictStr, ...] = Field((), title="Authors", description="The authors, in the paper's order.")
    venue: StrictStr = Field("", title="Venue", description="Where the paper appeared, e.g. 'ICLR' or 'arXiv'.")
    year: StrictInt | None = Field(None, title="Year", description="The year of publication.")
    bibtex: Text | None = Field(None, title="BibTeX", description="The paper's BibTeX entry; generated when absent.")



class Paper(PaperListing):
    """The paper a zoo model comes from (a template's placeholders are refused: they would be published)."""

    title: Annotated[Text, AfterValidator(_not_a_placeholder)] = Field(title="Paper", description="The paper's title.")
    bibtex: Annotated[Text, AfterValidator(_not_a_placeholder)] | None = Field(
        None, title="BibTeX", description="The paper's BibTeX entry; generated when absent.")
    link: HttpsLink = Field(title="Link", description="An https link to the paper.")
    authors: tuple[Text, ...] = Field(min_length=1, title="Authors", description="The authors, in the paper's order.")
    venue: Text = Field(title="Venue", description="Where the paper appeared, e.g. 'ICLR' or 'arXiv'.")
    year: StrictInt = Field(title="Year", description="The year of publication; the id's year.")


class Architecture(_Frozen):
    source: Literal["robench", "timm", "torchvision"] = Field(
        title="Source", description="Where the constructor lives: robench (model_zoo/architectures), timm or torchvision.")
    name: Text = Field(title="Name", description="The constructor's name in that source, e.g. 'digits_cnn'.")
    kwargs: Annotated[Mapping[StrictStr, Any], AfterValidator(_keywords)] = Field(
        default_factory=lambda: MappingProxyType({}), title="Keyword arguments",
        description="Keyword arguments of the constructor (num_classes comes from the card).")

    @property
    def label(self) -> str:
        """How the architecture is shown (``robench models``, the site): ``name(k=v, ...)``, keys sorted."""
        kwargs = ", ".join(f"{k}={v}" for k, v in sorted(dict(self.kwargs).items()))
        return f"{self.name}({kwargs})" if kwargs else self.name

    def __str__(self) -> str:
        return f"{self.label} ({self.source})"


class Preprocessing(_Frozen):
    """Applied inside the returned model (normalisation) or by the data loader (resize/crop)."""

    mean: Annotated[tuple[Number, ...], AfterValidator(_finite_values)] = Field(
        title="Mean", description="Per-channel mean subtracted from [0, 1] inputs.")
    std: Annotated[tuple[Number, ...], AfterValidator(_finite_values)] = Field(
        title="Std", description="Per-channel standard deviation the inputs are divided by (positive).")
    input_size: Annotated[tuple[StrictInt, ...], AfterValidator(_positive_ints)] = Field(
        title="Input size", description="[channels, height, width] of the tensor the model receives.")
    resize: StrictInt | None = Field(None, ge=1, title="Resize", description="ImageNet only: the loader's Resize size.")
    crop: StrictInt | None = Field(None, ge=1, title="Crop", description="ImageNet only: the loader's CenterCrop size.")

    @model_validator(mode="after")
    def _channels_agree(self) -> "Preprocessing":
        problems = []
        if any(v <= 0 for v in self.std):
            problems.append(("std", f"expected positive values, got {list(self.std)}"))
        channels = self.input_size[0]
        for name in ("mean", "std"):
            if len(getattr(self, name)) != channels:
                problems.append((name, f"has {len(getattr(self, name))} value(s) but input_size has {channels} "
                                       f"channel(s); expected {channels}"))
        if problems:
            raise CardProblems(*problems)
        return self

    def __str__(self) -> str:
        text = f"mean {list(self.mean)}, std {list(self.std)}, input {list(self.input_size)}"
        return text + "".join(f", {n} {getattr(self, n)}" for n in ("resize", "crop") if getattr(self, n) is not None)


class Checkpoint(_Frozen):
    """The weights: where they are and their hash."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["path"]}]})

    sha256: Sha256 = Field(title="Checkpoint sha256", description="Full lowercase hex sha256 of the file's bytes.")
    format: Literal["safetensors", "pt"] = Field(
        title="Format", description="safetensors, or pt (a pickle, read with weights_only and refused if it runs code).")
    url: StrictStr | None = Field(None, title="URL", description="An https URL to download the file from.")
    path: StrictStr | None = Field(None, title="Path", description="The file's path relative to the repository root.")
    key_prefix: Text | None = Field(
        None, title="Key prefix", description="A state-dict key prefix to strip when 'module.'/'model.' is not enough.")

    @model_validator(mode="after")
    def _one_location(self) -> "Checkpoint":
        if (self.url is None) == (self.path is None):
            raise CardProblems(("", "has both 'url' and 'path'; expected exactly one of them" if self.url is not None
                                else "expected exactly one of 'url' (https) and 'path' (relative to the repository root)"))
        problems = []
        if self.url is not None and (why := check_url(self.url)):
            problems.append(("url", why))
        location = urlparse(self.url).path if self.url is not None else self.path
        suffix = PurePosixPath(location or "").suffix.lower()
        other = [f for f, suffixes in CHECKPOINT_FORMATS.items() if f != self.format and suffix in suffixes]
        if other:
            problems.append(("format", f"{self.format!r} but the file ends in {suffix!r}; expected format {other[0]!r}"))
        if problems:
            raise CardProblems(*problems)
        return self


class Training(_Frozen):
    """How the checkpoint was trained: a robench recipe with its settings, or a description for external models.

    The recipe's settings (epochs, lr, ...) are further keys of this block; the architecture, the
    threat model and eps are the card's own and are not repeated here.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "anyOf": [{"required": ["recipe"]}, {"required": ["description"]}],
        "not": {"anyOf": [{"required": [key]} for key in TRAINING_REPEATS]},
    })

    recipe: Text | None = Field(None, title="Recipe", description="A robench recipe name (robench train --list).")
    description: Text | None = Field(None, title="Description", description="Free text, for models not trained by robench.")
    seed: StrictInt = Field(0, title="Seed", description="The recipe's seed.")
    torch_version: StrictStr | None = Field(None, title="Torch version", description="The torch that produced the bytes.")
    cpu: StrictStr | None = Field(None, title="CPU", description="The CPU that produced the bytes (bit-for-bit retraining).")

    @model_validator(mode="after")
    def _recipe_or_description(self) -> "Training":
        problems = []
        if self.recipe is None and self.description is None:
            problems.append(("", "expected a 'recipe' (a robench recipe name, with its settings) or a 'description' "
                                 "(free text for external models)"))
        for key in sorted(set(self.model_extra or {}) & set(TRAINING_REPEATS)):
            problems.append((key, f"repeats the card's {TRAINING_REPEATS[key]}; remove it "
                                  "(robench submit migrate FILE rewrites a file of the old form)"))
        if problems:
            raise CardProblems(*problems)
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """The recipe's settings: every key of the block but recipe, description, seed, torch_version and cpu."""
        return dict(self.model_extra or {})

    def __str__(self) -> str:
        if self.description is not None:
            return self.description
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"robench recipe {self.recipe}, seed {self.seed}" + (f" ({settings})" if settings else "")


class ReportedListing(_Frozen):
    """The authors' own numbers (fractions in [0, 1]); evaluated numbers come from result records."""

    clean_accuracy: Fraction01 | None = Field(None, title="Reported clean accuracy", description="As the authors report it.")
    robust_accuracy: Fraction01 | None = Field(
        None, title="Reported robust accuracy", description="As the authors report it at the board's eps, if they do.")

    @model_validator(mode="after")
    def _robust_at_most_clean(self) -> "ReportedListing":
        clean, robust = self.clean_accuracy, self.robust_accuracy
        if clean is not None and robust is not None and robust > clean:
            raise CardProblems(("robust_accuracy", f"{robust} exceeds the clean accuracy {clean}; expected at most {clean}"))
        return self

    def __str__(self) -> str:
        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.2f}%"
        return f"clean {pct(self.clean_accuracy)}, robust {pct(self.robust_accuracy)}"


class Reported(ReportedListing):
    clean_accuracy: Fraction01 = Field(title="Reported clean accuracy", description="As the authors report it.")


# ------------------------------------------------------------------ the card

class Listing(_Frozen):
    """What every board entry declares: a zoo card, or a result imported from another leaderboard's files.

    Free text (titles, authors, links, footnotes) is untrusted and escaped wherever it is shown.
    """

    #: "submission" for zoo cards, "imported" for entries read from another leaderboard's files
    origin: ClassVar[str] = "listing"
    # an Lp board's entry names its eps; a corruptions board's has none
    model_config = ConfigDict(json_schema_extra={"allOf": [{
        "if": {"properties": {"threat_model": {"const": CORRUPTIONS}}, "required": ["threat_model"]},
        "then": {"properties": {"eps": {"type": "null"}}},
        "else": {"required": ["eps"]},
    }]})

    id: SafeName = Field(title="Id", description="The model's id on its board.")
    dataset: DatasetName = Field(title="Dataset", description="The board's dataset.")
    threat_model: ThreatModelName = Field(title="Threat model", description="The board's threat model.")
    eps: Eps | None = Field(None, title="Eps", description='The board\'s budget, as a number or a fraction such as "8/255" '
                                                       '(Linf and L2; a corruptions board has none: leave it out).')
    paper: PaperListing = Field(title="Paper", description="The paper the model comes from.")
    additional_data: StrictBool = Field(False, title="Extra training data",
                                        description="Whether training used data beyond the dataset's training split.")
    number_forward_passes: StrictInt = Field(1, ge=1, title="Forward passes per prediction",
                                             description="How many forward passes one prediction takes (1 unless randomised or ensembled).")
    reported: ReportedListing = Field(default_factory=ReportedListing, title="Reported by the authors",
                                      description="The accuracies the authors report.")
    license: StrictStr = Field("", title="License", description="The checkpoint's license.")
    footnote: Text | None = Field(None, title="Footnote", description="A short note shown with the model (plain text).")

    _source_file: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _eps_for_lp_only(self) -> "Listing":
        if self.threat_model == CORRUPTIONS and self.eps is not None:
            raise CardProblems(("eps", f"{self.eps:g}, but a corruptions board has no eps; leave it out (or write null)"))
        if self.threat_model != CORRUPTIONS and self.eps is None:
            raise CardProblems(("eps", f"missing; a {self.threat_model} board has a budget (docs/datasets.md lists each board's)"))
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.threat_model, self.id)

    @property
    def source_file(self) -> str | None:
        """The file this entry was read from, relative to the repository root (None when built in code)."""
        return self._source_file

    def read_from(self, source_file: str | None) -> "Listing":
        """This entry, noting the file it was read from."""
        copy = self.model_copy()
        copy._source_file = source_file
        return copy

    @property
    def checkpoint_sha256(self) -> str | None:
        return None

    @property
    def architecture_label(self) -> str:
        """The architecture as a board shows it ("digits_cnn(width=32)"; an imported entry's own text)."""
        arch = getattr(self, "architecture", "")
        return arch.label if isinstance(arch, Architecture) else str(arch)

    def rows(self) -> list[tuple[str, str]]:
        """Every declared field that has a value, as (title, text), in declaration order: what ``robench models
        show`` prints and what a model page lists. A part without a text of its own (the paper, the
        checkpoint) gives one row per field; a field added to a declaration appears here with no other edit."""
        return _rows(self)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return ", ".join(_text(v) for v in value)
    return str(value)  # a part with its own text (the architecture, the training block) and plain values


def _rows(part: BaseModel) -> list[tuple[str, str]]:
    from benchmark.budgets import format_eps

    rows = []
    for name, info in type(part).model_fields.items():
        value = getattr(part, name)
        if value is None or value == "" or value == () or (info.json_schema_extra or {}).get("listed") is False:
            continue
        if isinstance(value, BaseModel) and type(value).__str__ is BaseModel.__str__:
            rows += _rows(value)
        elif name == "eps" and isinstance(part, Listing):
            rows.append((info.title or name, format_eps(part.dataset, part.threat_model, value)))
        else:
            rows.append((info.title or name, _text(value)))
    return rows


class ModelCard(Listing):
    """A zoo model: everything needed to load it, evaluate it and show it."""

    origin: ClassVar[str] = "submission"

    id: ModelId = Field(title="Id", description="<Surname><Year><FirstTitleWord>[_variant], e.g. 'Madry2018Towards'; "
                                                "the file's name.")
    paper: Paper = Field(title="Paper", description="The paper the model comes from.")
    architecture: Architecture = Field(title="Architecture", description="How to build the network the checkpoint fits.")
    num_classes: StrictInt = Field(ge=1, title="Classes", description="The number of logits; the dataset's class count.")
    preprocessing: Preprocessing = Field(title="Preprocessing", description="Normalisation and input size.")
    checkpoint: Checkpoint = Field(title="Checkpoint", description="The weights: where they are and their hash.")
    training: Training = Field(title="Training", description="How the checkpoint was trained.")
    additional_data: StrictBool = Field(title="Extra training data",
                                        description="Whether training used data beyond the dataset's training split.")
    number_forward_passes: StrictInt = Field(ge=1, title="Forward passes per prediction",
                                             description="How many forward passes one prediction takes (1 unless randomised or ensembled).")
    license: Text = Field(title="License", description="The checkpoint's license.")
    reported: Reported = Field(title="Reported by the authors", description="The accuracies the authors report.")

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.checkpoint.sha256


def json_schema(card_type: type[ModelCard] = ModelCard) -> dict[str, Any]:
    """The JSON Schema of a submission file (docs/submission.schema.json), derived from the card declaration."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://github.com/robench/robench/blob/main/docs/submission.schema.json",
            **card_type.model_json_schema()}
