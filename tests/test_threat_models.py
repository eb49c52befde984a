"""Threat models: norms, projections onto the eps-ball intersected with [0,1], random starts."""
from __future__ import annotations

import re

import pytest
import torch

from benchmark.budgets import BOARDS, check_board, default_eps, format_eps
from benchmark.protocol import PROTOCOLS, attack_class, build_attack, get_protocol
from benchmark.threat_models import L2, Linf, get_threat_model, parse_eps


@pytest.mark.parametrize("tm", [Linf(), L2()])
def test_projection_is_feasible_and_idempotent(tm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 3, 4, 4, generator=g)
    eps = torch.rand(50, generator=g) * 0.5 + 0.01
    z = x + torch.randn(x.shape, generator=g)
    p = tm.project(z, x, eps)
    assert bool(tm.within(p, x, eps, tol=1e-6).all())
    assert torch.allclose(tm.project(p, x, eps), p, atol=1e-7)
    inside = x + 0.5 * tm.project_ball(torch.randn(x.shape, generator=g), eps)
    inside = inside.clamp(0, 1)
    assert torch.allclose(tm.project(inside, x, eps), inside, atol=1e-7)


def test_linf_projection_is_the_exact_box_projection():
    x = torch.tensor([[[[0.5, 0.95, 0.02]]]])
    z = torch.tensor([[[[0.9, 1.4, -0.3]]]])
    assert torch.allclose(Linf().project(z, x, 0.1), torch.tensor([[[[0.6, 1.0, 0.0]]]]))


def test_l2_projection_scales_onto_the_sphere():
    x = torch.full((1, 1, 2, 2), 0.5)
    z = x + torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 1, 2, 2)
    p = L2().project(z, x, 0.25)
    assert torch.allclose(p - x, torch.tensor([0.15, 0.2, 0.0, 0.0]).view(1, 1, 2, 2))


@pytest.mark.parametrize("tm", [Linf(), L2()])
def test_random_delta_lies_on_the_sphere_and_is_seeded(tm):
    x = torch.rand(20, 1, 8, 8)
    d1 = tm.random_delta(x, 0.3, torch.Generator().manual_seed(1))
    d2 = tm.random_delta(x, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(d1, d2)
    assert torch.allclose(tm.norm(d1), torch.full((20,), 0.3), atol=1e-6)
    start = tm.random_start(x, 0.3, torch.Generator().manual_seed(1))
    assert bool(tm.within(start, x, 0.3).all())


def test_linf_random_delta_fills_the_ball_symmetrically():
    x = torch.full((200, 1, 8, 8), 0.5)
    d = Linf().random_delta(x, 0.3, torch.Generator().manual_seed(2))
    flat = d.flatten(1)
    assert 0.45 < float((flat > 0).float().mean()) < 0.55  # as many coordinates up as down
    assert abs(float(flat.mean())) < 0.01 and float(flat.min()) == pytest.approx(-0.3, abs=1e-6)
    assert float(flat.max()) == pytest.approx(0.3, abs=1e-6)
    eps = torch.linspace(0.1, 0.5, 200)
    assert torch.allclose(Linf().norm(Linf().random_delta(x, eps, None)), eps, atol=1e-6)  # one radius per point


@pytest.mark.parametrize("tm", [Linf(), L2()])
def test_random_starts_keep_the_inputs_dtype(tm):
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    delta = tm.random_delta(x, 0.25, torch.Generator().manual_seed(0))
    assert delta.dtype == torch.float64 and torch.allclose(tm.norm(delta), torch.full((3,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("tm", [Linf(), L2()])
def test_within_checks_each_point_on_its_own(tm):
    x = torch.full((4, 1, 2, 2), 0.5)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 1.1   # above the box
    x_adv[1, 0, 0, 0] = -0.1  # below the box
    x_adv[2, 0, 0, 0] = 0.9   # 0.4 away: outside an eps of 0.3
    assert tm.within(x_adv, x, 0.3).tolist() == [False, False, False, True]
    assert tm.within(x_adv, x, torch.tensor([1.0, 1.0, 0.5, 0.1])).tolist() == [False, False, True, True]


def test_steepest_direction():
    g = torch.tensor([[3.0, -4.0, 0.0]])
    assert torch.equal(Linf().steepest_direction(g), torch.tensor([[1.0, -1.0, 0.0]]))
    assert torch.allclose(L2().steepest_direction(g), torch.tensor([[0.6, -0.8, 0.0]]))


def test_names_and_eps_parsing():
    assert get_threat_model("linf") == Linf() and get_threat_model("L2") == L2()
    with pytest.raises(ValueError, match="unknown threat model 'L1'"):
        get_threat_model("L1")
    assert parse_eps("8/255") == pytest.approx(8 / 255) and parse_eps(0.5) == 0.5
    for bad in ("eight", "0", "-1/255", "1/0"):
        with pytest.raises(ValueError):
            parse_eps(bad)
    with pytest.raises(ValueError, match=r"^eps must be finite, got inf$"):
        parse_eps(float("inf"))
    with pytest.raises(ValueError, match=r"^eps must be positive, got '-1/255'$"):
        parse_eps("-1/255")


def test_boards_and_budgets():
    assert default_eps("cifar10", "Linf") == pytest.approx(8 / 255)
    assert default_eps("imagenet", "linf") == pytest.approx(4 / 255)
    assert format_eps("cifar10", "Linf", 8 / 255) == "8/255"
    assert check_board("cifar10", "l2") == ("cifar10", "L2")
    with pytest.raises(ValueError, match="no imagenet/L2 board"):
        check_board("imagenet", "L2")
    with pytest.raises(ValueError, match="unknown dataset"):
        default_eps("svhn", "Linf")
    for (dataset, tm), (eps, text) in BOARDS.items():
        if tm == "corruptions":  # no eps: the board names its corrupted sets
            assert eps is None and text.endswith("-C")
        else:
            assert eps == pytest.approx(parse_eps(text))
    assert check_board("digits", "Corruptions") == ("digits", "corruptions") and default_eps("cifar100", "corruptions") is None
    assert format_eps("digits", "corruptions", None) == ""
    with pytest.raises(ValueError, match="known: Linf, L2, corruptions"):
        check_board("digits", "fog")
    with pytest.raises(ValueError, match=r"^unknown dataset 'svhn'; known: digits, cifar10, cifar100, imagenet$"):
        check_board("svhn", "Linf")
    boards = ", ".join(f"{d}/{t}" for d, t in BOARDS)
    assert "digits/Linf, digits/L2, cifar10/Linf" in boards
    with pytest.raises(ValueError, match=f"^there is no imagenet/L2 board; boards: {re.escape(boards)}$"):
        check_board("imagenet", "L2")
    # an eps that is not the board's, or a board robench does not define, is written as a short decimal
    assert format_eps("cifar10", "Linf", 4 / 255) == "0.0156863" and format_eps("digits", "Linf", 0.1) == "0.1"
    assert format_eps("cifar100", "L2", 0.5) == "0.5" and format_eps("digits", "Linf", 0.2 + 1e-12) == "0.2"


def test_protocol_versions_hold_the_documented_settings():
    standard = get_protocol("standard")
    assert [e.name for e in standard] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert standard[0].settings["n_iter"] == 100 and standard[0].settings["rho"] == 0.75
    assert standard[1].settings["n_targets"] == 9 and standard[2].settings["n_targets"] == 9
    assert dict(standard[2].settings) == dict(n_iter=100, n_restarts=1, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9)
    assert standard[3].settings["n_queries"] == 5000 and standard[3].settings["p_init"] == 0.8
    assert all(e.settings.get("eot_iter") == 20 for e in get_protocol("rand"))
    assert [e.settings["n_restarts"] for e in PROTOCOLS["plus"][:3]] == [5, 5, 5]
    fast = get_protocol("fast")  # docs/evaluation.md: APGD-CE, APGD-T towards the 5 first-order-nearest classes, Square 1,000
    assert [e.name for e in fast] == ["apgd-ce", "apgd-t-malt", "square"]
    assert fast[1].settings["n_targets"] == 5 and fast[1].settings["target_order"] == "first_order"
    assert fast[2].settings["n_queries"] == 1000
    with pytest.raises(ValueError, match=r"unknown protocol version 'fastest'; known: standard, plus, rand, fast$"):
        get_protocol("fastest")
    with pytest.raises(ValueError, match=r"unknown attack 'cw'; known: apgd, fab, square, pgd, fgsm$"):
        attack_class("cw")
    # targets are capped by the number of classes; every entry builds an attack
    for version in PROTOCOLS:
        for entry in get_protocol(version):
            attack = build_attack(entry, Linf(), 5, seed=3)
            assert attack.seed == 3 and getattr(attack, "n_targets", 0) <= 4


def test_same_eps_tells_budgets_apart_and_no_eps_equals_only_no_eps():
    from benchmark.budgets import same_eps

    assert same_eps(None, None) and same_eps(8 / 255, 0.0313725490196 + 1e-12)
    assert not same_eps(None, 0.2) and not same_eps(0.2, None) and not same_eps(0.2, 0.21)
    assert same_eps(0.5, 0.5 * (1 + 5e-7)) and not same_eps(0.5, 0.5 * (1 + 2e-6))  # a relative tolerance of 1e-6
