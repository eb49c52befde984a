"""Architectures by name: ours (``source: robench``), timm's and torchvision's.

``build_architecture`` turns a card's :class:`~model_zoo.cards.Architecture` into a freshly
initialised ``nn.Module`` whose classifier has ``num_classes`` outputs. Checkpoint weights are
loaded afterwards by :mod:`model_zoo.loading`; pretrained weights are never fetched here.
"""
from __future__ import annotations

import difflib
import inspect
import sys
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

from ..cards import Architecture
from .digits import DigitsCNN, DigitsMLP
from .preact_resnet import PreActResNet, preact_resnet18
from .wide_resnet import WideResNet, wrn_28_10, wrn_34_10, wrn_70_16

__all__ = [
    "ARCHITECTURES", "SOURCES", "build_architecture", "check_architecture",
    "DigitsCNN", "DigitsMLP", "PreActResNet", "WideResNet",
]

#: our architectures: name -> constructor taking ``num_classes`` plus the card's kwargs
ARCHITECTURES: Mapping[str, Callable[..., nn.Module]] = MappingProxyType({
    "digits_cnn": DigitsCNN,
    "digits_mlp": DigitsMLP,
    "preact_resnet18": preact_resnet18,
    "wide_resnet": WideResNet,
    "wrn_28_10": wrn_28_10,
    "wrn_34_10": wrn_34_10,
    "wrn_70_16": wrn_70_16,
})

SOURCES = ("robench", "timm", "torchvision")


def _close(name: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def check_architecture(arch: Architecture, num_classes: int, import_libraries: bool = True) -> str | None:
    """Why ``arch`` cannot be built (unknown source or name, kwargs its constructor does not take), else None.

    Cheap: robench constructors are checked against their signatures without building anything;
    timm and torchvision names are looked up in those libraries' registries, imported on demand
    unless ``import_libraries`` is False (then a name is checked only if its library is loaded already).
    """
    if arch.source in ("timm", "torchvision") and not import_libraries and arch.source not in sys.modules:
        return None
    if arch.source == "robench":
        if arch.name not in ARCHITECTURES:
            return f"unknown robench architecture {arch.name!r}{_close(arch.name, list(ARCHITECTURES))} (known: {', '.join(ARCHITECTURES)})"
        try:
            inspect.signature(ARCHITECTURES[arch.name]).bind(num_classes=num_classes, **dict(arch.kwargs))
        except TypeError as exc:
            return f"robench architecture {arch.name!r} does not accept the kwargs {dict(arch.kwargs)}: {exc}"
        return None
    if arch.source == "timm":
        import timm

        if not timm.is_model(arch.name):
            return f"timm has no model {arch.name!r}{_close(arch.name, timm.list_models())}"
        return None
    if arch.source == "torchvision":
        import torchvision

        known = torchvision.models.list_models()
        if arch.name not in known:
            return f"torchvision has no model {arch.name!r}{_close(arch.name, known)}"
        return None
    return f"unknown architecture source {arch.source!r}; expected one of {', '.join(SOURCES)}"


def _plain(value: Any) -> Any:
    """Frozen card values (mapping proxies, tuples) back to the dicts and lists constructors expect."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def build_architecture(arch: Architecture, num_classes: int) -> nn.Module:
    """A freshly initialised network for ``arch`` with ``num_classes`` outputs (no pretrained weights)."""
    problem = check_architecture(arch, num_classes)
    if problem is not None:
        raise ValueError(problem)
    kwargs = _plain(arch.kwargs)
    if arch.source == "robench":
        return ARCHITECTURES[arch.name](num_classes=num_classes, **kwargs)
    if arch.source == "timm":
        import timm

        return timm.create_model(arch.name, pretrained=False, num_classes=num_classes, **kwargs)
    import torchvision

    return torchvision.models.get_model(arch.name, weights=None, num_classes=num_classes, **kwargs)
