"""Each check fires on a model built to trigger it and stays silent on an undefended digits model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import grad as aliased_grad

from benchmark.attacks.apgd import APGD
from benchmark.attacks.square import Square
from benchmark.checks import (
    BLACK_BOX_THRESHOLD, RANDOMNESS_RTOL, FLAG_EXPLANATIONS, black_box_check, check_randomness, check_softmax_output,
    check_test_time_optimisation, check_too_few_classes, check_zero_gradients, choose_version,
    run_checks,
)
from benchmark.data import load_dataset
from benchmark.threat_models import get_threat_model
from model_zoo.architectures.digits import DigitsCNN
from model_zoo.training.train import train

EPS = 0.1  # half the digits Linf board's 0.2: the small undefended model keeps some points robust


@pytest.fixture(scope="module")
def undefended() -> nn.Module:
    """A small standard-trained DigitsCNN (about 95% clean accuracy, a few seconds on one CPU thread)."""
    settings = {"epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "arch_kwargs": {"width": 8}}
    model = train("standard", overrides=settings).model
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    x, y = load_dataset("digits", "test", n_examples=64)
    return x, y


class Wrapper(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base


class DropoutLeftOn(Wrapper):
    """Input dropout that stays in training mode whatever ``eval()`` says."""

    def forward(self, x: Tensor) -> Tensor:
        return self.base(F.dropout(x, 0.2, training=True))


class SoftmaxHead(Wrapper):
    def forward(self, x: Tensor) -> Tensor:
        return self.base(x).softmax(1)


class LogSoftmaxHead(Wrapper):
    def forward(self, x: Tensor) -> Tensor:
        return self.base(x).log_softmax(1)


class Quantised(Wrapper):
    def forward(self, x: Tensor) -> Tensor:
        return self.base(torch.round(x * 8) / 8)


class TinyNoise(Wrapper):
    """Adds noise of relative size ``scale`` to the logits (1e-9: float noise; 1e-3: a randomised model)."""

    def __init__(self, base: nn.Module, scale: float) -> None:
        super().__init__(base)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        z = self.base(x)
        return z * (1 + self.scale * torch.randn_like(z))


class Purifier(Wrapper):
    """Test-time optimisation: a few descent steps on the prediction entropy before classifying.

    ``how`` picks the autograd entry point; ``when`` restricts the loop to forwards run under
    ``no_grad`` or under ``enable_grad``, or on inputs that require grad (evasive models), or runs it always.
    """

    def __init__(self, base: nn.Module, how: str, when: str = "always", steps: int = 3) -> None:
        super().__init__(base)
        self.how, self.when, self.steps = how, when, steps

    def _entropy(self, z: Tensor) -> Tensor:
        p = self.base(z).softmax(1)
        return -(p * p.clamp_min(1e-12).log()).sum()

    def _grad(self, z: Tensor) -> Tensor:
        if self.how == "func":
            return torch.func.grad(self._entropy)(z.detach())
        z = z.detach().requires_grad_(True)
        loss = self._entropy(z)
        if self.how == "backward":
            loss.backward()
            return z.grad
        if self.how == "autograd.grad":
            return torch.autograd.grad(loss, z)[0]
        if self.how == "aliased":
            return aliased_grad(loss, z)[0]
        if self.how == "autograd.backward":
            torch.autograd.backward(loss)
            return z.grad
        raise ValueError(self.how)

    def forward(self, x: Tensor) -> Tensor:
        if self.when == "requires_grad":  # evasive: only when the input asks for a gradient, as an attack's does
            optimise = x.requires_grad
        else:
            optimise = self.when == "always" or (self.when == "enable_grad") == torch.is_grad_enabled()
        z = x
        if optimise:
            with torch.enable_grad():
                for _ in range(self.steps):
                    z = (z - 0.01 * self._grad(z)).clamp(0, 1)
        # straight-through: the output depends on x, the purification shift is a constant
        return self.base(x + (z - x).detach())


def _fired(results) -> set[str]:
    return {r.name for r in results if r.fired}


def test_every_flag_has_an_explanation():
    names = {"randomness", "softmax_output", "test_time_optimisation", "zero_gradients", "too_few_classes",
             "black_box_beats_white_box", "non_finite_logits", "attacks_missed_points"}
    from benchmark.flags import CHECK_FLAGS

    assert set(CHECK_FLAGS) == names and set(FLAG_EXPLANATIONS) == names | {"unreliable", "reported_not_reproduced"}
    assert all(len(v) > 40 for v in FLAG_EXPLANATIONS.values())


def test_silent_on_the_undefended_model(undefended, digits):
    x, y = digits
    results = run_checks(undefended, x, y, num_classes=10, classes_needed=10)
    assert [r.name for r in results] == ["randomness", "softmax_output", "test_time_optimisation", "zero_gradients",
                                         "too_few_classes"]
    assert _fired(results) == set()


def test_randomness_fires_on_dropout_left_on(undefended, digits):
    x, y = digits
    model = DropoutLeftOn(undefended).eval()
    assert "randomness" in _fired(run_checks(model, x, y, 10))
    result = check_randomness(model, x)
    assert result.details["prediction_changes"] > 0


def test_randomness_tolerates_float_noise_only(undefended, digits):
    x, _ = digits
    assert not check_randomness(TinyNoise(undefended, 1e-9), x).fired
    assert check_randomness(TinyNoise(undefended, 1e-3), x).fired


class ChangesOnCall(Wrapper):
    """Deterministic, except that call number ``k`` (1-based) adds ``shift`` to the logits."""

    def __init__(self, base: nn.Module, k: int, shift: Tensor | float) -> None:
        super().__init__(base)
        self.k, self.shift, self.calls = k, shift, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        z = self.base(x)
        return z + self.shift if self.calls == self.k else z


@pytest.mark.parametrize("k", [1, 2, 4])
def test_randomness_compares_every_pass_with_the_first(undefended, digits, k):
    x, _ = digits
    result = check_randomness(ChangesOnCall(undefended, k, 0.1), x)
    assert result.fired and result.details == {"max_logit_difference": pytest.approx(0.1, rel=1e-3),
                                              "prediction_changes": 0, "passes": 4}


def test_randomness_tolerance_scales_with_the_largest_logit():
    # logits of largest magnitude 0.5: the tolerance is RANDOMNESS_RTOL * 1.5
    base = nn.Linear(2, 3)
    with torch.no_grad():
        base.weight.zero_()
        base.bias.copy_(torch.tensor([0.5, -0.2, 0.1]))
    x = torch.zeros(4, 2)
    for factor, fires in ((0.9, False), (1.1, True)):
        model = ChangesOnCall(base, 2, factor * 1.5 * RANDOMNESS_RTOL)
        assert check_randomness(model, x).fired is fires


def test_randomness_fires_on_a_single_changed_prediction():
    # a near-tie that swaps on the second pass: one prediction changes, the logits move by far less than the tolerance
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.zero_()
        base.bias.copy_(torch.tensor([1.0, 1.0]))
    shift = torch.tensor([[1e-6, 0.0]])  # pass 2: class 0 wins the tie that argmax gave to class 0 anyway
    shift_other = torch.tensor([[0.0, 1e-6]])
    x = torch.zeros(1, 2)
    assert not check_randomness(ChangesOnCall(base, 2, shift), x).fired
    result = check_randomness(ChangesOnCall(base, 2, shift_other), x)
    assert result.fired and result.details["prediction_changes"] == 1


@pytest.mark.parametrize("passes,ok", [(1, False), (2, True)])
def test_randomness_needs_two_passes(undefended, digits, passes, ok):
    x, _ = digits
    if ok:
        assert check_randomness(undefended, x, passes=passes).details["passes"] == 2
    else:
        with pytest.raises(ValueError, match="at least 2 passes, got 1"):
            check_randomness(undefended, x, passes=passes)


def test_checks_leave_the_global_random_state_alone(undefended, digits):
    x, y = digits
    before = torch.get_rng_state()
    run_checks(DropoutLeftOn(undefended).eval(), x, y, 10)
    assert torch.equal(before, torch.get_rng_state())


def test_softmax_output_fires_on_a_softmax_head_only(undefended, digits):
    x, y = digits
    assert "softmax_output" in _fired(run_checks(SoftmaxHead(undefended), x, y, 10))
    with torch.no_grad():
        assert not check_softmax_output(LogSoftmaxHead(undefended)(x)).fired  # log-probabilities are logits


def test_softmax_output_rule_and_details():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])  # exact zeros are probabilities too
    result = check_softmax_output(probs)
    assert result.fired and result.details == {"min_output": 0.0, "max_row_sum_error": 0.0}
    not_normalised = torch.tensor([[0.5, 0.0, 0.2], [1.0, 2.0, 0.0]])  # non-negative, but the rows do not sum to 1
    result = check_softmax_output(not_normalised)
    assert not result.fired and result.details == {"min_output": 0.0, "max_row_sum_error": pytest.approx(2.0)}
    assert not check_softmax_output(torch.tensor([[1.5, -0.5]])).fired  # sums to 1, but negative


@pytest.mark.parametrize("how", ["backward", "autograd.grad", "aliased", "autograd.backward", "func"])
def test_test_time_optimisation_fires_on_every_autograd_entry_point(undefended, digits, how):
    x, y = digits
    model = Purifier(undefended, how)
    assert "test_time_optimisation" in _fired(run_checks(model, x[:8], y[:8], 10))


@pytest.mark.parametrize("when", ["no_grad", "enable_grad"])
def test_test_time_optimisation_fires_in_either_grad_mode(undefended, digits, when):
    x, _ = digits
    for how in ("backward", "aliased"):
        result = check_test_time_optimisation(Purifier(undefended, how, when), x[:8])
        assert result.fired, (how, when, result.details)
        assert result.details[f"{when}_backward_unpacks"] > 0


def test_test_time_optimisation_counts_every_unpacked_tensor(undefended, digits):
    # the count in the details is the number of saved tensors the purifier's backward passes unpacked
    x, _ = digits
    model = Purifier(undefended, "backward", "no_grad")
    unpacked = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: unpacked.append(1) or t), torch.no_grad():
        model(x[:8])
    assert len(unpacked) > 3  # three descent steps, each unpacking several saved tensors
    assert check_test_time_optimisation(model, x[:8]).details["no_grad_backward_unpacks"] == len(unpacked)


@pytest.mark.parametrize("how", ["backward", "autograd.grad"])
def test_test_time_optimisation_counts_calls_and_graph_tensors(undefended, digits, how):
    x, _ = digits
    model = Purifier(undefended, how, "no_grad")
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(1) or t, lambda t: t), torch.no_grad():
        model(x[:8])
    details = check_test_time_optimisation(model, x[:8]).details
    assert details["no_grad_autograd_calls"] == 3  # one per descent step (Tensor.backward's inner call not twice)
    assert details["no_grad_graph_tensors"] == len(packed) > 3


def test_test_time_optimisation_fires_on_one_step_and_on_inputs_that_require_grad(undefended, digits):
    x, _ = digits
    for how in ("backward", "func"):
        assert check_test_time_optimisation(Purifier(undefended, how, steps=1), x[:8]).fired
    result = check_test_time_optimisation(Purifier(undefended, "backward", "requires_grad"), x[:8])
    assert result.fired and result.details["enable_grad_autograd_calls"] == 3
    assert result.details["no_grad_autograd_calls"] == 0 and "enable_grad_graph_tensors" not in result.details


def test_test_time_optimisation_records_why_the_hook_probe_could_not_run(undefended, digits):
    # torch.func refuses saved-tensor hooks: the first line of its error is kept, and the plain probe still counts
    x, _ = digits
    details = check_test_time_optimisation(Purifier(undefended, "func"), x[:8]).details
    error = details["no_grad_hook_probe_error"]
    assert isinstance(error, str) and 20 < len(error) <= 200 and "\n" not in error and error != "None"
    assert details["no_grad_autograd_calls"] == 3


def test_test_time_optimisation_probe_restores_autograd(undefended, digits):
    x, _ = digits
    saved = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)
    check_test_time_optimisation(Purifier(undefended, "backward"), x[:4])
    assert (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad) == saved


def test_zero_gradients_fires_on_input_quantisation(undefended, digits):
    x, y = digits
    assert "zero_gradients" in _fired(run_checks(Quantised(undefended), x, y, 10))
    result = check_zero_gradients(Quantised(undefended), x, y)
    assert result.details["fraction_zero_margin"] == 1.0


class IgnoresInput(nn.Module):
    """Logits from a parameter alone: the loss has a graph, but the input is not in it."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias.expand(len(x), -1)


class NoGraph(Wrapper):
    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.base(x)


class NanOnFirstPoint(Wrapper):
    """The gradient at the first point is not finite (sqrt at 0); the others are the base model's."""

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.ones(len(x), 1)
        scale[0] = torch.sqrt(x[0].sum() * 0)
        return self.base(x) * scale + (1 - scale.detach()) * self.base(x).detach()


@pytest.mark.parametrize("model", [IgnoresInput(), "no_graph"], ids=["ignores_input", "no_graph"])
def test_zero_gradients_when_the_input_is_not_in_the_graph(undefended, digits, model):
    x, y = digits
    model = NoGraph(undefended) if model == "no_graph" else model
    result = check_zero_gradients(model, x[:6], y[:6] % 3)
    assert result.fired and result.details == {"fraction_zero_cross_entropy": 1.0, "fraction_nonfinite_cross_entropy": 0.0,
                                               "fraction_zero_margin": 1.0, "fraction_nonfinite_margin": 0.0}


def test_zero_gradients_counts_non_finite_gradients_per_point(undefended, digits):
    x, y = digits
    result = check_zero_gradients(NanOnFirstPoint(undefended), x[:8], y[:8])
    assert result.fired
    assert result.details["fraction_nonfinite_margin"] == 1 / 8 and result.details["fraction_nonfinite_cross_entropy"] == 1 / 8


def test_zero_gradients_fires_on_saturated_cross_entropy(undefended, digits):
    x, y = digits

    class Saturated(Wrapper):  # logits so large that the softmax is exactly one-hot in float32
        def forward(self, x: Tensor) -> Tensor:
            return 1e6 * self.base(x)

    result = check_zero_gradients(Saturated(undefended), x, y)
    assert result.fired and result.details["fraction_zero_cross_entropy"] > 0.5
    assert result.details["fraction_zero_margin"] == 0.0


def test_run_checks_defaults_to_nine_targets_and_refuses_bad_batches(undefended, digits):
    x, y = digits
    too_few = {r.name: r for r in run_checks(undefended, x[:1], y[:1], num_classes=10)}["too_few_classes"]
    assert not too_few.fired and too_few.details == {"num_classes": 10, "needed": 10}
    with pytest.raises(ValueError, match=r"non-empty batch with one label per input, got \(0, 1, 8, 8\) and \(0,\)"):
        run_checks(undefended, x[:0], y[:0], num_classes=10)
    with pytest.raises(ValueError, match=r"got \(4, 1, 8, 8\) and \(3,\)"):
        run_checks(undefended, x[:4], y[:3], num_classes=10)


def test_too_few_classes_fires_on_a_two_class_model(digits):
    x, y = digits
    torch.manual_seed(0)
    model = DigitsCNN(num_classes=2, width=4).eval()
    assert "too_few_classes" in _fired(run_checks(model, x, y % 2, num_classes=2))


@pytest.mark.parametrize("classes,needed,fires", [(10, 10, False), (5, 10, True), (3, 3, False), (2, 3, True)])
def test_too_few_classes_rule(classes, needed, fires):
    result = check_too_few_classes(classes, needed)
    assert result.fired is fires and result.details == {"num_classes": classes, "needed": needed}


def test_what_each_attack_and_each_protocol_version_needs():
    """n targets need n + 1 classes; DLR 3 (it reads the third logit), targeted DLR 4; the rest 2."""
    from benchmark.attacks import APGD, FAB, PGD, Square
    from benchmark.protocol import classes_needed, get_protocol

    apgd = {(loss, t): APGD("Linf", loss=loss, n_targets=t).classes_needed()
            for loss, t in [("ce", 0), ("ce", 4), ("dlr", 0), ("dlr", 1), ("dlr", 3), ("dlr", 4), ("dlr", 9)]}
    assert apgd == {("ce", 0): 2, ("ce", 4): 5, ("dlr", 0): 3, ("dlr", 1): 4, ("dlr", 3): 4, ("dlr", 4): 5, ("dlr", 9): 10}
    assert [FAB("L2", n_targets=t).classes_needed() for t in (0, 1, 9)] == [2, 2, 10]
    assert [PGD("Linf", loss=loss).classes_needed() for loss in ("ce", "dlr")] == [2, 3]
    assert Square("Linf").classes_needed() == 2
    linf = get_threat_model("Linf")
    assert {v: classes_needed(get_protocol(v), linf) for v in ("standard", "plus", "rand")} == \
        {"standard": 10, "plus": 10, "rand": 3}


def _attack_log(model: nn.Module, x: Tensor, y: Tensor) -> list[str | None]:
    """Per point, the first attack that broke it: gradient attacks first (APGD-T as in the protocol), then Square."""
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    broken: list[str | None] = [None if c else "clean" for c in clean.tolist()]
    attacks = [("apgd-ce", APGD("Linf", loss="ce", n_iter=50)),
               ("apgd-t", APGD("Linf", loss="dlr", n_iter=100, n_targets=9)),
               ("square", Square("Linf", n_queries=300))]
    for name, attack in attacks:
        idx = torch.tensor([i for i, b in enumerate(broken) if b is None], dtype=torch.long)
        if idx.numel():
            out = attack(model, x[idx], y[idx], EPS)
            for i in idx[out.success].tolist():
                broken[i] = name
    return broken


def test_black_box_check_fires_when_only_square_breaks_points(undefended, digits):
    x, y = digits
    # zero gradients: APGD only breaks the points its random start happens to break
    masked = _attack_log(Quantised(undefended), x[:32], y[:32])
    result = black_box_check(masked, len(masked))
    assert masked.count("square") > masked.count("apgd-ce") + masked.count("apgd-t")
    assert result.fired and result.details["points_only_black_box"] == masked.count("square")


def test_black_box_check_silent_on_the_undefended_model(undefended, digits):
    x, y = digits
    log = _attack_log(undefended, x[:32], y[:32])
    assert log.count("apgd-ce") > 0
    assert not black_box_check(log, len(log)).fired


def test_black_box_check_names_and_details():
    result = black_box_check(["square"], 1)
    assert result.name == "black_box_beats_white_box" and result.fired
    assert result.details == {"points_only_black_box": 1, "share_only_black_box": 1.0, "threshold": BLACK_BOX_THRESHOLD}
    assert black_box_check([], 0).details["share_only_black_box"] == 0.0


def test_black_box_threshold_is_more_than_a_fifth_of_a_point():
    n = 1000
    assert not black_box_check(["square"] * 2 + [None] * (n - 2), n).fired  # exactly 0.2 points
    assert black_box_check(["square"] * 3 + [None] * (n - 3), n).fired
    assert BLACK_BOX_THRESHOLD == 0.002
    with pytest.raises(ValueError, match="smaller"):
        black_box_check(["square"] * 3, 2)


def test_choose_version_auto(undefended):
    assert choose_version(DropoutLeftOn(undefended), "digits", device="cpu") == "rand"
    assert choose_version(undefended, "digits", device="cpu") == "standard"
    # no device given: the GPU where there is one, else the CPU
    assert choose_version(undefended, "digits") == "standard"


class BatchRecorder(Wrapper):
    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        self.batches: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(x.detach().clone())
        return self.base(x)


@pytest.mark.parametrize("n", [None, 5])
def test_choose_version_probes_the_first_n_test_points(undefended, n):
    model = BatchRecorder(undefended)
    choose_version(model, "digits", device="cpu", **({} if n is None else {"n": n}))
    first = load_dataset("digits", "test", n_examples=32 if n is None else n)[0]
    assert model.batches and all(torch.equal(b, first) for b in model.batches)


def test_choose_version_reads_the_data_dir(tmp_path):
    from test_data import _write_cifar

    _write_cifar(tmp_path, "cifar10", n=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    assert choose_version(model, "cifar10", device="cpu", n=8, data_dir=str(tmp_path)) == "standard"


#: bound at import, before any probe replaces the public name: only the saved-tensor hooks see its calls
_GRAD_BOUND_EARLY = torch.autograd.grad


class OneSavedTensorPurifier(nn.Module):
    """One descent step whose graph saved a single tensor (exp's result), run through an early-bound name."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = _GRAD_BOUND_EARLY(xr.exp().sum(), xr)
        return self.inner((x - 0.01 * g.sign()).clamp(0, 1))


def test_test_time_optimisation_fires_on_a_single_unpacked_tensor(undefended, digits):
    x, _ = digits
    result = check_test_time_optimisation(OneSavedTensorPurifier(undefended), x[:8])
    assert result.details["no_grad_backward_unpacks"] == 1 and result.details["no_grad_autograd_calls"] == 0
    assert result.fired


def test_the_counting_wrappers_pass_keyword_arguments_on():
    from benchmark.checks import _AutogradCounter

    counter = _AutogradCounter(use_hooks=False)
    x = torch.rand(3, requires_grad=True)
    with counter.active():
        (g,) = torch.autograd.grad((x ** 3).sum(), x, create_graph=True)
    assert g.requires_grad and counter.calls == 1
