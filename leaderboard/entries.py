"""What the leaderboard knows about a model, and external evaluations given as plain dicts.

A board lists :class:`~model_zoo.cards.Listing` values: zoo cards (``ModelCard`` is a Listing),
and :class:`ImportedListing` entries read from the field's de facto format, which has no
checkpoint, preprocessing or training recipe and so cannot be a full card. Both are declared once,
in ``model_zoo.cards``; this module adds only what an imported entry has instead (the architecture
and training as text). External evaluations (a stronger attack by someone else) are
``benchmark.external.ExternalEvaluation`` objects.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from pydantic import Field, StrictStr, ValidationError

from benchmark.budgets import BOARDS
from benchmark.external import ExternalEvaluation
from benchmark.threat_models import parse_eps
from model_zoo.cards import SAFE_NAME, Listing

__all__ = ["ImportedListing", "Listing", "read_listing", "external_from_dict", "external_key", "SAFE_ID"]

#: model ids and board names that may become file names on the site
SAFE_ID = SAFE_NAME


class ImportedListing(Listing):
    """A model as another leaderboard's results file describes it."""

    origin: ClassVar[str] = "imported"

    architecture: StrictStr = Field("", title="Architecture", description="The architecture as the source names it.")
    training: StrictStr = Field("not described (imported)", title="Training", description="How the model was trained.")
    imported_from: StrictStr | None = Field(None, title="Imported from",
                                            description="The results file this entry was read from.")
    source_text: StrictStr | None = Field(None, title="Source text", json_schema_extra={"listed": False},
                                          description="The imported file's exact text, so that an export gives it back.")
    warnings: tuple[StrictStr, ...] = Field((), title="Import warnings", json_schema_extra={"listed": False},
                                            description="What the import noticed and decided (shown in the build notes).")

    @property
    def source_file(self) -> str | None:
        return self.imported_from


def read_listing(data: Mapping[str, Any]) -> ImportedListing:
    """An imported entry from what ``model_dump(mode="json")`` wrote; a ValueError names every bad field."""
    try:
        return ImportedListing.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(entry)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid listed model: {problems}") from None


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
