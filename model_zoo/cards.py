"""The model card: the one typed, frozen description of a zoo entry.

A card is read from its submission file ``submissions/<dataset>/<threat_model>/<ModelID>.<json|yaml>``;
nothing about a model lives anywhere else. Parsing and validation live in
``model_zoo.submission_schema`` (every problem of a file is reported at once).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

__all__ = ["ModelCard", "Architecture", "Preprocessing", "Checkpoint", "Reported"]


@dataclass(frozen=True)
class Architecture:
    #: "robench" (model_zoo/architectures), "timm" or "torchvision"
    source: Literal["robench", "timm", "torchvision"]
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def label(self) -> str:
        """How the architecture is shown (``robench models``, the site): ``name(k=v, ...)``, keys sorted."""
        kwargs = ", ".join(f"{k}={v}" for k, v in sorted(dict(self.kwargs).items()))
        return f"{self.name}({kwargs})" if kwargs else self.name


@dataclass(frozen=True)
class Preprocessing:
    """Applied inside the returned model (normalisation) or by the data loader (resize/crop)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: (channels, height, width) of the tensor the model receives
    input_size: tuple[int, int, int]
    #: ImageNet only: the loader's Resize and CenterCrop sizes
    resize: int | None = None
    crop: int | None = None


@dataclass(frozen=True)
class Checkpoint:
    #: full lowercase hex sha256 of the file's bytes
    sha256: str
    format: Literal["safetensors", "pt"]
    #: exactly one of url (https) and path (relative to the repository root) is set
    url: str | None = None
    path: str | None = None
    #: a state-dict key prefix to strip, when the general rule ('module.', 'model.') is not enough
    key_prefix: str | None = None


@dataclass(frozen=True)
class Reported:
    """Numbers the authors reported (in [0, 1]); evaluated numbers come from result records."""

    clean_accuracy: float
    robust_accuracy: float | None = None


@dataclass(frozen=True)
class ModelCard:
    #: <Surname><Year><FirstTitleWord>[_variant]
    id: str
    dataset: str
    threat_model: str
    eps: float
    #: paper title
    name: str
    link: str
    authors: tuple[str, ...]
    venue: str
    year: int
    architecture: Architecture
    num_classes: int
    preprocessing: Preprocessing
    checkpoint: Checkpoint
    #: training recipe: a robench recipe name and its settings, or free text for external models
    training: Mapping[str, Any]
    additional_data: bool
    number_forward_passes: int
    license: str
    reported: Reported
    #: the model's BibTeX entry, optional
    bibtex: str | None = None
    #: a short footnote shown on the board (plain text, escaped on the site)
    footnote: str | None = None
    #: the submission file this card was read from, relative to the repository root
    source_file: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.threat_model, self.id)
