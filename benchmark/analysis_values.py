"""What each value of a record's analysis means: the PGD-CE baseline and the local-stability metrics.

Declared once here (light: no torch), read by the site's model pages; ``benchmark.analysis``
computes the values and docs/trustworthy.md gives their definitions and settings in full.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple

__all__ = ["AnalysisValue", "ANALYSIS_VALUES", "METRIC_POINTS", "NOISE_DRAWS", "PGD_CE_STEPS"]

#: the metrics other than noise accuracy use the first METRIC_POINTS points
METRIC_POINTS = 50
#: noisy copies per point for the noise accuracy
NOISE_DRAWS = 20
#: steps of the PGD-CE baseline
PGD_CE_STEPS = 50


class AnalysisValue(NamedTuple):
    label: str
    #: shown in percent (a fraction in [0, 1]) rather than as a plain number
    percent: bool
    meaning: str


#: record key (``baselines`` or ``metrics``) -> how it is shown
ANALYSIS_VALUES: Mapping[str, AnalysisValue] = MappingProxyType({
    "pgd-ce": AnalysisValue(
        "PGD-CE baseline", True,
        f"Robust accuracy under {PGD_CE_STEPS} steps of PGD on the cross-entropy alone, the attack most papers report. "
        "Well above the protocol's number means that attack alone overestimates this model's robustness."),
    "noise_accuracy": AnalysisValue(
        "Accuracy under random noise", True,
        f"Accuracy when each point is perturbed by random noise of the same budget ({NOISE_DRAWS} draws per point)."),
    "noise_gap": AnalysisValue(
        "Noise gap", True,
        "Accuracy under random noise minus robust accuracy: how much worse the worst case in the ball is "
        "than a random one."),
    "jacobian_norm": AnalysisValue(
        "Jacobian norm", False,
        f"Mean Frobenius norm of the derivative of the logits with respect to the input (first {METRIC_POINTS} points); "
        "smaller is smoother."),
    "local_linearity": AnalysisValue(
        "Local linearity gap", False,
        "Mean gap between the logit margin at a PGD point of the ball and its first-order prediction from "
        f"the clean point (first {METRIC_POINTS} points); 0 for a linear model, large for a curved (often gradient-masking) one."),
    "lipschitz_lower_bound": AnalysisValue(
        "Lipschitz lower bound", False,
        "Mean of the largest ratio of output change (L2) to input change found in the ball: a lower bound on "
        f"the model's local Lipschitz constant (first {METRIC_POINTS} points)."),
})
