"""The evaluation runner: bad inputs get clear errors and leave nothing behind; runs are
deterministic; pass counts are right; the result record round-trips through JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `--model tests.runner_models:...` and the imports below need the repository root
    sys.path.insert(0, str(REPO))

import benchmark.runner as runner  # noqa: E402
from benchmark.analysis import ANALYSIS_STAGES  # noqa: E402
from benchmark import EvaluationError, EvaluationResult, evaluate, load_dataset  # noqa: E402
from robench.cli import main as cli_main  # noqa: E402
from benchmark.protocol import PROTOCOLS, _entry  # noqa: E402
from benchmark.record import record_path  # noqa: E402
from tests.runner_models import WEIGHTS_ENV, build_mlp, shared_weights  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared machine: more threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    from safetensors.torch import load_file

    model = build_mlp()
    model.load_state_dict(load_file(shared_weights()))
    return model.eval()


@pytest.fixture(scope="module")
def data() -> tuple[Tensor, Tensor]:
    return load_dataset("digits", "test", n_examples=20)


def _fgsm_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "get_protocol", lambda version: (_entry("fgsm", "fgsm"),))


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------ bad inputs


class ScaledLogits(nn.Module):
    """Multiplies the logits of a model; ``nan_above`` makes points brighter than it output NaN."""

    def __init__(self, model: nn.Module, nan_above: float | None = None) -> None:
        super().__init__()
        self.model, self.nan_above = model, nan_above

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if self.nan_above is not None:
            bright = x.flatten(1).mean(1) > self.nan_above
            out = torch.where(bright[:, None], torch.full_like(out, float("nan")), out)
        return out


def _expect_error(tmp_path: Path, match: str, model: nn.Module, **kwargs) -> None:
    out = tmp_path / "out"
    with pytest.raises(EvaluationError, match=match):
        evaluate(model, progress=False, analysis=False, out=out, journal=out / "run.journal", **kwargs)
    assert _files_under(tmp_path) == [], "a failed evaluation left files behind"


def test_wrong_number_of_classes(tmp_path, data):
    from model_zoo.architectures.digits import DigitsMLP

    x, y = data
    _expect_error(tmp_path, r"returns 7 classes but the dataset has 10", DigitsMLP(num_classes=7, hidden=8), x=x, y=y)


def test_nan_logits_everywhere(tmp_path, data, mlp):
    x, y = data
    _expect_error(tmp_path, r"NaN or infinite logits", ScaledLogits(mlp, nan_above=-1.0), x=x, y=y)


def test_nan_logits_on_one_later_point(tmp_path, data, mlp, monkeypatch):
    """The probe sees only the first points; the runner still catches NaN on any point and names it."""
    _fgsm_only(monkeypatch)
    x, y = data[0].clone(), data[1]
    x[13] = 1.0  # all-white image: the only point brighter than 0.9 on average
    _expect_error(tmp_path, r"NaN or infinite logits on clean test points \[13\]", ScaledLogits(mlp, nan_above=0.9),
                  x=x, y=y, batch_size=len(x))


@pytest.mark.parametrize("make, match", [
    (lambda x: (x * 255).to(torch.uint8), r"inputs must be a float tensor, got torch.uint8"),
    (lambda x: x * 2 - 0.5, r"inputs must lie in \[0, 1\], got range \[-0.5"),
    (lambda x: torch.where(torch.arange(len(x))[:, None, None, None] == 3, float("nan"), x), r"NaN values in 1 points"),
    (lambda x: x.flatten(1), r"inputs must be NCHW"),
], ids=["uint8", "out-of-range", "nan", "not-nchw"])
def test_bad_inputs(tmp_path, data, mlp, make, match):
    x, y = data
    _expect_error(tmp_path, match, mlp, x=make(x), y=y)


def test_bad_labels(tmp_path, data, mlp):
    x, y = data
    _expect_error(tmp_path, r"labels must be an int64 tensor", mlp, x=x, y=y.int())
    _expect_error(tmp_path, r"labels must lie in \[0, 9\] for digits, got \[-1, 9\]", mlp, x=x,
                  y=torch.cat([torch.tensor([-1]), y[1:]]))


def test_unknown_dataset_and_threat_model(tmp_path, mlp):
    _expect_error(tmp_path, r"unknown dataset 'mnist'; known: digits, cifar10", mlp, dataset="mnist")
    _expect_error(tmp_path, r"L3", mlp, threat_model="L3")
    with pytest.raises(ValueError, match=r"unknown protocol version 'strong'; known: standard, plus, rand"):
        evaluate(mlp, version="strong", progress=False)


def test_cli_errors_name_the_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    common = ["evaluate", "--model", "tests.runner_models:digits_mlp", "--out", str(tmp_path), "--no-progress"]
    assert cli_main(common + ["--dataset", "mnist"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    assert cli_main(common + ["--threat-model", "L3"]) == 2
    assert "L3" in capsys.readouterr().err
    assert cli_main(common + ["--eps", "-0.1"]) == 2
    assert "eps must be positive" in capsys.readouterr().err
    assert _files_under(tmp_path) == []


# ------------------------------------------------------------------ what a run records


def test_pass_counts_and_queries_fgsm(data, mlp, monkeypatch):
    """FGSM costs one forward+backward per attacked point plus one forward for the success test."""
    _fgsm_only(monkeypatch)
    x, y = data
    result = evaluate(mlp, x=x, y=y, batch_size=8, progress=False, analysis=False)
    attacked = sum(p.clean_correct for p in result.points)
    (stage,) = result.stages
    assert (stage.backward_samples, stage.forward_samples) == (attacked, attacked)
    assert [p.queries for p in result.points] == [2 if p.clean_correct else 0 for p in result.points]
    assert stage.broken == sum(p.broken_by == "fgsm" for p in result.points)
    assert stage.robust_accuracy == result.robust_accuracy == sum(p.robust for p in result.points) / len(x)


@pytest.fixture(scope="module")
def standard_runs(mlp, data) -> tuple[EvaluationResult, EvaluationResult]:
    """The real standard protocol, twice, on the same 20 points with the same seed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = data
    try:
        return tuple(evaluate(mlp, "digits", "Linf", 0.1, x=x, y=y, batch_size=20, seed=0, progress=False, analysis=False)
                     for _ in range(2))
    finally:
        torch.set_num_threads(before)


def _without_times(record: dict) -> dict:
    record = {k: v for k, v in record.items() if k not in ("timings", "created")}
    record["stages"] = [{k: v for k, v in s.items() if k != "time_s"} for s in record["stages"]]
    return record


def test_standard_protocol_is_deterministic(standard_runs):
    first, second = standard_runs
    assert first.points == second.points  # bit-identical floats: dataclass equality compares them exactly
    assert _without_times(first.to_dict()) == _without_times(second.to_dict())


def test_standard_protocol_record_is_consistent(standard_runs, data):
    result, _ = standard_runs
    names = [e.name for e in PROTOCOLS["standard"]]
    assert [s.attack for s in result.stages] == names
    assert [p.index for p in result.points] == list(range(len(data[1])))
    assert [p.label for p in result.points] == data[1].tolist()
    assert all(type(p.queries) is int for p in result.points)  # counts, written as JSON integers
    assert result.check_details["too_few_classes"] == {"num_classes": 10, "needed": 10}
    for p in result.points:
        assert p.broken_by in (None, "clean", *names)
        assert p.robust == (p.broken_by is None)
        if p.broken_by in names:  # broken within the budget
            assert p.norm is not None and p.norm <= result.eps + 1e-5
        else:
            assert p.norm is None
    accuracies = [result.clean_accuracy] + [s.robust_accuracy for s in result.stages]
    assert accuracies == sorted(accuracies, reverse=True)
    assert result.stages[-1].robust_accuracy == result.robust_accuracy
    assert sum(s.broken for s in result.stages) == sum(p.clean_correct and not p.robust for p in result.points)
    # an undefended MLP at eps 0.1: APGD-CE alone breaks most points
    assert result.robust_accuracy < 0.5 * result.clean_accuracy
    # some points stay robust at eps 0.1, so every attack of the version ran on some point
    assert result.robust_accuracy > 0 and all(s.forward_samples > 0 for s in result.stages)
    assert all(s.backward_samples > 0 for s in result.stages if s.attack != "square")


def test_record_round_trips(standard_runs, tmp_path):
    result, _ = standard_runs
    path = result.save(tmp_path / "record.json")
    assert EvaluationResult.load(path) == result
    assert json.loads(path.read_text()) == result.to_dict()
    assert [f.name for f in _files_under(tmp_path)] == ["record.json"]  # no temporary file left


def test_out_writes_the_record_where_record_path_says(tmp_path, data, mlp, monkeypatch):
    _fgsm_only(monkeypatch)
    x, y = data
    result = evaluate(mlp, x=x, y=y, threat_model="linf", out=tmp_path, journal=tmp_path / "j.journal",
                      model_info={"id": "TinyMLP"}, progress=False, analysis=False)
    path = record_path(tmp_path, "digits", "linf", "TinyMLP", "standard")
    assert path == tmp_path / "digits" / "Linf" / "TinyMLP.standard.json"  # the canonical name, whatever was typed
    assert _files_under(tmp_path) == [path]  # the journal is gone once the record is written
    assert EvaluationResult.load(path) == result
    assert result.summary().startswith("TinyMLP on digits Linf")  # the id that was asked for, not a title
    with pytest.raises(ValueError, match="L3"):
        record_path(tmp_path, "digits", "L3", "TinyMLP", "standard")


def test_cli_writes_the_record_and_its_journal_where_it_says(tmp_path, capsys, monkeypatch):
    """`--threat-model linf` (any spelling) prints, journals and writes under the canonical Linf/."""
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    _fgsm_only(monkeypatch)
    journals = []
    real_evaluate = runner.evaluate

    def recording(*args, **kwargs):
        journals.append(kwargs["journal"])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", recording)
    assert cli_main(["evaluate", "--model", "tests.runner_models:digits_mlp", "--threat-model", "linf", "--n-examples", "4",
                     "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    (written,) = _files_under(tmp_path)
    assert written.parent == tmp_path / "digits" / "Linf"
    assert f"record written to {written}" in printed
    assert journals == [written.with_suffix(".journal")]


def test_channels_last_gives_the_same_record(data):
    """--channels-last changes the memory layout only: same per-point results on the standard protocol."""
    x, y = data
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(4 * 64, 10)).eval()
    torch.manual_seed(0)
    for p in conv.parameters():
        nn.init.normal_(p, std=0.3)
    plain = evaluate(conv, x=x, y=y, batch_size=20, progress=False, analysis=False, channels_last=False)
    assert not conv[2].weight.is_contiguous(memory_format=torch.channels_last)
    fast = evaluate(conv, x=x, y=y, batch_size=20, progress=False, analysis=False)  # the default: on for a conv net
    assert conv[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert [p.robust for p in fast.points] == [p.robust for p in plain.points]
    assert [p.broken_by for p in fast.points] == [p.broken_by for p in plain.points]


def test_channels_last_by_default_only_for_convolutional_models_on_the_cpu(mlp):
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 10))
    assert runner.uses_channels_last(conv, None) and not runner.uses_channels_last(mlp, None)
    assert runner.uses_channels_last(conv, None, "cpu") and runner.uses_channels_last(conv, None, torch.device("cpu"))
    # on a GPU the model keeps its own layout unless asked (deciding needs no GPU present)
    assert not runner.uses_channels_last(conv, None, "cuda") and not runner.uses_channels_last(conv, None, "cuda:1")
    assert runner.uses_channels_last(mlp, True, "cuda") and runner.uses_channels_last(mlp, True)
    assert not runner.uses_channels_last(conv, False)


def test_compile_option_is_wired(data, mlp, monkeypatch):
    """--compile hands the (channels_last) model to torch.compile; the compiled callable runs the attacks."""
    calls = []

    def fake_compile(model):
        calls.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    _fgsm_only(monkeypatch)
    x, y = data
    evaluate(mlp, x=x, y=y, batch_size=20, progress=False, analysis=False, compile=True)
    assert calls == [mlp]
    monkeypatch.setattr(runner, "evaluate",
                        lambda *a, **k: calls.append({**k, "eps": a[3]}) or (_ for _ in ()).throw(EvaluationError("stop")))
    assert cli_main(["evaluate", "--model", "tests.runner_models:build_mlp", "--n-examples", "2", "--channels-last",
                     "--compile", "--no-progress"]) == 2
    assert calls[-1]["channels_last"] is True and calls[-1]["compile"] is True and calls[-1]["verify"] is False
    assert cli_main(["evaluate", "--model", "tests.runner_models:build_mlp", "--n-examples", "2", "--verify",
                     "--verify-time-limit", "7", "--no-progress"]) == 2
    assert calls[-1]["verify"] is True and calls[-1]["verify_time_limit"] == 7.0 and calls[-1]["eps"] is None
    assert cli_main(["evaluate", "--model", "tests.runner_models:build_mlp", "--eps", "3/20", "--no-progress"]) == 2
    assert calls[-1]["eps"] == pytest.approx(0.15)
    assert calls[-1]["channels_last"] is None and calls[-1]["compile"] is False


def test_cli_prints_each_flag_with_its_explanation(monkeypatch, capsys, tmp_path):
    from benchmark.flags import FLAG_EXPLANATIONS

    _fgsm_only(monkeypatch)
    real = runner.evaluate

    def flagged(*args, **kwargs):
        result = real(*args, **kwargs)
        result.flags.append("softmax_output")
        result.model["fast_fallback"] = "a check fired"
        return result

    monkeypatch.setattr(runner, "evaluate", flagged)
    assert cli_main(["evaluate", "--model", "tests.runner_models:build_mlp", "--n-examples", "2", "--no-progress",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"\n  ! softmax_output: {FLAG_EXPLANATIONS['softmax_output']}\n  'fast' was not run: a check fired\n" in out


def test_cli_refuses_a_factory_that_returns_no_module(capsys):
    with pytest.raises(SystemExit, match="^robench: builtins:dict returned dict, not a torch.nn.Module$"):
        cli_main(["evaluate", "--model", "builtins:dict", "--n-examples", "2", "--no-progress"])
    with pytest.raises(SystemExit, match="^robench: cannot import 'builtins:no_such_factory': "):
        cli_main(["evaluate", "--model", "builtins:no_such_factory", "--n-examples", "2", "--no-progress"])


def test_without_inputs_the_datasets_first_test_points_are_evaluated(mlp, monkeypatch):
    _fgsm_only(monkeypatch)
    x, y = load_dataset("digits", "test", n_examples=6)
    loaded = evaluate(mlp, "digits", n_examples=6, progress=False, analysis=False)
    given = evaluate(mlp, "digits", x=x, y=y, progress=False, analysis=False)
    assert loaded.n_examples == 6 and loaded.points == given.points
    assert [p.label for p in loaded.points] == y.tolist()


def test_cli_failures_are_one_line_with_exit_code_2(capsys, monkeypatch):
    """An unknown zoo name (with the closest names), a CUDA device that is not there: one line, exit code 2."""
    assert cli_main(["evaluate", "--model", "Madry2018Toward", "--dataset", "digits", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("robench evaluate: error: ") and "Madry2018Towards" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main(["evaluate", "--model", "tests.runner_models:build_mlp", "--device", "cuda", "--n-examples", "2",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device is available" in err
    # found by benchmarks/hostile_inputs.py: a zoo model was moved to the missing device first (torch's own
    # message), a huge eps overflowed ("integer division result too large"), a usage error printed the usage
    for argv, says in ((["--model", "LeCun1998Gradient", "--device", "cuda"], "no CUDA device is available"),
                       (["--model", "LeCun1998Gradient", "--eps", "1e400"], "eps '1e400' is too large to be a budget"),
                       (["--model", "LeCun1998Gradient", "--version", "nope"], "invalid choice: 'nope'")):
        try:
            code = cli_main(["evaluate", *argv, "--n-examples", "2", "--no-progress"])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and says in err, err
    with pytest.raises(LookupError):
        cli_main(["--debug", "evaluate", "--model", "Madry2018Toward", "--dataset", "digits", "--no-progress"])


@pytest.mark.parametrize("n, message", [(100_000, "n_examples is 100000, but there are only 500 test points"),
                                        (-3, "n_examples must be a positive integer, got -3"),
                                        (0, "got 0")])
def test_n_examples_beyond_the_data_or_not_positive_is_refused(mlp, n, message):
    """100000 used to run the 500 points without a word; -3 silently dropped the last 3."""
    with pytest.raises(EvaluationError, match=message):
        evaluate(mlp, "digits", n_examples=n, progress=False, analysis=False)


class NaNOffTheGrid(nn.Module):
    """The digits are multiples of 1/16: off that grid (any perturbed input), this model returns NaN."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        off = ((x * 16 - torch.round(x * 16)).abs() > 1e-4).flatten(1).any(1)
        return torch.where(off[:, None], torch.full_like(out, float("nan")), out)


def test_nan_logits_on_perturbed_inputs_count_as_not_robust_and_are_flagged(mlp, data):
    """An all-NaN row's argmax is class 0: it used to pass for a prediction and move robust accuracy."""
    x, y = data
    result = evaluate(NaNOffTheGrid(mlp), "digits", "Linf", x=x, y=y, progress=False, analysis=False)
    attacked = [p for p in result.points if p.clean_correct]
    assert attacked and all(p.not_evaluable and not p.robust and p.norm is None for p in attacked)
    assert result.robust_accuracy == 0.0 and "non_finite_logits" in result.flags
    assert result.check_details["non_finite_logits"] == {"points_not_evaluable": len(attacked)}
    assert "black_box_beats_white_box" not in result.flags  # none of them is an adversarial example
    plain = evaluate(mlp, "digits", "Linf", x=x, y=y, progress=False, analysis=False)
    assert not any(p.not_evaluable for p in plain.points) and "non_finite_logits" not in plain.flags


def test_one_progress_display_covers_every_chunk_and_the_analysis(mlp, data, capsys):
    """Per-attack bars jumped from 0 to 100% on one chunk and showed nothing during the analysis."""
    x, y = data
    evaluate(mlp, "digits", x=x[:6], y=y[:6], batch_size=3, progress=True, analysis=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    stages = [line.split(":")[0] for line in err.splitlines() if "point-stages" in line]
    assert "apgd-ce on points 0-2" in stages and "square on points 3-5" in stages
    assert "analysis" in stages and stages[-1] == "evaluation done"
    assert all(f"analysis: {part}" in err for part in ANALYSIS_STAGES)
    assert err.count("evaluation done") == 1 and "/42 point-stages" in err  # 4 attacks x 6 points + 3 parts x 6
    assert " 12/42 " in err and " 24/42 " in err and " 42/42 " in err  # after each chunk's attacks, then the analysis


def test_evaluate_zoo_runs_models_in_parallel_workers_and_reuses_up_to_date_records(tmp_path, capsys):
    """What `make run` calls: every zoo model of the board, two at a time, one line per model; a second run
    finds every record up to date and evaluates nothing."""
    argv = ["evaluate-zoo", "--dataset", "digits", "--threat-model", "L2", "--n-examples", "3", "--jobs", "2",
            "--out", str(tmp_path)]
    from model_zoo import list_models

    listed = list_models(dataset="digits", threat_model="L2")
    n = len(listed)
    assert n >= 3
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    assert f"evaluating {n} model(s), 2 at a time" in out
    done = [line for line in out.splitlines() if line.startswith("== ") and ": done in " in line]
    assert len(done) == n and f"[{n}/{n} models" in done[-1]
    assert "about 0 s left]" in done[-1] and "about 0 s left]" not in done[0]  # an estimate until the last one
    assert "point-stages" not in out + err  # one line per model, not each model's progress bars
    records = sorted(p.name for p in (tmp_path / "digits" / "L2").glob("*.json"))
    assert records == sorted(f"{name}.standard.json" for name in listed)
    assert cli_main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("record up to date, skipped") == n and "evaluating" not in again


def test_evaluate_zoo_starts_the_longest_evaluations_first_and_estimates_the_time_left_by_their_costs():
    from robench.cli import _expected_cost, _time_left

    def cost(name, threat_model="Linf"):
        return _expected_cost(name, "digits", threat_model)

    # make run's times on digits (2026-11-30): adversarially trained CNNs 60-100 s, undefended 1-30 s,
    # the certified-trained MLPs 10-17 s, the 20-unit MLPs 1-20 s, corruptions about 1 s
    assert cost("Madry2018Towards") > cost("Zhang2020Towards") > cost("LeCun1998Gradient") > cost("LeCun1998Gradient_mlp20")
    assert cost("Madry2018Towards") > cost("Madry2018Towards_mlp20") > cost("Madry2018Towards", "corruptions")
    assert cost("Rusak2020Simple", "corruptions") == cost("LeCun1998Gradient", "corruptions") < cost("LeCun1998Gradient_mlp20")
    # half the cost done in 100 s: as long again for the other half; a cheap job done says little of a dear one left
    assert _time_left(100.0, 50.0, 50.0) == 100.0 and _time_left(10.0, 1.0, 80.0) == 800.0
    assert _time_left(5.0, 0.0, 10.0) == 0.0
