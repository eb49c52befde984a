"""What the leaderboard knows about a model, and external evaluations given as plain dicts.

``ListedModel`` is the display view of a model: built from a zoo ``ModelCard`` or from a
file imported from the field's de facto format (which has no checkpoint, preprocessing or
training recipe, so it cannot be a full card). External evaluations (a stronger attack by
someone else) are ``benchmark.external.ExternalEvaluation`` objects.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from benchmark.budgets import BOARDS
from benchmark.external import ExternalEvaluation
from benchmark.threat_models import parse_eps
from model_zoo.cards import ModelCard

__all__ = ["ListedModel", "as_listed", "external_from_dict", "external_key", "SAFE_ID"]

#: model ids and board names that may become file names on the site
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ListedModel:
    """A model as the leaderboard shows it. Free text (name, authors, link, footnote) is untrusted."""

    id: str
    dataset: str
    threat_model: str
    eps: float
    #: paper title
    name: str
    link: str
    authors: tuple[str, ...]
    venue: str
    #: None when the source does not say (the de facto format has no year)
    year: int | None
    #: architecture as text, e.g. "digits_cnn(width=32)" or "WideResNet-28-10"
    architecture: str
    additional_data: bool
    number_forward_passes: int
    #: the authors' own numbers, fractions in [0, 1]
    reported_clean: float | None = None
    reported_robust: float | None = None
    bibtex: str | None = None
    #: plain text (escaped on the site)
    footnote: str | None = None
    #: how the model was trained, as text
    training: str = ""
    license: str = ""
    checkpoint_sha256: str | None = None
    #: "submission" for zoo cards, "imported" for the de facto format
    origin: str = "submission"
    #: the file this entry was read from
    source_file: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.threat_model, self.id)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["authors"] = list(self.authors)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ListedModel":
        """Read what ``to_dict`` wrote; a missing or unknown field is a ValueError naming it."""
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} in a listed model")
        values = dict(data)
        values["authors"] = tuple(str(a) for a in values.get("authors", ()))
        try:
            model = cls(**values)
        except TypeError as exc:
            raise ValueError(f"incomplete listed model: {exc}") from None
        _validate(model)
        return model


def _validate(model: ListedModel) -> None:
    if not SAFE_ID.fullmatch(model.id):
        raise ValueError(f"model id {model.id!r} may only use letters, digits, '_', '.', '-'")
    for name in ("dataset", "threat_model"):
        if not SAFE_ID.fullmatch(getattr(model, name)):
            raise ValueError(f"{name} {getattr(model, name)!r} may only use letters, digits, '_', '.', '-'")
    if not (isinstance(model.eps, (int, float)) and math.isfinite(model.eps) and model.eps > 0):
        raise ValueError(f"eps of {model.id} must be a positive number, got {model.eps!r}")


def _training_text(training: Mapping[str, Any]) -> str:
    if "description" in training:
        return str(training["description"])
    settings = ", ".join(f"{k}={v}" for k, v in training.items() if k != "recipe")
    recipe = training.get("recipe", "unknown recipe")
    return f"robench recipe {recipe}" + (f" ({settings})" if settings else "")


def as_listed(card: ModelCard | ListedModel) -> ListedModel:
    """The display view of a zoo card (a ListedModel is returned as it is)."""
    if isinstance(card, ListedModel):
        return card
    if not isinstance(card, ModelCard):
        raise TypeError(f"expected a ModelCard or ListedModel, got {type(card).__name__}")
    listed = ListedModel(
        id=card.id, dataset=card.dataset, threat_model=card.threat_model, eps=float(card.eps),
        name=card.name, link=card.link, authors=tuple(card.authors), venue=card.venue, year=card.year,
        architecture=card.architecture.label, additional_data=bool(card.additional_data),
        number_forward_passes=int(card.number_forward_passes),
        reported_clean=card.reported.clean_accuracy, reported_robust=card.reported.robust_accuracy,
        bibtex=card.bibtex, footnote=card.footnote, training=_training_text(card.training),
        license=card.license, checkpoint_sha256=card.checkpoint.sha256, origin="submission",
        source_file=card.source_file,
    )
    _validate(listed)
    return listed


def external_from_dict(data: Mapping[str, Any]) -> ExternalEvaluation:
    """An external evaluation from a dict {dataset, threat_model, model_id, robust_accuracy, attack, who[, link, eps]}.

    ``robust_accuracy`` is a fraction in [0, 1]; ``eps`` (a number or "8/255") defaults to the board's.
    Unlike ``benchmark.external.read_external`` (for submitted files) the link may be empty, as in
    evaluations imported from the de facto format.
    """
    required = ("dataset", "threat_model", "model_id", "robust_accuracy", "attack", "who")
    missing = [k for k in required if data.get(k) in (None, "")]
    if missing:
        raise ValueError(f"external evaluation lacks {', '.join(missing)}")
    unknown = sorted(set(data) - set(ExternalEvaluation.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} in an external evaluation")
    acc = data["robust_accuracy"]
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= float(acc) <= 1.0:
        raise ValueError(f"external robust_accuracy must be a fraction in [0, 1], got {acc!r}")
    dataset, threat = str(data["dataset"]), str(data["threat_model"])
    if data.get("eps") is None:
        if (dataset, threat) not in BOARDS:
            raise ValueError(f"external evaluation of {data['model_id']} gives no eps and {dataset}/{threat} is no board")
        eps = BOARDS[(dataset, threat)][0]
    else:
        eps = parse_eps(data["eps"])
    return ExternalEvaluation(
        model_id=str(data["model_id"]), dataset=dataset, threat_model=threat, eps=eps, who=str(data["who"]),
        attack=str(data["attack"]), robust_accuracy=float(acc), link=str(data.get("link") or ""),
        adversarial_examples=data.get("adversarial_examples"), source_file=data.get("source_file"),
    )


def external_key(evaluation: ExternalEvaluation) -> tuple[str, str, str]:
    return (evaluation.dataset, evaluation.threat_model, evaluation.model_id)
