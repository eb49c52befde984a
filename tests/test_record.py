"""The record's own consistency rules (``record_problems``): what a reader refuses in a record whose numbers
contradict each other (an edited accuracy, a verification or corruption result that does not add up),
each fault with its message word for word."""
from __future__ import annotations

import dataclasses

import pytest

from benchmark.record import CorruptionDetails, PointResult, VerificationDetails, record_problems
from leaderboard.synthetic import make_card, make_corruption_record, make_record

#: six points as the attacks left them, and what the verifier said of each
POINTS = [PointResult(0, 1, False, False, "clean"), PointResult(1, 1, True, False, "apgd-ce", norm=0.1),
          *(PointResult(i, 1, True, True) for i in range(2, 6))]
STATUSES = ["clean", "attacked", "certified", "exact_robust", "undecided", "exact_broken"]


def _verified(**change) -> VerificationDetails:
    fields = dict(status="verified", method="crown+milp", certified_accuracy=1 / 6, lower=2 / 6, upper=3 / 6,
                  exact_accuracy=None, undecided=1, missed=[5], statuses=list(STATUSES))
    return VerificationDetails(**{**fields, **change})


def _record(verification: VerificationDetails | None = None, **change):
    record = make_record(make_card("Checked2020Record"), 5 / 6, 4 / 6, n_examples=6)
    return dataclasses.replace(record, **{"points": list(POINTS), "verification": verification, **change})


def test_a_consistent_record_has_no_problem():
    assert record_problems(_record()) == []
    assert record_problems(_record(_verified())) == []
    assert record_problems(_record(VerificationDetails("not_verifiable", reason="too many ReLUs"))) == []


@pytest.mark.parametrize("change, problem", [
    ({"robust_accuracy": 1.5}, "robust_accuracy: 1.5 is not a fraction in [0, 1]"),
    ({"clean_accuracy": -0.1}, "clean_accuracy: -0.1 is not a fraction in [0, 1]"),
    ({"robust_accuracy": 0.5}, "robust_accuracy: 0.5 but the points say 4/6"),
])
def test_accuracies_out_of_range_or_against_the_points(change, problem):
    assert problem in record_problems(_record(**change))


@pytest.mark.parametrize("verification, problem", [
    (VerificationDetails("not_verifiable"), "verification: not verifiable without a reason"),
    (_verified(status="done"), "verification.status: 'done' is neither 'verified' nor 'not_verifiable'"),
    (_verified(statuses=[]), "verification.statuses: unknown [] or empty"),
    (_verified(statuses=[*STATUSES[:5], "sure"]), "verification.statuses: unknown ['sure'] or empty"),
    (_verified(certified_accuracy=0.5), "verification.certified_accuracy: 0.5 but the statuses say 0.16666666666666666"),
    (_verified(lower=None), "verification.lower: None but the statuses say 0.3333333333333333"),
    (_verified(upper=2 / 6), "verification.upper: 0.3333333333333333 but the statuses say 0.5"),
    (_verified(undecided=0), "verification.undecided/exact_accuracy: do not match the statuses"),
    (_verified(exact_accuracy=0.4), "verification.undecided/exact_accuracy: do not match the statuses"),
    (_verified(missed=[]), "verification.missed: not the points the program broke"),
], ids=["no-reason", "status", "empty", "unknown", "certified", "lower-missing", "upper", "undecided",
        "exact-while-undecided", "missed"])
def test_a_verification_that_does_not_add_up(verification, problem):
    assert record_problems(_record(verification)) == [problem]


def test_an_exact_result_needs_every_point_decided():
    decided = _verified(statuses=[*STATUSES[:4], "exact_robust", "exact_broken"], undecided=0, upper=3 / 6,
                        lower=3 / 6, exact_accuracy=3 / 6)
    assert record_problems(_record(decided)) == []
    assert record_problems(_record(dataclasses.replace(decided, exact_accuracy=None))) == [
        "verification.undecided/exact_accuracy: do not match the statuses"]


@pytest.mark.parametrize("statuses, first", [
    (["attacked", "attacked", "certified", "exact_robust", "undecided", "exact_broken"], 0),  # misclassified clean
    (["clean", "clean", "certified", "exact_robust", "undecided", "exact_broken"], 1),       # clean-correct
    (["clean", "attacked", "attacked", "exact_robust", "undecided", "exact_broken"], 2),    # the attacks left it robust
    (["clean", "certified", "certified", "exact_robust", "undecided", "exact_broken"], 1),  # the attacks broke it
])
def test_statuses_that_contradict_the_attacks(statuses, first):
    v = _verified(statuses=statuses)
    count = {s: statuses.count(s) for s in set(statuses)}
    v = dataclasses.replace(v, certified_accuracy=count.get("certified", 0) / 6,
                            lower=(count.get("certified", 0) + count.get("exact_robust", 0)) / 6,
                            upper=(count.get("certified", 0) + count.get("exact_robust", 0) + 1) / 6)
    assert record_problems(_record(v)) == [
        f"verification.statuses[{first}]: {statuses[first]!r} contradicts the attacks' result for the point"]


# --- corruptions ----------------------------------------------------------------------------------------------

def _corrupted(**change):
    """8 points; gaussian_noise right on 7, 6, 5, 4, 3 of them at severities 1-5; clean right on 8."""
    card = make_card("Blurred2020Check", "digits", "corruptions")
    record = make_corruption_record(card, 1.0, {"gaussian_noise": [7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8]}, n_examples=8)
    bits = {"clean": "ff", **{f"gaussian_noise/{s}": f"{(1 << (8 - s)) - 1:02x}" for s in range(1, 6)}}
    details = dataclasses.replace(record.corruptions, **{**change, "correct": {**bits, **change.get("correct", {})}})
    return dataclasses.replace(record, corruptions=details)


def test_a_consistent_corruptions_record_has_no_problem():
    assert record_problems(_corrupted()) == []


@pytest.mark.parametrize("change, problems", [
    ({"per_corruption": {"gaussian_noise": 0.5}}, [
        "corruptions.per_corruption.gaussian_noise: 0.5 is not the mean of its severities (0.625)",
        "robust_accuracy: 0.625 is not the mean over the corruptions (0.5)"]),
    ({"accuracy": {"gaussian_noise": [0.5] * 4}}, [
        "corruptions.accuracy.gaussian_noise: expected five fractions (severities 1-5), got [0.5, 0.5, 0.5, 0.5]"]),
    ({"correct": {"gaussian_noise/2": "3f"}}, []),  # the control: 6 of 8 points at 0.75 is right
    ({"correct": {"gaussian_noise/2": "7f"}}, [
        "corruptions.correct.gaussian_noise/2: 7/8 points correct, but the accuracy says 0.75"]),
    ({"correct": {"clean": "7f"}}, ["corruptions.correct.clean: 7/8 points correct, but the accuracy says 1.0"]),
    ({"correct": {"gaussian_noise/1": "7f7f"}}, ["corruptions.correct.gaussian_noise/1: not a bit string of 8 points"]),
    ({"correct": {"gaussian_noise/1": "zz"}}, ["corruptions.correct.gaussian_noise/1: not a bit string of 8 points"]),
], ids=["per-corruption", "four-severities", "right-count", "wrong-count", "clean-count", "too-long", "not-hex"])
def test_corruption_figures_that_contradict_each_other(change, problems):
    assert record_problems(_corrupted(**change)) == problems


def test_the_mean_over_the_corruptions_is_the_record_s_accuracy():
    record = _corrupted()
    assert record_problems(dataclasses.replace(record, robust_accuracy=0.5)) == [
        "robust_accuracy: 0.5 is not the mean over the corruptions (0.625)"]


def test_every_problem_is_listed_also_beside_a_verification_s():
    bad_name = _record(_verified(missed=[]), version="std/1")
    assert record_problems(bad_name) == ["version: 'std/1' may only use letters, digits, '_', '.', '-'",
                                         "verification.missed: not the points the program broke"]


def test_the_summary_states_the_verification_and_the_corruptions():
    undecided = _record(_verified(time_s=2.5)).summary().splitlines()
    assert undecided[-1] == "  the attacks missed 1 point(s) the verifier broke: [5]"
    assert undecided[-2] == "  certified:  16.67%; truth in [33.33%, 50.00%], 1 point(s) undecided (crown+milp, 2.5s)"
    decided = _verified(statuses=[*STATUSES[:4], "exact_robust", "exact_broken"], undecided=0, upper=3 / 6,
                        lower=3 / 6, exact_accuracy=3 / 6)
    assert "  certified:  16.67%; exact robust accuracy  50.00% (crown+milp, 0.0s)" in _record(decided).summary()
    corrupted = _corrupted().summary().splitlines()
    assert corrupted[0] == "Blurred2020Check on digits corruptions (standard, 8 points, seed 0)"
    assert corrupted[2] == "  gaussian_noise      62.50%   (severities 1-5: 87.5 75.0 62.5 50.0 37.5)"
    unnamed = dataclasses.replace(_record(), model={})
    assert unnamed.summary().startswith("model on digits Linf eps=0.2 (standard, 6 points, seed 0)")


def test_a_record_names_the_versions_that_made_it():
    import numpy
    import torch

    from benchmark import __version__
    from benchmark.record import library_versions

    versions = library_versions()
    assert {k: versions[k] for k in ("robench", "torch", "numpy")} == {
        "robench": __version__, "torch": torch.__version__, "numpy": numpy.__version__}
    assert set(versions) == {"robench", "python", "torch", "numpy", "torchvision"}


def test_accuracies_of_exactly_one_are_fractions_and_a_robust_misclassified_point_is_not():
    card = make_card("Perfect2020Check", "digits", "corruptions")
    perfect = make_corruption_record(card, 1.0, {"gaussian_noise": [1.0] * 5})
    perfect = dataclasses.replace(perfect, corruptions=dataclasses.replace(
        perfect.corruptions, accuracy_3d_sets={"fog_3d": [1.0] * 5}, accuracy_3d=1.0))
    assert record_problems(perfect) == []
    wrong = _record(points=[dataclasses.replace(POINTS[0], robust=True), *POINTS[1:]])
    assert record_problems(wrong) == ["points: a point is robust though misclassified clean or not evaluable"]
