"""The evaluation on a CUDA device gives the CPU's answers (skipped where no GPU is present).

Run on a machine with a GPU: ``pytest -m gpu``. Float rounding differs between the devices, so
robust accuracies are compared within a point or two, never bit for bit; what must hold exactly
is everything the rounding cannot move: clean predictions, feasibility, the known minimal
perturbations of a linear model.
"""
from __future__ import annotations

import pytest
import torch

from benchmark import evaluate, load_dataset
from benchmark.protocol import build_attack, get_protocol
from benchmark.threat_models import get_threat_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_each_standard_attack_runs_on_cuda_and_respects_the_exact_minimal_perturbations(linear_model, norm):
    problem = linear_model(n=64)
    p = float("inf") if norm == "Linf" else 2.0
    minimal = problem.min_perturbation(p)
    eps = float(minimal.median())
    model, x, y = problem.model.to(CUDA), problem.x.to(CUDA), problem.y.to(CUDA)
    tm = get_threat_model(norm)
    for entry in get_protocol("standard"):
        attack = build_attack(entry, tm, num_classes=10, seed=0)
        out = attack(model, x, y, eps)
        assert out.x_adv.device == x.device and out.success.device == x.device, entry.name
        assert attack.generator(x.device).device == x.device, entry.name  # random starts drawn on the GPU
        success = out.success.cpu()
        # nothing beyond the exact minimal perturbation can be broken inside the ball ...
        assert not success[minimal > eps * 1.001].any(), entry.name
        # ... and the white-box attacks break every point well inside it (Square: most of them)
        inside = minimal < 0.8 * eps
        if entry.kind == "square":
            assert success[inside].float().mean() >= 0.5, entry.name
        else:
            assert success[inside].all(), entry.name


@pytest.mark.parametrize("model_id", ["LeCun1998Gradient", "Madry2018Towards"])
def test_zoo_evaluation_on_cuda_agrees_with_the_cpu(model_id):
    from model_zoo import load_model

    model = load_model(model_id, dataset="digits", threat_model="Linf")
    runs = {
        device: evaluate(model, "digits", "Linf", n_examples=100, device=device, progress=False, analysis=False)
        for device in ("cpu", "cuda")
    }
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu.device.startswith("cuda")
    assert [p.clean_correct for p in gpu.points] == [p.clean_correct for p in cpu.points]
    assert abs(gpu.robust_accuracy - cpu.robust_accuracy) <= 0.02
    assert gpu.flags == cpu.flags


def test_analysis_channels_last_and_compile_run_on_cuda():
    from model_zoo import load_model

    model = load_model("Madry2018Towards", dataset="digits", threat_model="Linf")
    x, y = load_dataset("digits", "test", n_examples=50)
    plain = evaluate(model, "digits", "Linf", x=x, y=y, device="cuda", progress=False)
    fast = evaluate(model, "digits", "Linf", x=x, y=y, device="cuda", progress=False, analysis=False,
                    channels_last=True, compile=True)
    assert abs(fast.robust_accuracy - plain.robust_accuracy) <= 0.04
    eps_values = [point[0] for point in plain.curve]
    accuracies = [point[1] for point in plain.curve]
    assert eps_values == sorted(eps_values) and accuracies == sorted(accuracies, reverse=True)
    assert plain.baselines and plain.metrics
