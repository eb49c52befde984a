"""Placeholder replaced by the issue-6 work: baselines, robustness curve, local-stability metrics."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Analysis:
    baselines: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    time_s: float = 0.0


def analyse(model, x, y, threat_model, eps, points, *, seed=0, device=None, batch_size=500) -> Analysis:
    return Analysis()
