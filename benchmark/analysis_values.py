"""What each value of a record's analysis means: the PGD-CE baseline and the local-stability metrics.

Declared once here (light: no torch), read by the site's model pages; ``benchmark.analysis``
computes the values and docs/trustworthy.md gives their definitions and settings in full.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple

__all__ = ["AnalysisValue", "ANALYSIS_VALUES"]


class AnalysisValue(NamedTuple):
    label: str
    #: shown in percent (a fraction in [0, 1]) rather than as a plain number
    percent: bool
    meaning: str


#: record key (``baselines`` or ``metrics``) -> how it is shown
ANALYSIS_VALUES: Mapping[str, AnalysisValue] = MappingProxyType({
    "pgd-ce": AnalysisValue(
        "PGD-CE baseline", True,
        "Robust accuracy under 50 steps of PGD on the cross-entropy alone, the attack most papers report. "
        "Well above the protocol's number means that attack alone overestimates this model's robustness."),
    "noise_accuracy": AnalysisValue(
        "Accuracy under random noise", True,
        "Accuracy when each point is perturbed by random noise of the same budget (20 draws per point)."),
    "noise_gap": AnalysisValue(
        "Noise gap", True,
        "Accuracy under random noise minus robust accuracy: how much worse the worst case in the ball is "
        "than a random one."),
    "jacobian_norm": AnalysisValue(
        "Jacobian norm", False,
        "Mean Frobenius norm of the derivative of the logits with respect to the input (first 100 points); "
        "smaller is smoother."),
    "local_linearity": AnalysisValue(
        "Local linearity gap", False,
        "Mean gap between the logit margin at a PGD point of the ball and its first-order prediction from "
        "the clean point; 0 for a linear model, large for a curved (often gradient-masking) one."),
    "lipschitz_lower_bound": AnalysisValue(
        "Lipschitz lower bound", False,
        "Mean of the largest ratio of output change (L2) to input change found in the ball: a lower bound on "
        "the model's local Lipschitz constant."),
})
