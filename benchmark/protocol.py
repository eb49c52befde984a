"""The protocol as data: each version is a list of (attack, settings) entries.

The runner walks a version's entries in order; each entry builds a fresh attack object
from its settings, so nothing is mutated between runs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .attacks.base import Attack
from .threat_models import ThreatModel

__all__ = ["AttackEntry", "ATTACKS", "PROTOCOLS", "get_protocol", "build_attack"]

#: attack kind -> "module:Class" under benchmark.attacks (imported on first use)
ATTACKS: Mapping[str, str] = MappingProxyType({
    "apgd": "apgd:APGD",
    "fab": "fab:FAB",
    "square": "square:Square",
    "pgd": "pgd:PGD",
    "fgsm": "pgd:FGSM",
})


@dataclass(frozen=True)
class AttackEntry:
    #: the name recorded per point and shown on the site, e.g. "apgd-ce"
    name: str
    #: a key of ATTACKS
    kind: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: settings that need at least this many classes (DLR: 3; targeted DLR: 4; n targets: n + 1)
    min_classes: int = 2

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **dict(self.settings)}


def _entry(name: str, kind: str, min_classes: int = 2, **settings: Any) -> AttackEntry:
    return AttackEntry(name, kind, MappingProxyType(settings), min_classes)


PROTOCOLS: Mapping[str, tuple[AttackEntry, ...]] = MappingProxyType({
    "standard": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=1, rho=0.75),
        _entry("apgd-t", "apgd", min_classes=4, loss="dlr", n_iter=100, n_restarts=1, rho=0.75, n_targets=9),
        _entry("fab-t", "fab", n_iter=100, n_restarts=1, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9),
        _entry("square", "square", n_queries=5000, p_init=0.8, n_restarts=1),
    ),
    "plus": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=5, rho=0.75),
        _entry("apgd-dlr", "apgd", min_classes=3, loss="dlr", n_iter=100, n_restarts=5, rho=0.75),
        _entry("fab", "fab", n_iter=100, n_restarts=5, n_targets=0, alpha_max=0.1, eta=1.05, beta=0.9),
        _entry("square", "square", n_queries=5000, p_init=0.8, n_restarts=1),
        _entry("apgd-t", "apgd", min_classes=4, loss="dlr", n_iter=100, n_restarts=1, rho=0.75, n_targets=9),
        _entry("fab-t", "fab", n_iter=100, n_restarts=1, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9),
    ),
    "rand": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=1, rho=0.75, eot_iter=20),
        _entry("apgd-dlr", "apgd", min_classes=3, loss="dlr", n_iter=100, n_restarts=1, rho=0.75, eot_iter=20),
    ),
})


def get_protocol(version: str) -> tuple[AttackEntry, ...]:
    if version not in PROTOCOLS:
        raise ValueError(f"unknown protocol version {version!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[version]


def attack_class(kind: str) -> type[Attack]:
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; known: {', '.join(ATTACKS)}")
    module, cls = ATTACKS[kind].split(":")
    return getattr(importlib.import_module(f"benchmark.attacks.{module}"), cls)


def build_attack(entry: AttackEntry, threat_model: ThreatModel, num_classes: int, seed: int) -> Attack:
    """A fresh attack for one entry; targets are capped at num_classes - 1."""
    settings = dict(entry.settings)
    if settings.get("n_targets"):
        settings["n_targets"] = min(settings["n_targets"], num_classes - 1)
    return attack_class(entry.kind)(threat_model, seed=seed, **settings)
