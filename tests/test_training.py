"""The training recipes: bit-reproducibility, every recipe runs, settings are validated, the shipped
checkpoints agree with their submission files, and defensive distillation really masks gradients."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from benchmark.budgets import default_eps
from benchmark.data import load_dataset
from benchmark.seeding import SEED_STRIDE
from benchmark.threat_models import get_threat_model
from model_zoo.architectures import build_architecture
from model_zoo.architectures.digits import DigitsCNN
from model_zoo.cards import TRAINING_REPEATS, Architecture
from model_zoo.download import sha256_file
from model_zoo.training import (
    COMMON_DEFAULTS, RECIPES, cpu_fingerprint, digits_test_accuracy, get_recipe, read_training_spec, resolve_settings,
    save_checkpoint, train, train_from_submission, update_submission,
)
from model_zoo.training.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
DIGITS_SUBMISSIONS = sorted((ROOT / "submissions" / "digits").glob("*/*.yaml"))
SHIPPED = [p for p in DIGITS_SUBMISSIONS if "recipe" in (yaml.safe_load(p.read_text()).get("training") or {})]


@pytest.fixture(scope="module")
def small_data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_dataset("digits", "train")
    return x[:96], y[:96]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_is_bit_reproducible(tmp_path: Path) -> None:
    quick = {"epochs": 2}
    first, second = train("standard", overrides=quick), train("standard", overrides=quick)
    assert _same_state(first.model, second.model)
    assert save_checkpoint(first.model, tmp_path / "a.safetensors") == save_checkpoint(second.model, tmp_path / "b.safetensors")
    other_seed = train("standard", overrides=quick, seed=1)
    assert not _same_state(first.model, other_seed.model)


def test_training_leaves_global_state_alone(small_data) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    train("standard", overrides={"epochs": 1}, data=small_data)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_trains_one_epoch(name: str, small_data) -> None:
    recipe = get_recipe(name)
    overrides = {"epochs": 1, "batch_size": 32}
    if "steps" in recipe.defaults:
        overrides["steps"] = 2
    if "teacher_epochs" in recipe.defaults:
        overrides["teacher_epochs"] = 1
    losses: list[float] = []
    result = train(name, overrides=overrides, data=small_data, on_epoch=lambda epoch, loss: losses.append(loss))
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses[0]))
    assert result.settings["recipe"] == name and result.settings["seed"] == 0
    assert result.settings["epochs"] == 1
    if recipe.adversarial:
        assert result.settings["threat_model"] == "Linf" and result.settings["eps"] == default_eps("digits", "Linf")
    fresh = build_architecture(Architecture(source="robench", name=result.settings["architecture"],
                                            kwargs=result.settings["arch_kwargs"]), 10)
    fresh.load_state_dict(result.model.state_dict(), strict=True)  # keys match the architecture
    assert not result.model.training
    logits = result.model(small_data[0][:5])
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()


def test_settings_are_validated() -> None:
    pgd = get_recipe("pgd_at")
    assert resolve_settings(pgd, threat_model="l2")["eps"] == default_eps("digits", "L2")
    assert resolve_settings(pgd, {"epochs": 3, "step_size": 1})["step_size"] == 1.0
    with pytest.raises(ValueError, match="no setting.*stpes"):
        resolve_settings(pgd, {"stpes": 3})
    with pytest.raises(TypeError, match="'epochs' must be int"):
        resolve_settings(pgd, {"epochs": "ten"})
    with pytest.raises(ValueError, match="takes no threat model"):
        resolve_settings(get_recipe("standard"), threat_model="Linf")
    with pytest.raises(ValueError, match="eps must be positive"):
        resolve_settings(pgd, eps=0.0)
    with pytest.raises(ValueError, match="did you mean trades"):
        get_recipe("trade")
    with pytest.raises(ValueError, match="unknown robench architecture"):
        train("standard", overrides={"architecture": "resnet", "epochs": 1})


def test_cli_trains_and_writes_a_summary(tmp_path: Path, capsys) -> None:
    assert train_main(["standard", "--set", "epochs=1", "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "standard_seed0.json").read_text())
    assert summary["sha256"] == sha256_file(tmp_path / "standard_seed0.safetensors")
    assert summary["training"]["epochs"] == 1 and 0 <= summary["clean_accuracy"] <= 1
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        train_main(["standard", "--set", "epochs"])
    with pytest.raises(SystemExit, match="no setting"):
        train_main(["standard", "--set", "epoch=1"])


def test_update_submission_rewrites_only_hash_and_accuracy(tmp_path: Path) -> None:
    source = SHIPPED[0]
    card = tmp_path / source.name
    card.write_text(source.read_text())
    update_submission(card, "ab" * 32, 0.5)
    data, before = yaml.safe_load(card.read_text()), yaml.safe_load(source.read_text())
    assert data["checkpoint"]["sha256"] == "ab" * 32 and data["reported"]["clean_accuracy"] == 0.5
    data["checkpoint"]["sha256"], data["reported"]["clean_accuracy"] = before["checkpoint"]["sha256"], before["reported"]["clean_accuracy"]
    assert data == before
    with pytest.raises(ValueError, match="sha256"):
        update_submission(card, "not-a-hash", 0.5)


def test_an_adversarial_recipe_trains_at_the_cards_threat_model_and_eps() -> None:
    """The training block no longer repeats them: the card's own threat model, eps and architecture are the settings."""
    for path in SHIPPED:
        spec, data = read_training_spec(path), yaml.safe_load(path.read_text())
        assert not set(data["training"]) & set(TRAINING_REPEATS)
        assert (spec.settings["architecture"], spec.settings["arch_kwargs"]) == (
            data["architecture"]["name"], data["architecture"]["kwargs"])
        if get_recipe(spec.recipe).adversarial:
            assert (spec.settings["threat_model"], spec.settings["eps"]) == (data["threat_model"], data["eps"])
        else:
            assert "eps" not in spec.settings and "threat_model" not in spec.settings


def test_the_zoo_ships_every_recipe() -> None:
    shipped = {yaml.safe_load(p.read_text())["training"]["recipe"] for p in SHIPPED}
    assert shipped == set(RECIPES)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_training_blocks_resolve_and_hashes_match(path: Path) -> None:
    spec = read_training_spec(path)
    data = yaml.safe_load(path.read_text())
    settings = resolve_settings(get_recipe(spec.recipe), spec.settings)
    # every setting of the recipe is written out in the file (a changed default cannot change a shipped model)
    assert {k: v for k, v in settings.items() if k not in TRAINING_REPEATS} == {
        k: v for k, v in data["training"].items() if k not in ("recipe", "seed", "torch_version", "cpu")}
    assert sha256_file(ROOT / spec.checkpoint_path) == spec.checkpoint_sha256


def _shipped_standard() -> Path:
    """A shipped model of the standard recipe, one whose card records the CPU that trained it where there is one
    (the bit-for-bit test below can only run where the torch version and the CPU are both known to match)."""
    standard = [p for p in SHIPPED if yaml.safe_load(p.read_text())["training"]["recipe"] == "standard"]
    return next((p for p in standard if yaml.safe_load(p.read_text())["training"].get("cpu")), standard[0])


@pytest.fixture(scope="module")
def retrained_standard():
    """The shipped undefended model retrained from its submission file (a few seconds)."""
    return read_training_spec(_shipped_standard()), train_from_submission(_shipped_standard())


def test_standard_checkpoint_is_reproduced_to_its_reported_accuracy(retrained_standard) -> None:
    """On any torch version and CPU, the recipe gives the card's clean accuracy (the bits may differ)."""
    spec, result = retrained_standard
    reported = yaml.safe_load(_shipped_standard().read_text())["reported"]["clean_accuracy"]
    assert abs(digits_test_accuracy(result.model) - reported) <= 0.01


def test_standard_checkpoint_is_reproduced_bit_for_bit(retrained_standard, tmp_path: Path) -> None:
    """Where the torch version and the CPU are the ones that made the shipped bytes, the bytes are equal."""
    spec, result = retrained_standard
    here = (torch.__version__, cpu_fingerprint())
    if (spec.torch_version, spec.cpu) != here:
        pytest.skip(f"checkpoint trained with torch {spec.torch_version} on CPU {spec.cpu}, running {here[0]} on {here[1]}")
    assert save_checkpoint(result.model, tmp_path / "retrained.safetensors") == spec.checkpoint_sha256


def test_training_records_torch_and_cpu() -> None:
    result = train("standard", overrides={"epochs": 1, "arch_kwargs": {"width": 4}})
    # one CPU thread: the process's CPU time over the run is about its wall time (not the whole process's)
    assert 0 < result.cpu_seconds <= 2 * result.seconds + 0.5, (result.cpu_seconds, result.seconds)
    block = result.settings
    assert block["torch_version"] == torch.__version__ and block["cpu"] == cpu_fingerprint()
    machine, capability, flags = cpu_fingerprint().split("/")
    assert machine and capability == torch.backends.cpu.get_cpu_capability() and len(flags) == 12


def test_shipped_distillation_model_masks_gradients() -> None:
    """At T = 1 the student's softmax saturates: the cross-entropy input gradient is exactly 0 on most points."""
    from safetensors.torch import load_file

    path = next(p for p in SHIPPED if yaml.safe_load(p.read_text())["training"]["recipe"] == "distillation")
    spec = read_training_spec(path)
    model = DigitsCNN(**spec.settings.get("arch_kwargs", {"width": 16}))
    model.load_state_dict(load_file(ROOT / spec.checkpoint_path), strict=True)
    x, y = load_dataset("digits", "test")
    x.requires_grad_(True)
    loss = F.cross_entropy(model.eval()(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    zero = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    assert zero > 0.5, f"only {zero:.0%} of the test points have a zero input gradient"


# ------------------------------------------------------------------ noise_blur (common corruptions)

def _total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per image: the summed absolute difference of neighbouring pixels (blur lowers it, noise raises it)."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).sum(1)
            + (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).sum(1))


def _corrupt(x: torch.Tensor, seed: int, **settings):
    from benchmark.seeding import seeded_generator
    from model_zoo.training.objectives import noise_blur_corrupt

    defaults = {k: get_recipe("noise_blur").defaults[k] for k in ("sigma_max", "blur_max", "clean_fraction")}
    return noise_blur_corrupt(x, seeded_generator(seed, offset=1), **{**defaults, **settings})


def test_noise_blur_is_a_listed_non_adversarial_recipe(capsys) -> None:
    recipe = get_recipe("noise_blur")
    assert "noise_blur" in RECIPES and not recipe.adversarial
    assert "Rusak" in recipe.paper and "ECCV 2020" in recipe.paper
    assert {"sigma_max", "blur_max", "clean_fraction"} <= set(recipe.defaults)
    assert 0.3 <= recipe.defaults["sigma_max"] <= 0.5 and recipe.defaults["blur_max"] > 0
    assert 0 < recipe.defaults["clean_fraction"] < 1
    assert train_main(["--list"]) == 0
    assert "noise_blur" in capsys.readouterr().out
    with pytest.raises(ValueError, match="takes no threat model"):
        resolve_settings(recipe, threat_model="Linf")
    with pytest.raises(ValueError, match="clean_fraction must be in"):
        train("noise_blur", overrides={"epochs": 1, "clean_fraction": 1.5}, data=(torch.rand(8, 1, 8, 8), torch.zeros(8).long()))
    with pytest.raises(ValueError, match="must be >= 0"):
        train("noise_blur", overrides={"epochs": 1, "sigma_max": -0.1}, data=(torch.rand(8, 1, 8, 8), torch.zeros(8).long()))


def test_gaussian_blur_matches_digits_c_blur_and_sigma_zero_is_identity() -> None:
    """The training blur against an independent one: digits-C's element-wise numpy Gaussian (edges repeated)."""
    import numpy as np

    from benchmark.corruptions import _gaussian_kernel, _shift_sum
    from model_zoo.training.objectives import blur_radius, gaussian_blur

    x, _ = load_dataset("digits", "test")
    x = x[:20]
    for sigma in (0.5, 0.8, 1.0):
        ours = gaussian_blur(x, torch.full((20,), sigma), blur_radius(sigma))
        reference = _shift_sum(x[:, 0].double().numpy(), _gaussian_kernel(sigma))
        assert np.allclose(ours[:, 0].numpy(), reference, atol=1e-5)
    assert torch.allclose(gaussian_blur(x, torch.zeros(20), 3), x)
    mixed = gaussian_blur(x[:2], torch.tensor([0.0, 1.0]), 3)  # each image its own sigma
    assert torch.allclose(mixed[0], x[0]) and not torch.allclose(mixed[1], x[1])


def test_noise_blur_corrupts_with_noise_and_blur_and_leaves_the_clean_share_alone() -> None:
    from model_zoo.training.objectives import BLUR, CLEAN, NOISE, NOISE_AND_BLUR

    x, _ = load_dataset("digits", "train")
    x = x[:200]
    original = x.clone()
    out, kind = _corrupt(x, seed=0, clean_fraction=0.25)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[kind == CLEAN], x[kind == CLEAN]) and int((kind == CLEAN).sum()) == 50
    counts = {k: int((kind == k).sum()) for k in (NOISE, BLUR, NOISE_AND_BLUR)}
    assert all(c >= 20 for c in counts.values()), counts  # 150 images, about 50 of each kind
    changed = (out - x).flatten(1).abs().amax(1)
    assert (changed[kind != CLEAN] > 0).float().mean() > 0.95  # only a blur sigma of about 0 leaves an image as is
    tv_in, tv_out = _total_variation(x), _total_variation(out)
    blurred, noised = kind == BLUR, kind == NOISE
    background = x == 0
    assert (tv_out[blurred] <= tv_in[blurred] + 1e-5).all() and tv_out[blurred].sum() < 0.8 * tv_in[blurred].sum()
    assert tv_out[noised].sum() > 1.1 * tv_in[noised].sum()
    # noise reaches the background (digits are mostly 0 there), blur alone does not leave the digit's neighbourhood
    assert ((out - x).abs()[noised][background[noised]] > 0).float().mean() > 0.3
    # a blurred-only image is a Gaussian blur of its original at some sigma in [0, blur_max] (and nothing else)
    from model_zoo.training.objectives import blur_radius, gaussian_blur

    blur_max = get_recipe("noise_blur").defaults["blur_max"]
    grid = [blur_max * i / 200 for i in range(201)]

    def best_blur_fit(originals: torch.Tensor, results: torch.Tensor, sigma: bool = False) -> torch.Tensor:
        errors = torch.stack([(gaussian_blur(originals, torch.full((len(originals),), g), blur_radius(blur_max)) - results)
                              .flatten(1).abs().amax(1) for g in grid])
        return torch.tensor(grid)[errors.argmin(0)] if sigma else errors.amin(0)

    assert best_blur_fit(x[blurred], out[blurred]).max() < 0.02
    # the sigmas are drawn per image over [0, max]: spread over the range, not one value
    blur_sigmas = best_blur_fit(x[blurred], out[blurred], sigma=True)
    assert blur_sigmas.min() < 0.3 * blur_max and blur_sigmas.max() > 0.7 * blur_max
    sigma_max = get_recipe("noise_blur").defaults["sigma_max"]
    # on background pixels (0) the clipped noise is max(0, sigma z), of mean sigma / sqrt(2 pi)
    noise_sigmas = torch.stack([o[b].mean() for o, b in zip(out[noised], background[noised])]) * (2 * torch.pi) ** 0.5
    assert noise_sigmas.min() < 0.3 * sigma_max and noise_sigmas.max() > 0.7 * sigma_max
    assert noise_sigmas.max() < 1.5 * sigma_max
    assert (best_blur_fit(x[noised], out[noised]) > 0.02).float().mean() > 0.9  # the noised ones are no blur
    # "both" is the blur and the noise: without noise it is a blur, without blur it is noised
    no_noise, kind_no_noise = _corrupt(x, seed=0, clean_fraction=0.25, sigma_max=0.0)
    both = kind_no_noise == NOISE_AND_BLUR
    assert torch.equal(no_noise[kind_no_noise == NOISE], x[kind_no_noise == NOISE])
    assert best_blur_fit(x[both], no_noise[both]).max() < 0.02
    assert ((no_noise[both] - x[both]).flatten(1).abs().amax(1) > 0).float().mean() > 0.8  # a sigma near 0 changes nothing
    no_blur, kind_no_blur = _corrupt(x, seed=0, clean_fraction=0.25, blur_max=0.0)
    both = kind_no_blur == NOISE_AND_BLUR
    assert torch.equal(no_blur[kind_no_blur == BLUR], x[kind_no_blur == BLUR])
    assert _total_variation(no_blur[both]).sum() > 1.1 * _total_variation(x[both]).sum()
    assert torch.equal(x, original)  # a copy: the batch itself is not changed in place
    # no clean share: every image corrupted; all clean: the batch as it was
    _, none_clean = _corrupt(x, seed=0, clean_fraction=0.0)
    assert not (none_clean == CLEAN).any()
    same, all_clean = _corrupt(x, seed=0, clean_fraction=1.0)
    assert torch.equal(same, x) and (all_clean == CLEAN).all()


def test_noise_blur_draws_from_its_seed() -> None:
    x, _ = load_dataset("digits", "train")
    x = x[:64]
    first, kind_first = _corrupt(x, seed=0)
    again, kind_again = _corrupt(x, seed=0)
    other, kind_other = _corrupt(x, seed=1)
    assert torch.equal(first, again) and torch.equal(kind_first, kind_again)
    assert not torch.equal(first, other) and not torch.equal(kind_first, kind_other)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    _corrupt(x, seed=0)
    assert torch.equal(torch.rand(3), before)  # the global RNG is not used


def test_noise_blur_trains_reproducibly_and_differs_from_standard(small_data) -> None:
    quick = {"epochs": 2, "batch_size": 32}
    losses: list[float] = []
    first = train("noise_blur", overrides=quick, data=small_data, on_epoch=lambda epoch, loss: losses.append(loss))
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert first.settings["recipe"] == "noise_blur" and first.settings["epochs"] == 2
    assert {"sigma_max", "blur_max", "clean_fraction"} <= set(first.training_block)
    assert "threat_model" not in first.settings and "eps" not in first.settings
    assert _same_state(first.model, train("noise_blur", overrides=quick, data=small_data).model)
    assert not _same_state(first.model, train("noise_blur", overrides=quick, data=small_data, seed=1).model)
    standard = train("standard", overrides=quick, data=small_data).model
    assert not _same_state(first.model, standard)  # the model saw corrupted images
    # with every image left clean the recipe is plain cross-entropy: the standard model, bit for bit
    assert _same_state(train("noise_blur", overrides={**quick, "clean_fraction": 1.0}, data=small_data).model, standard)


def test_shipped_noise_blur_model_is_more_robust_to_corruptions_than_the_undefended_one() -> None:
    """Rusak2020Simple (noise_blur, seed 0) on digits-C: clearly above LeCun1998Gradient at the same clean accuracy."""
    from safetensors.torch import load_file

    from benchmark.corruption_eval import evaluate_corruptions

    def mean_accuracy(model: torch.nn.Module) -> float:
        result = evaluate_corruptions(model.eval(), "digits")
        mean = getattr(result, "mean_accuracy", None)
        return float(result.robust_accuracy if mean is None else mean)

    ours = DigitsCNN(width=32)
    ours.load_state_dict(load_file(ROOT / "submissions/digits/corruptions/Rusak2020Simple.safetensors"), strict=True)
    baseline = DigitsCNN(width=32)
    baseline.load_state_dict(load_file(ROOT / "submissions/digits/Linf/LeCun1998Gradient.safetensors"), strict=True)
    assert abs(digits_test_accuracy(ours) - digits_test_accuracy(baseline)) <= 0.01
    assert mean_accuracy(ours) >= mean_accuracy(baseline) + 0.02


# ------------------------------------------------------------------ ibp (certified training)

def _ibp_models():
    """float64 networks the bounds take: the zoo MLP, a convolutional net without max pooling behind a Normalize,
    and the zoo CNN (max pooling)."""
    from torch import nn

    from model_zoo.architectures.digits import DigitsMLP
    from model_zoo.normalize import NormalizedModel

    torch.manual_seed(0)
    conv = NormalizedModel(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2), nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(27, 12)), nn.ReLU(), nn.Linear(12, 10)), mean=[0.3], std=[0.6])
    return {"mlp": DigitsMLP(hidden=20).double().eval(), "conv": conv.double().eval(),
            "cnn": DigitsCNN(width=4).double().eval()}


def _off_label(y: torch.Tensor, classes: int = 10) -> torch.Tensor:
    keep = torch.ones(len(y), classes, dtype=torch.bool)
    keep[torch.arange(len(y)), y] = False
    return keep


def _sampled_margins(model, x, y, eps, l2: bool, samples: int = 3000) -> torch.Tensor:
    """Per point and class, the smallest margin z_y - z_t seen over sampled points of the set: the box's corners
    (signs), random points of the box, and for L2 random points of the ball ∩ [0, 1]."""
    gen = torch.Generator().manual_seed(1)
    n = len(x)
    if l2:
        direction = torch.randn(n, samples, *x.shape[1:], generator=gen, dtype=x.dtype)
        direction = direction / direction.flatten(2).norm(dim=-1)[..., None, None, None]
        radius = eps * torch.rand(n, samples, 1, 1, 1, generator=gen, dtype=x.dtype) ** (1 / 64)
        points = x[:, None] + radius * direction
    else:
        corners = torch.randint(0, 2, (n, samples // 2, *x.shape[1:]), generator=gen).to(x.dtype) * 2 - 1
        inside = torch.rand(n, samples - samples // 2, *x.shape[1:], generator=gen, dtype=x.dtype) * 2 - 1
        points = x[:, None] + eps * torch.cat([corners, inside], 1)
    points = points.clamp(0, 1)
    with torch.no_grad():
        logits = model(points.reshape(-1, *x.shape[1:])).reshape(n, samples, -1)
    return (logits.gather(2, y[:, None, None].expand(n, samples, 1)) - logits).amin(1)


@pytest.mark.parametrize("name", ["mlp", "conv", "cnn"])
def test_ibp_bounds_are_sound_and_equal_the_verifiers_ibp(name) -> None:
    """The training bounds never exceed a margin reached inside the box, and on chains of Linear/Conv2d/ReLU
    (and Normalize, Flatten) they are benchmark.bounds' IBP, to rounding; with max pooling they are tighter
    (monotone corners instead of the verifier's tournament of ReLUs)."""
    from benchmark.bounds import certify
    from model_zoo.training.objectives import ibp_input_box, ibp_margin_lower

    model = _ibp_models()[name]
    x, y = load_dataset("digits", "test")
    x, y = x[:12].double(), y[:12]
    for eps in (0.02, 0.1):
        low, high = ibp_input_box(x, eps)
        ours = ibp_margin_lower(model, low, high, y)
        assert ours.shape == (12, 10) and torch.equal(ours[~_off_label(y)], torch.zeros(12, dtype=ours.dtype))
        sampled = _sampled_margins(model, x, y, eps, l2=False)
        assert (ours[_off_label(y)] <= sampled[_off_label(y)] + 1e-9).all()
        reference = certify(model, x, y, "Linf", eps, method="ibp").margin_lower
        lowest = ours.masked_fill(~_off_label(y), float("inf")).amin(1)
        if name == "cnn":
            assert (lowest >= reference - 1e-9).all() and (lowest > reference + 1e-3).any()
        else:
            assert torch.allclose(lowest, reference, rtol=0, atol=1e-9)


def test_ibp_bounds_are_exact_on_a_linear_model_and_take_negative_weights() -> None:
    """z_0 - z_1 = x_0 - 2 x_1 + 0.5 on the box [0, 1]^2 has minimum 0 - 2 + 0.5 = -1.5 (x_1 at its top: the
    negative weight); a hidden ReLU layer with weights of both signs, bounded by hand."""
    from torch import nn

    from model_zoo.training.objectives import crown_ibp_margin_lower, ibp_margin_lower

    linear = nn.Sequential(nn.Flatten(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        linear[1].weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 0.0]]))
        linear[1].bias.copy_(torch.tensor([0.5, 0.0]))
    low, high = torch.zeros(1, 1, 1, 2, dtype=torch.float64), torch.ones(1, 1, 1, 2, dtype=torch.float64)
    y = torch.tensor([0])
    assert ibp_margin_lower(linear, low, high, y).tolist() == [[0.0, -1.5]]
    assert crown_ibp_margin_lower(linear, low, high, y).tolist() == [[0.0, -1.5]]
    # h = relu(x_0 - x_1) in [0, 1], g = relu(-x_0 + 2 x_1 - 1) in [0, 1]; z_0 - z_1 = h - g + 0.25:
    # IBP says 0 - 1 + 0.25
    hidden = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        hidden[1].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 2.0]]))
        hidden[1].bias.copy_(torch.tensor([0.0, -1.0]))
        hidden[3].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        hidden[3].bias.copy_(torch.tensor([0.25, 0.0]))
    assert ibp_margin_lower(hidden, low, high, y).tolist() == [[0.0, -0.75]]


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_crown_ibp_bounds_are_sound_and_equal_the_verifiers_back_substitution(name) -> None:
    """CROWN-IBP: the verifier's CROWN back-substitution (benchmark.bounds) run over IBP's layer bounds gives the
    same margins; never above a sampled margin, and here at least as tight as IBP."""
    from benchmark.bounds import _back_substitute, _relaxation, input_box, interval_bounds, margin_objective, to_network
    from benchmark.threat_models import get_threat_model
    from model_zoo.training.objectives import ibp_input_box, margin_bounds

    model = _ibp_models()[name]
    x, y = load_dataset("digits", "test")
    x, y = x[:12].double(), y[:12]
    eps = 0.05
    low, high = ibp_input_box(x, eps)
    ibp, crown = margin_bounds(model, low, high, y, crown_ibp=True)
    net = to_network(model, (1, 8, 8))
    box = input_box(x, get_threat_model("Linf"), eps)
    layers = interval_bounds(net, *box)
    relax = [_relaxation(net.relu[k], *layers[k]) for k in range(len(net.relu))]
    reference = _back_substitute(net, len(net.relu), margin_objective(y, 10), relax, x.flatten(1), *box, None)
    keep = _off_label(y)
    assert torch.allclose(crown[keep].reshape(12, 9), reference, rtol=0, atol=1e-9)
    assert (crown[keep] <= _sampled_margins(model, x, y, eps, l2=False)[keep] + 1e-9).all()
    assert (crown[keep] >= ibp[keep] - 1e-9).all()


@pytest.mark.parametrize("name", ["mlp", "conv", "cnn"])
def test_l2_bounds_use_the_ball_and_stay_sound(name) -> None:
    """For L2 the first affine layer also bounds over the ball (w · x0 -+ eps ||w||): tighter than the bounding box
    alone, and still never above a margin sampled in the ball ∩ [0, 1]."""
    from model_zoo.training.objectives import ibp_input_box, margin_bounds

    model = _ibp_models()[name]
    x, y = load_dataset("digits", "test")
    x, y = x[:12].double(), y[:12]
    eps = 0.4
    low, high = ibp_input_box(x, eps)
    keep = _off_label(y)
    box_only = margin_bounds(model, low, high, y)[0]
    ibp, crown = margin_bounds(model, low, high, y, center=x, l2_eps=eps, crown_ibp=name != "cnn")
    sampled = _sampled_margins(model, x, y, eps, l2=True)
    assert (ibp[keep] >= box_only[keep] - 1e-9).all() and (ibp[keep] > box_only[keep] + 1e-3).any()
    assert (ibp[keep] <= sampled[keep] + 1e-9).all()
    if crown is not None:
        assert (crown[keep] <= sampled[keep] + 1e-9).all()


def test_ibp_refuses_layers_it_cannot_bound() -> None:
    from torch import nn

    from model_zoo.training.objectives import ibp_input_box, ibp_layers, margin_bounds

    assert [type(m).__name__ for m in ibp_layers(DigitsCNN(width=2))] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="cannot take a Tanh layer"):
        ibp_layers(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(64, 64)

        def forward(self, x):
            return x + self.layer(x)

    with pytest.raises(ValueError, match="cannot take a Residual layer"):
        ibp_layers(nn.Sequential(nn.Flatten(), Residual(), nn.Linear(64, 10)))
    reflecting = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(128, 10))
    with pytest.raises(ValueError, match="^interval bound propagation takes Conv2d with zero padding only, "
                                         "not padding_mode='reflect'$"):
        ibp_layers(reflecting)
    with pytest.raises(ValueError, match="^interval bound propagation cannot take a MaxPool2d that returns indices$"):
        ibp_layers(nn.Sequential(nn.MaxPool2d(2, return_indices=True), nn.Flatten(), nn.Linear(16, 10)))
    relu_last = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())
    with pytest.raises(ValueError, match="must end with a Linear"):
        margin_bounds(relu_last, *ibp_input_box(torch.rand(2, 1, 8, 8), 0.1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="MaxPool2d"):
        margin_bounds(DigitsCNN(width=2), *ibp_input_box(torch.rand(2, 1, 8, 8), 0.1), torch.tensor([0, 1]),
                      crown_ibp=True)


def test_ibp_schedule_warms_up_then_ramps_eps_kappa_and_beta() -> None:
    from model_zoo.training.objectives import ibp_schedule
    from model_zoo.training.recipes import RecipeContext, ibp_schedule_of

    def at(step, **kw):
        settings = dict(warmup_epochs=2, ramp_epochs=4, eps_train=0.22, kappa_final=0.5)
        return ibp_schedule(step, 10, **{**settings, **kw})

    assert at(0) == (0.0, 1.0, 1.0) and at(19) == (0.0, 1.0, 1.0)  # warm-up: two epochs of 10 steps
    assert at(20) == (0.0, 1.0, 1.0)
    eps, kappa, beta = at(30)  # a quarter of the ramp
    assert eps == pytest.approx(0.055) and kappa == pytest.approx(0.875) and beta == pytest.approx(0.75)
    eps, kappa, beta = at(40, beta_final=0.5)
    assert eps == pytest.approx(0.11) and kappa == pytest.approx(0.75) and beta == pytest.approx(0.75)
    assert at(60) == pytest.approx((0.22, 0.5, 0.0)) and at(10_000) == pytest.approx((0.22, 0.5, 0.0))
    assert at(19, ramp_epochs=0) == (0.0, 1.0, 1.0) and at(20, ramp_epochs=0) == (0.22, 0.5, 0.0)
    steps = [at(s)[0] for s in range(80)]
    assert steps == sorted(steps)  # eps never decreases
    # the recipe's: eps_train = eps_train_factor * the card's eps, steps per epoch from the data and batch size
    settings = resolve_settings(get_recipe("ibp"), {"warmup_epochs": 1, "ramp_epochs": 2, "batch_size": 32})
    ctx = RecipeContext(settings, None, 0.2, 0, torch.zeros(100, 1, 8, 8), torch.zeros(100).long(), 10)
    schedule = ibp_schedule_of(ctx)  # 4 steps an epoch
    assert schedule(3)[0] == 0.0 and schedule(8)[0] == pytest.approx(0.5 * settings["eps_train_factor"] * 0.2)
    assert schedule(12) == pytest.approx((settings["eps_train_factor"] * 0.2, settings["kappa_final"], 0.0))


def test_ibp_is_an_adversarial_recipe_with_validated_settings() -> None:
    recipe = get_recipe("ibp")
    assert recipe.adversarial and "Gowal" in recipe.paper
    settings = resolve_settings(recipe, threat_model="L2")
    assert settings["eps"] == default_eps("digits", "L2") and settings["eps_train_factor"] > 1
    data = (torch.rand(8, 1, 8, 8), torch.zeros(8).long())
    for key, value, match in (("kappa_final", 1.5, "kappa_final must be in"), ("eps_train_factor", 0.0, "positive"),
                              ("beta_final", -0.1, "beta_final must be in"), ("ramp_epochs", -1, ">= 0")):
        with pytest.raises(ValueError, match=match):
            train("ibp", overrides={"epochs": 1, key: value}, data=data)


def test_ibp_trains_reproducibly_and_warm_up_is_standard_training(small_data) -> None:
    quick = {"architecture": "digits_mlp", "arch_kwargs": {"hidden": 16}, "epochs": 3, "warmup_epochs": 1,
             "ramp_epochs": 1, "batch_size": 32}
    losses: list[float] = []
    first = train("ibp", overrides=quick, data=small_data, on_epoch=lambda epoch, loss: losses.append(loss))
    assert len(losses) == 3 and torch.isfinite(torch.tensor(losses)).all()
    assert first.settings["threat_model"] == "Linf" and first.settings["eps"] == default_eps("digits", "Linf")
    assert {"warmup_epochs", "ramp_epochs", "eps_train_factor", "kappa_final", "crown_ibp", "beta_final"} <= set(
        first.training_block)
    assert _same_state(first.model, train("ibp", overrides=quick, data=small_data).model)
    assert not _same_state(first.model, train("ibp", overrides=quick, data=small_data, seed=1).model)
    for variant in ({"crown_ibp": False}, {"beta_final": 1.0}, {"kappa_final": 0.5}):
        other = train("ibp", overrides={**quick, **variant}, data=small_data)
        assert not _same_state(first.model, other.model)
        assert _same_state(other.model, train("ibp", overrides={**quick, **variant}, data=small_data).model)
    # the zoo CNN: IBP takes its max pooling, CROWN-IBP refuses it before training starts
    cnn = {**quick, "architecture": "digits_cnn", "arch_kwargs": {"width": 2}, "epochs": 1, "warmup_epochs": 0}
    cnn_model = train("ibp", overrides={**cnn, "crown_ibp": False}, data=small_data).model
    assert torch.isfinite(cnn_model(small_data[0])).all()
    with pytest.raises(ValueError, match="MaxPool2d"):
        train("ibp", overrides=cnn, data=small_data, on_epoch=lambda epoch, loss: pytest.fail("trained"))
    l2 = train("ibp", threat_model="L2", overrides=quick, data=small_data)
    assert l2.settings["eps"] == default_eps("digits", "L2") and not _same_state(first.model, l2.model)
    # eps 0 for the whole run: the objective is the clean cross-entropy, the standard recipe's model bit for bit
    shared = {k: v for k, v in quick.items() if k not in ("warmup_epochs", "ramp_epochs")}
    shared.update({k: resolve_settings(get_recipe("ibp"))[k] for k in ("optimizer", "lr", "weight_decay")})
    warm_only = train("ibp", overrides={**quick, "warmup_epochs": 3}, data=small_data)
    assert _same_state(warm_only.model, train("standard", overrides=shared, data=small_data).model)
    assert not _same_state(first.model, warm_only.model)


def test_the_first_layer_bounds_over_an_l2_ball_are_exact() -> None:
    """Around a point whose ball lies inside [0, 1], a Normalize then a Linear or a padded Conv2d ranges exactly over
    w · x0 + b -+ eps ||w|| per output (w: the output's row of the dense map, the normalisation and the borders
    included); a linear model's margins likewise (the ball bound merged with the last layer)."""
    from torch import nn

    from model_zoo.normalize import Normalize
    from model_zoo.training.objectives import ibp_input_box, ibp_margin_lower, interval_bounds_through

    torch.manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(2, 1, 8, 8, dtype=torch.float64)
    eps = 0.25  # every coordinate stays within [0.05, 0.95]: the box does not cut the ball
    low, high = ibp_input_box(x, eps)
    for layers in ([Normalize([0.2], [0.6]), nn.Flatten(), nn.Linear(64, 5)],
                   [Normalize([0.2], [0.6]), nn.Conv2d(1, 3, 3, padding=1, stride=2)]):
        layers = [layer.double() for layer in layers]
        chain = nn.Sequential(*layers)
        lo, hi = interval_bounds_through(layers, low, high, center=x, l2_eps=eps)
        for i in range(len(x)):
            rows = torch.autograd.functional.jacobian(lambda v: chain(v[None]).flatten(), x[i]).reshape(-1, 64)
            with torch.no_grad():
                out = chain(x[i:i + 1]).flatten()
            assert torch.allclose(lo[i].flatten(), out - eps * rows.norm(dim=1), rtol=0, atol=1e-12)
            assert torch.allclose(hi[i].flatten(), out + eps * rows.norm(dim=1), rtol=0, atol=1e-12)
    # two channels of different std: the ball maps into an ellipsoid, bounded by the ball of radius eps / min(std),
    # exact for weights on the channel of the smallest std only
    two = [Normalize([0.1, 0.2], [0.5, 2.0]).double(), nn.Flatten(), nn.Linear(8, 3).double()]
    with torch.no_grad():
        two[2].weight[:, 4:] = 0.0
    x2 = 0.3 + 0.4 * torch.rand(2, 2, 2, 2, dtype=torch.float64)
    lo, hi = interval_bounds_through(two, *ibp_input_box(x2, eps), center=x2, l2_eps=eps)
    with torch.no_grad():
        out = nn.Sequential(*two)(x2)
    spread = eps * (two[2].weight / 0.5).norm(dim=1)
    assert torch.allclose(lo, out - spread, rtol=0, atol=1e-12) and torch.allclose(hi, out + spread, rtol=0, atol=1e-12)
    linear = nn.Sequential(Normalize([0.2], [0.6]), nn.Flatten(), nn.Linear(64, 10)).double()
    y = torch.tensor([3, 7])
    ours = ibp_margin_lower(linear, low, high, y, center=x, l2_eps=eps)
    rows = (linear[2].weight[y][:, None] - linear[2].weight[None]) / linear[0].std.flatten()[0]  # 0.6 in float32
    with torch.no_grad():
        logits = linear(x)
        exact = logits.gather(1, y[:, None]) - logits - eps * rows.norm(dim=-1)
    assert torch.allclose(ours, exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["pgd_at", "fast_at", "trades"])
def test_adversarial_recipes_draw_their_random_starts_from_the_seed(name: str, small_data) -> None:
    """Not from torch's global generator: whatever ran before, a seed gives the same weights."""
    quick = {"epochs": 1, "batch_size": 64, **({"steps": 2} if "steps" in get_recipe(name).defaults else {})}
    torch.manual_seed(1)
    first = train(name, overrides=quick, data=small_data).model
    torch.manual_seed(2)
    assert _same_state(first, train(name, overrides=quick, data=small_data).model)


def test_pgd_at_attacks_every_step_from_a_random_start(monkeypatch, small_data) -> None:
    """Madry et al.'s PGD: a random start and every step taken, also for points broken on the way (no early
    stop, which would leave the others' examples at a weaker, earlier iterate); FGSM-RS (fast_at) one step."""
    from benchmark.attacks import PGD
    from model_zoo.training import recipes

    made: list[dict] = []
    seeds: list[int] = []

    class Recording(PGD):
        def __init__(self, *args, **kwargs) -> None:
            made.append(kwargs)
            super().__init__(*args, **kwargs)

        def __call__(self, *args, generator=None, **kwargs):
            seeds.append(generator.initial_seed())  # one stream of the run's seed, drawn on from batch to batch
            return super().__call__(*args, generator=generator, **kwargs)

    monkeypatch.setattr(recipes, "PGD", Recording)
    train("pgd_at", overrides={"epochs": 1, "steps": 3, "step_size": 0.05}, data=small_data, seed=4)
    train("fast_at", overrides={"epochs": 1, "step_size": 0.3}, data=small_data, seed=5)
    assert made == [dict(n_iter=3, step_size=0.05, random_start=True, early_stop=False),
                    dict(n_iter=1, step_size=0.3, random_start=True, early_stop=False)]
    batches = len(seeds) // 2
    assert batches > 1 and seeds == [4 * SEED_STRIDE + 1] * batches + [5 * SEED_STRIDE + 1] * batches


def test_ibp_objective_mixes_the_crown_ibp_and_ibp_bounds_by_beta() -> None:
    """Zhang et al.'s CROWN-IBP loss, term by term: kappa * CE(clean) + (1 - kappa) * CE(-(beta * CROWN-IBP's
    margins + (1 - beta) * IBP's)), here with no warm-up and no ramp, so the final kappa and beta from the first step."""
    from model_zoo.architectures.digits import DigitsMLP
    from model_zoo.training.objectives import ibp_input_box, margin_bounds
    from model_zoo.training.recipes import RecipeContext

    torch.manual_seed(0)
    model, x, y = DigitsMLP(hidden=8), torch.rand(6, 1, 8, 8), torch.arange(6)
    for kappa, beta in ((0.25, 0.6), (0.0, 1.0)):
        settings = resolve_settings(get_recipe("ibp"), {"architecture": "digits_mlp", "arch_kwargs": {"hidden": 8},
                                                        "warmup_epochs": 0, "ramp_epochs": 0, "kappa_final": kappa,
                                                        "beta_final": beta, "eps_train_factor": 1.0})
        ctx = RecipeContext(settings, get_threat_model("Linf"), 0.1, 0, x, y, 10)
        ibp, crown = margin_bounds(model, *ibp_input_box(x, 0.1), y, crown_ibp=True)
        expected = kappa * F.cross_entropy(model(x), y) + (1 - kappa) * F.cross_entropy(-(beta * crown + (1 - beta) * ibp), y)
        assert get_recipe("ibp").build(ctx)(model, x, y, torch.arange(6)).item() == pytest.approx(expected.item(), rel=1e-6)
    # kappa_final 1 (the clean loss only) is allowed: the standard recipe's model bit for bit
    data = (x.repeat(4, 1, 1, 1), y.repeat(4))
    quick = {"architecture": "digits_mlp", "arch_kwargs": {"hidden": 8}, "epochs": 2, "batch_size": 8}
    only_clean = train("ibp", overrides={**quick, "kappa_final": 1.0, "warmup_epochs": 0, "ramp_epochs": 1}, data=data)
    shared = {**quick, **{k: resolve_settings(get_recipe("ibp"))[k] for k in ("optimizer", "lr", "weight_decay")}}
    assert _same_state(only_clean.model, train("standard", overrides=shared, data=data).model)


def test_fit_refuses_an_unknown_optimizer_and_a_learning_rate_of_zero() -> None:
    from torch import nn

    from model_zoo.training._loop import fit

    def objective(model, xb, yb, index):
        return F.cross_entropy(model(xb), yb)

    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"^unknown optimizer 'rmsprop'; known: adam, sgd$"):
        fit(model, objective, x, y, epochs=1, batch_size=2, lr=0.1, seed=0, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr > 0; got 1, 2, 0.0"):
        fit(model, objective, x, y, epochs=1, batch_size=2, lr=0.0, seed=0)


def test_the_recipe_list_marks_the_adversarial_ones_and_prints_their_settings(capsys) -> None:
    assert train_main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"common settings: {json.dumps(dict(COMMON_DEFAULTS))}"
    for recipe in RECIPES.values():
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [recipe.name])
        marked = " [threat_model, eps]" if recipe.adversarial else ""  # they take the card's threat model and eps
        assert lines[at].split(None, 1)[1] == f"{recipe.summary}{marked}", lines[at]
        assert lines[at + 1].split() == ["settings:", *json.dumps(dict(recipe.defaults)).split()]
        assert lines[at + 2].strip() == f"paper: {recipe.paper}"


def test_a_setting_value_may_hold_an_equals_sign() -> None:
    from model_zoo.training.cli import _parse_overrides

    assert _parse_overrides(["note=a=b", " epochs =3"]) == {"note": "a=b", "epochs": 3}


def test_update_submission_rewrites_a_json_file_and_refuses_one_that_is_not_a_mapping(tmp_path: Path) -> None:
    from test_submission_schema import submission_document, write_submission

    path = write_submission(tmp_path, submission_document(), suffix=".json")
    before = json.loads(path.read_text())
    update_submission(path, "cd" * 32, 0.875)
    after = json.loads(path.read_text())
    assert after["checkpoint"]["sha256"] == "cd" * 32 and after["reported"]["clean_accuracy"] == 0.875
    after["checkpoint"]["sha256"], after["reported"]["clean_accuracy"] = before["checkpoint"]["sha256"], 0.9
    assert after == before
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"a submission file holds one mapping, got list$"):
        update_submission(path, "cd" * 32, 0.875)


def test_a_submission_without_a_robench_recipe_cannot_be_retrained(tmp_path: Path) -> None:
    from test_submission_schema import submission_document, write_submission

    doc = {**submission_document(), "training": {"description": "PGD-AT in another codebase"}}
    path = write_submission(tmp_path, doc)
    with pytest.raises(ValueError, match=r"names no robench recipe \(external models cannot be retrained\)"):
        read_training_spec(path)


def test_save_checkpoint_makes_the_folders_and_a_world_readable_file(tmp_path: Path) -> None:
    from torch import nn

    path = tmp_path / "runs" / "sweep" / "m.safetensors"
    sha = save_checkpoint(nn.Linear(2, 2), path)
    assert sha == sha256_file(path) and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary file left
