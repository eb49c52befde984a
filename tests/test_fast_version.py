"""The 'fast' version: APGD-T towards the targets nearest to first order (MALT), and the fall-back to 'standard'."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from benchmark import evaluate
from benchmark.attacks._common import first_order_ranking
from benchmark.attacks.apgd import APGD
from benchmark.protocol import FAST_FALLBACK, PROTOCOLS, RANKED_VERSIONS
from benchmark.threat_models import L2, Linf
from leaderboard.aggregate import aggregate
from leaderboard.synthetic import make_card, make_record


def _unequal_classes(linear_model, seed: int):
    """A linear problem whose class weights differ in scale: there the largest other logit is often not the
    class with the nearest boundary, so the two target orders differ."""
    prob = linear_model(n=96, num_classes=10, seed=seed)
    with torch.no_grad():
        factors = torch.linspace(0.3, 3.0, 10)
        prob.model.linear.weight.mul_(factors[:, None])
        prob.model.linear.bias.mul_(factors)
        prob.y = prob.model(prob.x).argmax(1)
    return prob


@pytest.mark.parametrize("tm", [Linf(), L2()], ids=["Linf", "L2"])
def test_first_order_ranking_orders_a_linear_models_classes_by_their_exact_distance(linear_model, tm):
    prob = _unequal_classes(linear_model, seed=5)
    ranking = first_order_ranking(prob.model, prob.x, prob.y, tm)
    exact = prob.per_target(tm.p).argsort(1)[:, :9]  # the true class (inf) sorts last and is left out
    assert torch.equal(ranking, exact)


def test_malt_targets_break_what_logit_targets_miss_on_a_linear_model(linear_model):
    """With one target each and each point's eps just above its own minimal perturbation, APGD-T towards
    the nearest class breaks every point; towards the second-highest logit it misses some."""
    prob = _unequal_classes(linear_model, seed=6)
    tm = Linf()
    per_target = prob.per_target(tm.p)
    eps = per_target.min(1).values * 1.01
    malt = APGD(tm, loss="dlr", n_targets=1, target_order="first_order", n_iter=100, seed=0)(prob.model, prob.x, prob.y, eps)
    logits = APGD(tm, loss="dlr", n_targets=1, n_iter=100, seed=0)(prob.model, prob.x, prob.y, eps)
    assert bool(malt.success.all())
    assert not bool(logits.success.all())


class _SaturatedSoftmax(nn.Module):
    """Outputs probabilities at a huge temperature: gradients of the loss vanish (a masking defense)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: Tensor) -> Tensor:
        return (1000 * self.base(x)).softmax(1)


def test_fast_falls_back_to_standard_when_a_check_fires_and_says_so(linear_model, caplog):
    prob = linear_model(n=12, num_classes=10, seed=7)
    x = prob.x.reshape(12, 1, 8, 8)
    plain = evaluate(prob.model, "digits", "Linf", x=x, y=prob.y, version="fast", progress=False, analysis=False)
    assert plain.version == "fast" and [s.attack for s in plain.stages] == ["apgd-ce", "apgd-t-malt", "square"]
    assert "fast_fallback" not in plain.model
    masked = evaluate(_SaturatedSoftmax(prob.model), "digits", "Linf", x=x, y=prob.y, version="fast", progress=False,
                      analysis=False)
    assert masked.version == FAST_FALLBACK == "standard"
    assert [s.attack for s in masked.stages] == [e.name for e in PROTOCOLS["standard"]]
    assert "zero_gradients" in masked.model["fast_fallback"] and "zero_gradients" in masked.flags
    assert "not trusted on this model" in caplog.text


def test_fast_records_are_shown_but_never_ranked():
    card = make_card("Fast2020Model")
    fast = make_record(card, 0.9, 0.2, version="fast")
    assert "fast" not in RANKED_VERSIONS
    agg = aggregate([card], [fast])
    board = agg.boards[("digits", "Linf")]
    assert board.table.empty and agg.models[card.key].records == [fast]
    standard = make_record(card, 0.9, 0.5)
    ranked = aggregate([card], [fast, standard]).boards[("digits", "Linf")].table
    assert list(ranked["version"]) == ["standard"] and list(ranked["robust_accuracy"]) == [0.5]
