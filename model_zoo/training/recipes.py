"""The training recipes, as data: a name, the paper, default settings and an objective builder.

A recipe's settings are one flat mapping (what a submission file's ``training`` block holds):
the settings every recipe shares (architecture, optimiser, epochs, ...) plus the recipe's own
(attack steps, TRADES' beta, the distillation temperature, ...). ``resolve_settings`` merges a
recipe's defaults with overrides and rejects unknown keys and values of the wrong type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.attacks.pgd import FGSM, PGD
from benchmark.budgets import default_eps
from benchmark.seeding import seeded_generator
from benchmark.threat_models import ThreatModel, get_threat_model

from ._loop import Objective, build_model, fit
from .objectives import (
    check_bound_layers, ibp_input_box, ibp_schedule, input_gradient_penalty, kl_from_reference, margin_bounds,
    noise_blur_corrupt, soft_cross_entropy, trades_adversary,
)

__all__ = ["Recipe", "RecipeContext", "RECIPES", "COMMON_DEFAULTS", "get_recipe", "resolve_settings"]

#: settings every recipe has; a recipe's own defaults may override them
COMMON_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "architecture": "digits_cnn",
    "arch_kwargs": {"width": 32},
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "batch_size": 64,
    "epochs": 50,
})


@dataclass(frozen=True)
class RecipeContext:
    """What an objective builder may use: the resolved settings, the threat model, the training data."""

    settings: Mapping[str, Any]
    threat_model: ThreatModel | None
    eps: float | None
    seed: int
    x: Tensor
    y: Tensor
    num_classes: int


@dataclass(frozen=True)
class Recipe:
    name: str
    #: one line for ``robench train --list`` and the docs
    summary: str
    #: the method's paper, as "Authors, Title, Venue Year"
    paper: str
    #: the recipe attacks during training, so it needs a threat model and an eps
    adversarial: bool
    #: the recipe's own settings (and overrides of COMMON_DEFAULTS)
    defaults: Mapping[str, Any]
    build: Callable[[RecipeContext], Objective]


# ------------------------------------------------------------------ objective builders

def _with_attack_mode(model: nn.Module, make: Callable[[], Tensor]) -> Tensor:
    """Run ``make`` (an attack) with the model in eval mode, then switch back to training mode."""
    model.eval()
    try:
        return make()
    finally:
        model.train()


def _standard(ctx: RecipeContext) -> Objective:
    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return F.cross_entropy(model(x), y)

    return objective


def _pgd_at(ctx: RecipeContext) -> Objective:
    s = ctx.settings
    attack = PGD(ctx.threat_model, n_iter=s["steps"], step_size=s["step_size"], random_start=True, early_stop=False)
    gen = seeded_generator(ctx.seed, offset=1)

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_adv = _with_attack_mode(model, lambda: attack(model, x, y, ctx.eps, generator=gen).x_adv)
        return F.cross_entropy(model(x_adv), y)

    return objective


def _fast_at(ctx: RecipeContext) -> Objective:
    attack = PGD(ctx.threat_model, n_iter=1, step_size=ctx.settings["step_size"], random_start=True, early_stop=False)
    gen = seeded_generator(ctx.seed, offset=1)

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_adv = _with_attack_mode(model, lambda: attack(model, x, y, ctx.eps, generator=gen).x_adv)
        return F.cross_entropy(model(x_adv), y)

    return objective


def _fgsm_at(ctx: RecipeContext) -> Objective:
    attack = FGSM(ctx.threat_model)
    alpha = ctx.settings["clean_weight"]

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_adv = _with_attack_mode(model, lambda: attack(model, x, y, ctx.eps).x_adv)
        adv_loss = F.cross_entropy(model(x_adv), y)
        return adv_loss if alpha == 0 else alpha * F.cross_entropy(model(x), y) + (1 - alpha) * adv_loss

    return objective


def _trades(ctx: RecipeContext) -> Objective:
    s = ctx.settings
    gen = seeded_generator(ctx.seed, offset=1)

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_adv = _with_attack_mode(
            model, lambda: trades_adversary(model, x, ctx.eps, ctx.threat_model, s["steps"], s["step_size"], gen)
        )
        logits = model(x)
        robust = kl_from_reference(model(x_adv), F.softmax(logits, dim=1)).mean()
        return F.cross_entropy(logits, y) + s["beta"] * robust

    return objective


def _distillation(ctx: RecipeContext) -> Objective:
    """Train the teacher at temperature T now; the student then learns its soft labels at T."""
    s = ctx.settings
    temperature = s["temperature"]
    teacher = build_model(s["architecture"], s["arch_kwargs"], ctx.num_classes, seed=ctx.seed + 1)

    def teacher_objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return F.cross_entropy(model(x) / temperature, y)

    fit(teacher, teacher_objective, ctx.x, ctx.y, epochs=s["teacher_epochs"], batch_size=s["batch_size"],
        lr=s["lr"], seed=ctx.seed + 1, optimizer=s["optimizer"], weight_decay=s["weight_decay"], momentum=s["momentum"])
    with torch.no_grad():
        soft_labels = F.softmax(teacher(ctx.x) / temperature, dim=1)

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        return soft_cross_entropy(model(x) / temperature, soft_labels[index]).mean()

    return objective


def _input_grad_reg(ctx: RecipeContext) -> Objective:
    lam = ctx.settings["lam"]

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        ce, penalty = input_gradient_penalty(model, x, y)
        return ce.mean() + lam * penalty.mean()

    return objective


def _noise_blur(ctx: RecipeContext) -> Objective:
    """Cross-entropy on batches whose images are, per image and per step, noised and/or blurred (a share left clean)."""
    s = ctx.settings
    sigma_max, blur_max, clean_fraction = s["sigma_max"], s["blur_max"], s["clean_fraction"]
    if sigma_max < 0 or blur_max < 0:
        raise ValueError(f"sigma_max and blur_max must be >= 0, got {sigma_max} and {blur_max}")
    if not 0 <= clean_fraction <= 1:
        raise ValueError(f"clean_fraction must be in [0, 1], got {clean_fraction}")
    gen = seeded_generator(ctx.seed, offset=1)

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        x_corrupted, _ = noise_blur_corrupt(x, gen, sigma_max=sigma_max, blur_max=blur_max, clean_fraction=clean_fraction)
        return F.cross_entropy(model(x_corrupted), y)

    return objective


def _ibp(ctx: RecipeContext) -> Objective:
    """kappa * CE(clean logits) + (1 - kappa) * CE(-lower bounds of the margins z_y - z_t over the eps-ball ∩ [0, 1]),
    the bounds from interval bound propagation (Gowal et al. 2018), or with ``crown_ibp`` beta * CROWN-IBP's +
    (1 - beta) * IBP's (Zhang et al. 2020); eps, kappa and beta follow ``ibp_schedule`` over the steps."""
    s = ctx.settings
    if not s["eps_train_factor"] > 0:
        raise ValueError(f"eps_train_factor must be positive, got {s['eps_train_factor']}")
    if not 0 <= s["kappa_final"] <= 1:
        raise ValueError(f"kappa_final must be in [0, 1], got {s['kappa_final']}")
    if not 0 <= s["beta_final"] <= 1:
        raise ValueError(f"beta_final must be in [0, 1], got {s['beta_final']}")
    if s["warmup_epochs"] < 0 or s["ramp_epochs"] < 0:
        raise ValueError(f"warmup_epochs and ramp_epochs must be >= 0, got {s['warmup_epochs']} and {s['ramp_epochs']}")
    # refuse an architecture the bounds cannot take now, not after the warm-up (a throwaway copy: no RNG is touched)
    check_bound_layers(build_model(s["architecture"], s["arch_kwargs"], ctx.num_classes, ctx.seed), s["crown_ibp"])
    schedule = ibp_schedule_of(ctx)
    l2 = ctx.threat_model.name == "L2"
    step = 0

    def objective(model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        nonlocal step
        eps, kappa, beta = schedule(step)
        step += 1
        clean = F.cross_entropy(model(x), y)
        if eps == 0 or kappa == 1:  # at eps 0 the bound's cross-entropy is the clean one
            return clean
        low, high = ibp_input_box(x, eps)
        use_crown = s["crown_ibp"] and beta > 0
        ibp, crown = margin_bounds(model, low, high, y, center=x if l2 else None, l2_eps=eps if l2 else None,
                                   crown_ibp=use_crown)
        margins = beta * crown + (1 - beta) * ibp if use_crown else ibp
        return kappa * clean + (1 - kappa) * F.cross_entropy(-margins, y)

    return objective


def ibp_schedule_of(ctx: RecipeContext) -> Callable[[int], tuple[float, float, float]]:
    """The ``ibp`` recipe's (eps, kappa, beta) at each optimisation step of a run with these settings and data."""
    s = ctx.settings
    steps_per_epoch = math.ceil(len(ctx.x) / s["batch_size"])
    return lambda step: ibp_schedule(step, steps_per_epoch, warmup_epochs=s["warmup_epochs"],
                                     ramp_epochs=s["ramp_epochs"], eps_train=s["eps_train_factor"] * ctx.eps,
                                     kappa_final=s["kappa_final"], beta_final=s["beta_final"])


def _recipe(name: str, summary: str, paper: str, adversarial: bool, build: Callable, **defaults: Any) -> Recipe:
    return Recipe(name, summary, paper, adversarial, MappingProxyType(defaults), build)


#: recipe name -> recipe
RECIPES: Mapping[str, Recipe] = MappingProxyType({r.name: r for r in (
    _recipe("standard", "cross-entropy on clean inputs (undefended)",
            "LeCun, Bottou, Bengio, Haffner, Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998",
            False, _standard),
    _recipe("pgd_at", "cross-entropy on PGD adversarial examples (random start, fixed step)",
            "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018",
            True, _pgd_at, steps=10, step_size=0.25),
    _recipe("trades", "cross-entropy + beta * KL(f(x) || f(x')) with x' maximising the KL by PGD",
            "Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy, ICML 2019",
            True, _trades, steps=10, step_size=0.25, beta=6.0),
    _recipe("fgsm_at", "clean and FGSM cross-entropy mixed, FGSM without random start (known to overfit catastrophically on CIFAR-10; on digits at eps 0.2 it did not, docs/training.md)",
            "Goodfellow, Shlens, Szegedy, Explaining and Harnessing Adversarial Examples, ICLR 2015",
            True, _fgsm_at, clean_weight=0.5),
    _recipe("fast_at", "cross-entropy on one signed-gradient step of 1.25 eps from a random start",
            "Wong, Rice, Kolter, Fast is Better than Free: Revisiting Adversarial Training, ICLR 2020",
            True, _fast_at, step_size=1.25),
    _recipe("distillation", "a student trained on a teacher's soft labels at temperature T, deployed at T = 1",
            "Papernot et al., Distillation as a Defense to Adversarial Perturbations against Deep Neural Networks, "
            "IEEE S&P 2016",
            False, _distillation, temperature=100.0, teacher_epochs=50, optimizer="adam", lr=0.002, weight_decay=0.0),
    _recipe("input_grad_reg", "cross-entropy + lam * squared L2 norm of its input gradient (double backprop)",
            "Ross, Doshi-Velez, Improving the Adversarial Robustness and Interpretability of Deep Neural Networks "
            "by Regularizing their Input Gradients, AAAI 2018",
            False, _input_grad_reg, lam=1.0),
    _recipe("noise_blur", "cross-entropy on images each given, per step, Gaussian noise (std up to sigma_max, clipped to "
            "[0, 1]), a Gaussian blur (std up to blur_max px) or both, clean_fraction of each batch left clean",
            "Rusak et al., A Simple Way to Make Neural Networks Robust Against Diverse Image Corruptions, ECCV 2020",
            False, _noise_blur, sigma_max=0.4, blur_max=1.0, clean_fraction=0.5),
    _recipe("ibp", "certified training: kappa * CE(clean) + (1 - kappa) * CE(-lower bounds of the margins z_y - z_t "
            "over the ball of eps_train_factor * eps ∩ [0, 1]) from interval bound propagation, with crown_ibp mixed "
            "with CROWN-IBP's (weight beta); after warmup_epochs clean epochs, eps ramps up from 0, kappa down to "
            "kappa_final and beta from 1 to beta_final over ramp_epochs",
            "Gowal et al., On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust Models, "
            "arXiv:1810.12715 2018; crown_ibp: Zhang et al., Towards Stable and Efficient Training of Verifiably "
            "Robust Neural Networks, ICLR 2020",
            True, _ibp, architecture="digits_mlp", arch_kwargs={"hidden": 200}, optimizer="adam", lr=0.003,
            weight_decay=0.0, epochs=600, warmup_epochs=5, ramp_epochs=300, eps_train_factor=1.1, kappa_final=0.0,
            crown_ibp=True, beta_final=0.0),
)})


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown recipe {name!r}{hint} (recipes: {', '.join(RECIPES)})")
    return RECIPES[name]


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` (an int is accepted for a float), else a clear error."""
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise TypeError(f"setting {key!r} must be {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, dict) and isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, type(default)):
        raise TypeError(f"setting {key!r} must be {type(default).__name__}, got {value!r}")
    return value


def resolve_settings(
    recipe: Recipe, overrides: Mapping[str, Any] | None = None, threat_model: str | None = None, eps: float | None = None
) -> dict[str, Any]:
    """The full, validated settings of one run: common defaults, the recipe's defaults, then overrides.

    Adversarial recipes also get ``threat_model`` (default Linf) and ``eps`` (default: the digits
    board's eps for that threat model); the other recipes refuse them.
    """
    defaults = {**COMMON_DEFAULTS, **recipe.defaults}
    settings = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in defaults.items()}
    overrides = dict(overrides or {})
    threat_model = overrides.pop("threat_model", threat_model)
    eps = overrides.pop("eps", eps)
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"recipe {recipe.name!r} has no setting(s) {', '.join(unknown)}; settings: {', '.join(settings)}")
    for key, value in overrides.items():
        settings[key] = _coerce(key, value, settings[key])
    if recipe.adversarial:
        tm = get_threat_model(threat_model or "Linf").name
        eps = float(eps) if eps is not None else default_eps("digits", tm)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        settings = {"threat_model": tm, "eps": eps, **settings}
    elif threat_model is not None or eps is not None:
        raise ValueError(f"recipe {recipe.name!r} does not attack during training: it takes no threat model or eps")
    return settings
