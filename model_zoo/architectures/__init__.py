"""Architectures by name: ours (``source: robench``), timm's and torchvision's.

``build_architecture`` turns a card's :class:`~model_zoo.cards.Architecture` into a freshly
initialised ``nn.Module`` whose classifier has ``num_classes`` outputs. Checkpoint weights are
loaded afterwards by :mod:`model_zoo.loading`; pretrained weights are never fetched here.
"""
from __future__ import annotations

import difflib
import inspect
import re
import sys
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import nn

from ..cards import Architecture
from .digits import DigitsCNN, DigitsMLP
from .preact_resnet import PreActResNet, preact_resnet18
from .wide_resnet import WideResNet, wrn_28_10, wrn_34_10, wrn_70_16

__all__ = [
    "ARCHITECTURES", "SOURCES", "LIBRARY_KWARGS", "MAX_INT_KWARG", "build_architecture", "check_architecture",
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

#: the kwargs a card may pass to a timm or torchvision constructor: shapes and regularisation only.
#: Anything else is refused, above all what would read a file or fetch weights at build time
#: (timm's ``pretrained``, ``checkpoint_path``, ``pretrained_cfg``; torchvision's ``weights``): a
#: zoo model's weights come from its verified checkpoint and nowhere else.
LIBRARY_KWARGS: Mapping[str, frozenset[str]] = MappingProxyType({
    "timm": frozenset({"in_chans", "img_size", "drop_rate", "drop_path_rate", "drop_block_rate", "global_pool",
                       "act_layer", "output_stride", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                       "window_size", "class_token", "qkv_bias"}),
    "torchvision": frozenset({"dropout", "attention_dropout", "stochastic_depth_prob", "image_size", "aux_logits",
                              "transform_input", "init_weights", "zero_init_residual", "groups", "width_per_group"}),
})
#: the largest integer a robench constructor takes (widths, depths: a 1e9-wide layer would exhaust any memory)
MAX_INT_KWARG = 4096
_NAME_VALUE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _kwarg_problem(name: str, value: Any, annotation: Any) -> str | None:
    """Why ``value`` is not a sensible ``name`` for a constructor annotated ``annotation``, else None."""
    if annotation in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT_KWARG:
            return f"{name} must be an integer from 1 to {MAX_INT_KWARG}, got {value!r}"
    elif annotation in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            return f"{name} must be a number in [0, 1), got {value!r}"
    elif not (isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INT_KWARG for v in value)):
        return f"{name} must be a list of integers from 1 to {MAX_INT_KWARG}, got {value!r}"
    return None


def _library_kwargs_problem(arch: Architecture) -> str | None:
    allowed = LIBRARY_KWARGS[arch.source]
    refused = sorted(set(arch.kwargs) - allowed)
    if refused:
        return (f"{arch.source} kwargs {', '.join(refused)} are not allowed (weights come only from the card's "
                f"checkpoint); allowed: {', '.join(sorted(allowed))}")
    for name, value in arch.kwargs.items():
        scalar = isinstance(value, (bool, int, float)) or (isinstance(value, str) and _NAME_VALUE.fullmatch(value))
        if not (scalar or (isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value))):
            return f"{arch.source} kwarg {name} must be a number, a flag, a name or a list of numbers, got {value!r}"
    return None


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
        return _library_kwargs_problem(arch)
    if arch.source == "robench":
        if arch.name not in ARCHITECTURES:
            return f"unknown robench architecture {arch.name!r}{_close(arch.name, list(ARCHITECTURES))} (known: {', '.join(ARCHITECTURES)})"
        signature = inspect.signature(ARCHITECTURES[arch.name])
        try:
            signature.bind(num_classes=num_classes, **dict(arch.kwargs))
        except TypeError as exc:
            return f"robench architecture {arch.name!r} does not accept the kwargs {dict(arch.kwargs)}: {exc}"
        for name, value in arch.kwargs.items():
            problem = _kwarg_problem(name, value, signature.parameters[name].annotation)
            if problem:
                return f"robench architecture {arch.name!r}: {problem}"
        return None
    if arch.source in LIBRARY_KWARGS:
        problem = _library_kwargs_problem(arch)
        if problem:
            return problem
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
