"""The attack base class: input checks, the empty batch, the eps dtype, the seeds and the repr."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.attacks.apgd import APGD
from benchmark.attacks.base import BoundsError, FixedBudgetAttack, RunOutput
from benchmark.attacks.fab import FAB
from benchmark.attacks.pgd import PGD


def _linear(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).to(dtype).eval()


def test_bad_inputs_are_named_in_the_error():
    attack, model = PGD("Linf"), _linear()
    with pytest.raises(TypeError, match="inputs must be a float tensor in \\[0, 1\\], got dtype torch.int64"):
        attack(model, torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\), got \(2,\)"):
        attack(model, torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), 0.1)


@pytest.mark.parametrize("attack", [PGD("Linf"), FAB("L2", n_targets=2, n_iter=3)], ids=["fixed budget", "minimum norm"])
def test_empty_and_single_point_batches(attack):
    model = _linear()
    out = attack(model, torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), 0.1)
    assert out.x_adv.shape == (0, 1, 8, 8)
    assert (out.success.dtype, out.norm.dtype, out.queries.dtype) == (torch.bool, torch.float32, torch.long)
    assert out.success.shape == out.norm.shape == out.queries.shape == (0,)
    assert (out.min_norm is not None) == attack.is_minimum_norm
    if out.min_norm is not None:
        assert out.min_norm.shape == (0,)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    one = attack(model, x, y, 0.5)
    assert one.x_adv.shape == (1, 1, 8, 8) and one.success.shape == (1,) and int(one.queries[0]) > 1


def test_float64_inputs_keep_a_float64_eps():
    """The ball is the float64 eps, not its float32 rounding (0.1 rounds up to 0.10000000149)."""
    model = _linear(torch.float64)
    x = 0.25 + 0.5 * torch.rand(8, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    out = PGD("Linf", n_iter=5, step_size=1.0, random_start=False, early_stop=False)(model, x, y, 0.1)
    assert float((out.x_adv - x).abs().max()) <= 0.1 + 1e-15  # float64 rounding of x + eps - x only


def test_each_chunk_and_attack_has_its_documented_seed():
    """benchmark/seeding.py: the stream of a run seeded s, at stream k and offset o, is seeded
    s * 1,000,003 + k * 10,000,019 + o, so a record names everything needed to draw its randomness
    again, in a later version too; an attack's generator is stream 0 at its offset."""
    from benchmark.seeding import seeded_generator

    for seed, stream, offset in [(0, 0, 0), (3, 0, 0), (3, 0, 2001), (7, 2, 5003)]:
        expected = torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_000_019 + offset)
        drawn = seeded_generator(seed, stream=stream, offset=offset)
        assert torch.equal(torch.rand(4, generator=drawn), torch.rand(4, generator=expected))
        if stream == 0:
            expected = torch.Generator().manual_seed(seed * 1_000_003 + offset)
            drawn = APGD("Linf", seed=seed).generator("cpu", offset=offset)
            assert torch.equal(torch.rand(4, generator=drawn), torch.rand(4, generator=expected))
    assert seeded_generator(5).initial_seed() == 5 * 1_000_003  # stream 0 and offset 0 unless named


def test_repr_names_the_class_the_threat_model_and_every_setting():
    assert repr(PGD("L2", n_iter=3)) == (
        "PGD(L2, seed=0, n_iter=3, step_size=0.25, loss='ce', random_start=True, early_stop=True)")


class Scripted(FixedBudgetAttack):
    """Returns what it is told to: ``moves`` added to x, and no query count."""

    name = "scripted"

    def __init__(self, moves: torch.Tensor) -> None:
        super().__init__("Linf")
        self.moves = moves

    def run(self, model, x, y, eps, generator):
        return RunOutput(x + self.moves)


def test_an_infeasible_point_is_refused_with_its_indices():
    model, x = _linear(), torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    moves = torch.zeros_like(x)
    moves[0, 0, 0, 0], moves[2, 0, 3, 3] = 0.2, -0.6  # beyond eps 0.1; the second also outside [0, 1]
    with pytest.raises(BoundsError, match=r"scripted returned points outside \[0,1\] or the Linf ball of eps at indices \[0, 2\]"):
        Scripted(moves)(model, x, y, 0.1)
    moves[0, 0, 0, 0], moves[2, 0, 3, 3] = 0.1 + 0.5e-5, 0.0  # within the tolerance of 1e-5
    Scripted(moves)(model, x, y, 0.1)
    many = torch.full((8, 1, 8, 8), 0.5)
    with pytest.raises(BoundsError, match=r"at indices \[0, 1, 2, 3, 4\]$"):  # the first five name them all
        Scripted(torch.full_like(many, 0.3))(model, many, torch.zeros(8, dtype=torch.long), 0.1)


def test_an_attack_that_counts_no_queries_costs_the_success_pass():
    model, x = _linear(), torch.full((3, 1, 8, 8), 0.5)
    out = Scripted(torch.zeros_like(x))(model, x, torch.zeros(3, dtype=torch.long), 0.1)
    assert out.queries.tolist() == [1, 1, 1]


def test_the_generator_handed_in_is_the_one_drawn_from():
    model = _linear()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = PGD("Linf", n_iter=1, early_stop=False)  # one step from a random start: the start shows
    runs = [attack(model, x, y, 0.05, generator=torch.Generator().manual_seed(s)).x_adv for s in (1, 2, 1)]
    assert not torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
