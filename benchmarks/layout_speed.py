"""Which memory layout makes an attack's model passes faster: the model's own (NCHW) or channels_last.

    python benchmarks/layout_speed.py [--device cpu|cuda] [--repeats 20] [--threads 1]

For the zoo's architectures (random weights: speed does not depend on them), at the batch an attack
runs them with, it times in each layout a forward pass without gradients and a forward and backward
pass to the input's gradient (the parameters frozen, as robench's attacks run them), the median of
``--repeats`` after three warm-ups. The default ``channels_last=None`` of ``evaluate()`` follows these
figures (``benchmark.runner.uses_channels_last``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model_zoo.architectures.digits import DigitsCNN  # noqa: E402
from model_zoo.architectures.preact_resnet import preact_resnet18  # noqa: E402
from model_zoo.architectures.wide_resnet import wrn_28_10  # noqa: E402

# (name, builder, input shape without the batch, batch on the CPU, batch on a GPU)
CASES = (
    ("DigitsCNN (digits)", lambda: DigitsCNN(), (1, 8, 8), 132, 500),
    ("PreActResNet-18 (CIFAR)", lambda: preact_resnet18(), (3, 32, 32), 32, 500),
    ("WRN-28-10 (CIFAR)", lambda: wrn_28_10(), (3, 32, 32), 8, 500),
    ("ResNet-50 (ImageNet, timm)", lambda: timm.create_model("resnet50", pretrained=False), (3, 224, 224), 2, 128),
)


def median_seconds(fn, device: torch.device, repeats: int) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(3):
        once()
    return statistics.median(once() for _ in range(repeats))


def time_layout(model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool, repeats: int):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y)
        torch.autograd.grad(loss, xg)

    return median_seconds(forward, x.device, repeats), median_seconds(forward_backward, x.device, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {name}: median ms per call, NCHW / channels_last")
    print("| model | batch | forward NCHW | forward channels_last | forward+backward NCHW | "
          "forward+backward channels_last | channels_last / NCHW (forward+backward) |\n|---|---|---|---|---|---|---|")
    for label, build, shape, cpu_batch, gpu_batch in CASES:
        batch = gpu_batch if device.type == "cuda" else cpu_batch
        torch.manual_seed(0)
        x = torch.rand(batch, *shape, device=device)
        y = torch.randint(0, 10, (batch,), device=device)  # classes 0-9 exist in every model here
        times = {}
        for cl in (False, True):
            model = build().to(device).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            times[cl] = time_layout(model, x, y, cl, args.repeats)
        (f0, b0), (f1, b1) = times[False], times[True]
        print(f"| {label} | {batch} | {1e3 * f0:.2f} | {1e3 * f1:.2f} | {1e3 * b0:.2f} | {1e3 * b1:.2f} | {b1 / b0:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
