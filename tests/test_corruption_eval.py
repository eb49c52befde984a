"""Accuracy under corruptions against hand-computed answers: an unchanged set, a set that flips every
prediction, the mean and the mCE; digits-C end to end on a zoo model."""
from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.corruption_eval import correct_bits, evaluate_corruptions, mean_corruption_error


class MeanThreshold(nn.Module):
    """Class 1 when the image's mean intensity is above 0.5, else class 0 (two logits)."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], dim=1)


def _tiny():
    means = np.array([40, 100, 160, 220, 60, 200], dtype=np.uint8)  # predictions 0 0 1 1 0 1
    clean = np.repeat(means[:, None, None], 8, 1).repeat(8, 2)
    labels = np.array([0, 0, 1, 0, 1, 1])  # clean accuracy 4/6
    return clean, labels


def test_an_unchanged_set_scores_the_clean_accuracy_and_the_means_are_the_hand_computed_ones():
    clean, labels = _tiny()
    bright = np.full_like(clean, 250)  # every prediction 1: accuracy 3/6
    sets = {("same", s): clean for s in range(1, 6)}
    sets.update({("bright", s): (clean if s < 3 else bright) for s in range(1, 6)})
    result = evaluate_corruptions(MeanThreshold(), "tiny", sets=sets, clean=clean, labels=labels)
    assert result.clean_accuracy == pytest.approx(4 / 6)
    details = result.corruptions
    assert details.accuracy["same"] == [pytest.approx(4 / 6)] * 5  # a model invariant to the corruption
    assert details.accuracy["bright"] == [pytest.approx(v) for v in (4 / 6, 4 / 6, 0.5, 0.5, 0.5)]
    assert details.per_corruption["bright"] == pytest.approx((2 * 4 / 6 + 3 * 0.5) / 5)
    assert result.robust_accuracy == pytest.approx((4 / 6 + (2 * 4 / 6 + 3 * 0.5) / 5) / 2)  # the board's number
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(details.correct["bright/5"]), dtype=np.uint8), bitorder="little")
    assert list(bits[:6]) == [0, 0, 1, 0, 1, 1]  # correct exactly where the label is 1
    assert details.sets_sha256["same/1"] == details.sets_sha256["bright/1"] != details.sets_sha256["bright/3"]
    assert result.threat_model == "corruptions" and result.eps is None and not result.points
    created = datetime.datetime.fromisoformat(result.created)
    assert created.tzinfo is not None and abs(datetime.datetime.now(datetime.timezone.utc) - created).total_seconds() < 60


def test_mean_corruption_error_against_hand_computed_values():
    reference = {"a": [0.2] * 5, "b": [0.5] * 5}
    errors = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5] * 5}
    assert mean_corruption_error(errors, reference) == pytest.approx(100 * (1.5 + 1.0) / 2)
    assert mean_corruption_error(reference, reference) == pytest.approx(100.0)  # AlexNet's own row reads 100
    with pytest.raises(ValueError, match="no errors for c"):
        mean_corruption_error({"c": [0.1] * 5}, reference)
    with pytest.raises(ValueError, match="the reference's errors on a sum to 0.0: no ratio"):
        mean_corruption_error({"a": [0.1] * 5}, {"a": [0.0] * 5})
    clean, labels = _tiny()
    sets = {("a", s): clean for s in range(1, 6)}
    result = evaluate_corruptions(MeanThreshold(), "tiny", sets=sets, clean=clean, labels=labels,
                                  reference_errors={"a": [0.5] * 5})
    assert result.corruptions.mce == pytest.approx(100 * (5 * (2 / 6)) / 2.5)


def test_bad_sets_are_refused_with_what_is_wrong():
    clean, labels = _tiny()
    with pytest.raises(ValueError, match=r"fog: severities \[5\] missing"):
        evaluate_corruptions(MeanThreshold(), "tiny", sets={("fog", s): clean for s in range(1, 5)}, clean=clean, labels=labels)
    with pytest.raises(ValueError, match=r"fog: severities \[1, 3\] missing"):
        evaluate_corruptions(MeanThreshold(), "tiny", sets={("fog", s): clean for s in (2, 4, 5)}, clean=clean, labels=labels)
    with pytest.raises(ValueError, match="fog/2: 5 images for 6 labels"):
        evaluate_corruptions(MeanThreshold(), "tiny", sets={("fog", s): clean[: 6 if s != 2 else 5] for s in range(1, 6)},
                             clean=clean, labels=labels)
    with pytest.raises(ValueError, match="no corrupted sets given"):
        evaluate_corruptions(MeanThreshold(), "tiny", sets={}, clean=clean, labels=labels)
    with pytest.raises(ValueError, match="only ImageNet-3DCC sets given"):
        evaluate_corruptions(MeanThreshold(), "tiny", sets={("flash", s): clean for s in range(1, 6)}, clean=clean,
                             labels=labels)
    for missing in ({"clean": clean}, {"labels": labels}):
        with pytest.raises(ValueError, match="^clean images and labels are needed with sets$"):
            evaluate_corruptions(MeanThreshold(), "tiny", sets={("fog", s): clean for s in range(1, 6)}, **missing)
    with pytest.raises(ValueError, match="no corrupted sets for 'mnist'"):
        evaluate_corruptions(MeanThreshold(), "mnist")


class LayoutProbe(nn.Module):
    """MeanThreshold of 4 copies of the image, made by a 1x1 and then a 3x3 identity convolution; notes whether the
    copies came out in channels_last (a one-channel tensor or a 1x1 kernel reads as both layouts at once)."""

    def __init__(self):
        super().__init__()
        self.spread = nn.Conv2d(1, 4, 1, bias=False)
        self.identity = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.spread.weight.fill_(1.0)
            self.identity.weight.zero_()
            self.identity.weight[range(4), range(4), 1, 1] = 1.0
        self.channels_last: list[bool] = []

    def forward(self, x):
        copies = self.identity(self.spread(x))
        self.channels_last.append(copies.is_contiguous(memory_format=torch.channels_last) and not copies.is_contiguous())
        return MeanThreshold()(copies)


def test_a_convolutional_model_runs_in_channels_last_on_the_cpu_as_evaluate_runs_it():
    clean, labels = _tiny()
    sets = {("a", s): clean for s in range(1, 6)}
    for channels_last, expected in ((None, True), (False, False), (True, True)):
        probe = LayoutProbe()
        result = evaluate_corruptions(probe, "tiny", sets=sets, clean=clean, labels=labels, channels_last=channels_last)
        assert result.clean_accuracy == pytest.approx(4 / 6)
        assert len(probe.channels_last) == 6 and set(probe.channels_last) == {expected}


def test_colour_sets_in_the_published_layout_are_read_as_nhwc():
    clean, labels = _tiny()
    colour = np.repeat(clean[..., None], 3, axis=3)  # (n, 8, 8, 3), as CIFAR-C and ImageNet-C store them
    result = evaluate_corruptions(MeanThreshold(), "tiny", sets={("same", s): colour for s in range(1, 6)},
                                  clean=colour, labels=labels)
    assert result.clean_accuracy == pytest.approx(4 / 6) and result.robust_accuracy == pytest.approx(4 / 6)


def test_correct_bits_put_point_i_at_bit_i():
    assert correct_bits(np.array([True, False, False, False, False, False, False, False, True])) == "0101"


def test_digits_c_end_to_end_on_a_zoo_model(tmp_path):
    from model_zoo import load_model

    model = load_model("LeCun1998Gradient", dataset="digits", threat_model="Linf")
    result = evaluate_corruptions(model, "digits")
    details = result.corruptions
    assert result.n_examples == 500 and len(details.accuracy) == 15 and len(details.sets_sha256) == 75
    assert result.clean_accuracy == pytest.approx(0.988)
    assert 0.3 < result.robust_accuracy < result.clean_accuracy
    assert details.accuracy["brightness"][0] > details.accuracy["brightness"][4]  # severity costs accuracy
    from leaderboard.sources import read_record

    assert read_record(result.save(tmp_path / "r.json")) == result  # strictly checked, as the leaderboard reads it


def test_alexnet_reference_gives_its_published_corruption_accuracy_and_scores_100():
    from benchmark.corruption_eval import ALEXNET_IMAGENET_C_ERRORS, default_reference_errors

    reference = default_reference_errors("imagenet")
    assert list(reference) == list(ALEXNET_IMAGENET_C_ERRORS) and default_reference_errors("cifar10") is None
    # AlexNet's published ImageNet-C accuracy is 21.12% (on the full set): the errors' mean says the same
    assert 1 - sum(ALEXNET_IMAGENET_C_ERRORS.values()) / 15 == pytest.approx(0.2112, abs=5e-4)
    assert mean_corruption_error(reference, reference) == pytest.approx(100.0)
    halved = {name: [e / 2 for e in errors] for name, errors in reference.items()}
    assert mean_corruption_error(halved, reference) == pytest.approx(50.0)
