"""Every flag a record or the leaderboard can carry, with the sentence shown for it: the one place they are described.

The pre-attack checks (``benchmark.checks``) and the evaluation set the :data:`CHECK_FLAGS`; the
leaderboard sets the :data:`LEADERBOARD_FLAGS`: ``unreliable`` when a record it imports says so,
``reported_not_reproduced`` when a card reports a robust accuracy more than ``REPORTED_TOLERANCE``
above the measured one. The site and the command line's
summary show these sentences; nothing else holds a copy.
"""
from __future__ import annotations

__all__ = ["FLAG_EXPLANATIONS", "CHECK_FLAGS", "LEADERBOARD_FLAGS", "REPORTED_TOLERANCE"]

FLAG_EXPLANATIONS: dict[str, str] = {
    "randomness": "The model's outputs change between forward passes of the same input: it is randomised, "
    "so gradients should be averaged over several samples (the 'rand' protocol version).",
    "softmax_output": "The model returns probabilities (non-negative, rows summing to 1) instead of logits; "
    "cross-entropy gradients can vanish, hiding adversarial examples.",
    "test_time_optimisation": "The forward pass itself runs autograd (an optimisation at test time); "
    "white-box gradients may not reflect the real decision function.",
    "zero_gradients": "Some points have an input gradient that is exactly zero or not finite (quantisation or "
    "saturation): gradient attacks are blind there.",
    "too_few_classes": "The model has fewer classes than some attacks of the protocol need (the record's details "
    "give both numbers); those attacks were skipped or run with fewer targets.",
    "black_box_beats_white_box": "The black-box Square attack broke points that every gradient attack missed: "
    "a sign of gradient masking, so the robust accuracy of white-box attacks alone would be too high.",
    "non_finite_logits": "The model returned NaN or infinite logits on perturbed inputs (its details give the "
    "number of points): those points count as not robust, since no prediction can be read there.",
    "attacks_missed_points": "Exact verification broke points that every attack of the protocol left robust: "
    "the attacks' robust accuracy is above the truth. The most serious flag: the counterexamples are on the "
    "model page, checked by the model's own forward pass.",
    "unreliable": "The source this result was imported from marks the evaluation as unreliable.",
    "reported_not_reproduced": "The robust accuracy the submission reports is more than 1 point above the one "
    "measured here: the stronger evaluation wins, and the gap is what the field's flags exist for.",
}

#: the flags only the leaderboard sets, from what it knows beside the record
LEADERBOARD_FLAGS: tuple[str, ...] = ("unreliable", "reported_not_reproduced")
#: the flags an evaluation itself sets
CHECK_FLAGS: tuple[str, ...] = tuple(name for name in FLAG_EXPLANATIONS if name not in LEADERBOARD_FLAGS)
#: how far (a fraction) a reported robust accuracy may lie above the measured one before it is flagged
REPORTED_TOLERANCE = 0.01
