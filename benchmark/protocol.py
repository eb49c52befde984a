"""The protocol as data: each version is a list of (attack, settings) entries.

The runner walks a version's entries in order; each entry builds a fresh attack object
from its settings, so nothing is mutated between runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from .attacks import APGD, FAB, FGSM, PGD, Attack, Square
from .threat_models import ThreatModel

__all__ = ["AttackEntry", "ATTACKS", "PROTOCOLS", "RANKED_VERSIONS", "FAST_FALLBACK", "get_protocol", "attack_class", "build_attack", "classes_needed",
           "broken_before_minimum_norm"]

#: attack kind -> its class
ATTACKS: Mapping[str, type[Attack]] = MappingProxyType({
    "apgd": APGD,
    "fab": FAB,
    "square": Square,
    "pgd": PGD,
    "fgsm": FGSM,
})


@dataclass(frozen=True)
class AttackEntry:
    #: the name recorded per point and shown on the site, e.g. "apgd-ce"
    name: str
    #: a key of ATTACKS
    kind: str
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _entry(name: str, kind: str, **settings: Any) -> AttackEntry:
    return AttackEntry(name, kind, MappingProxyType(settings))


PROTOCOLS: Mapping[str, tuple[AttackEntry, ...]] = MappingProxyType({
    "standard": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=1, rho=0.75),
        _entry("apgd-t", "apgd", loss="dlr", n_iter=100, n_restarts=1, rho=0.75, n_targets=9),
        _entry("fab-t", "fab", n_iter=100, n_restarts=1, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9),
        _entry("square", "square", n_queries=5000, p_init=0.8, n_restarts=1),
    ),
    "plus": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=5, rho=0.75),
        _entry("apgd-dlr", "apgd", loss="dlr", n_iter=100, n_restarts=5, rho=0.75),
        _entry("fab", "fab", n_iter=100, n_restarts=5, n_targets=0, alpha_max=0.1, eta=1.05, beta=0.9),
        _entry("square", "square", n_queries=5000, p_init=0.8, n_restarts=1),
        _entry("apgd-t", "apgd", loss="dlr", n_iter=100, n_restarts=1, rho=0.75, n_targets=9),
        _entry("fab-t", "fab", n_iter=100, n_restarts=1, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9),
    ),
    "rand": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=1, rho=0.75, eot_iter=20),
        _entry("apgd-dlr", "apgd", loss="dlr", n_iter=100, n_restarts=1, rho=0.75, eot_iter=20),
    ),
    # for many checkpoints at once (every epoch of a run, sweeps): APGD-T towards the 5 targets nearest
    # to first order (MALT) instead of 9 logit-ranked ones, no FAB-T, Square with 1,000 queries instead
    # of 5,000 (with 3 targets and no Square the zoo's models kept up to 3 more points robust of 500,
    # docs/evaluation.md); when a pre-attack check fires (or the model is randomised) the runner runs
    # 'standard' instead (FAST_FALLBACK)
    "fast": (
        _entry("apgd-ce", "apgd", loss="ce", n_iter=100, n_restarts=1, rho=0.75),
        _entry("apgd-t-malt", "apgd", loss="dlr", n_iter=100, n_restarts=1, rho=0.75, n_targets=5,
               target_order="first_order"),
        _entry("square", "square", n_queries=1000, p_init=0.8, n_restarts=1),
    ),
})
#: the version run instead of 'fast' when a check says the fast attacks cannot be trusted on the model
FAST_FALLBACK = "standard"


#: versions whose records rank on a board; 'fast' is shown as its own version, never ranked
RANKED_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand")


def get_protocol(version: str) -> tuple[AttackEntry, ...]:
    if version not in PROTOCOLS:
        raise ValueError(f"unknown protocol version {version!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[version]


def attack_class(kind: str) -> type[Attack]:
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[kind]


def build_attack(entry: AttackEntry, threat_model: ThreatModel, num_classes: int | None, seed: int) -> Attack:
    """A fresh attack for one entry; targets are capped at num_classes - 1 (None: as the entry says)."""
    settings = dict(entry.settings)
    if settings.get("n_targets") and num_classes is not None:
        settings["n_targets"] = min(settings["n_targets"], num_classes - 1)
    return attack_class(entry.kind)(threat_model, seed=seed, **settings)


def classes_needed(entries: Iterable[AttackEntry], threat_model: ThreatModel) -> int:
    """The fewest classes a model needs for every entry to run with all its settings (no target dropped)."""
    return max((build_attack(e, threat_model, None, 0).classes_needed() for e in entries), default=2)


def broken_before_minimum_norm(entries: Sequence[AttackEntry]) -> tuple[str, ...]:
    """Names of the entries that run before the version's first minimum-norm attack (all, if it has none).

    A point one of these broke never met a minimum-norm attack: its record proves a norm <= eps but
    no minimal norm (the analysis runs FAB on it for the robustness curve).
    """
    names: list[str] = []
    for entry in entries:
        if attack_class(entry.kind).is_minimum_norm:
            break
        names.append(entry.name)
    return tuple(names)
