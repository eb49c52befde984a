"""Small deterministic digits models for the runner, resume and torchrun tests.

Subprocesses load them with ``--model tests.runner_models:digits_mlp`` (run from the repository
root). The weights are trained once in the test process (``train_weights``) and handed over in a
safetensors file named by the environment variable ``ROBENCH_TEST_WEIGHTS``, so that every
process evaluates bit-identical weights. ``ROBENCH_TEST_FORWARD_DELAY`` (seconds) slows every
forward pass down with a hook, which leaves the weights and the model's fingerprint untouched:
the resume test uses it to be sure to kill a run in the middle of an attack.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn

from model_zoo.architectures.digits import DigitsMLP

__all__ = ["WEIGHTS_ENV", "DELAY_ENV", "HIDDEN", "build_mlp", "train_weights", "shared_weights", "digits_mlp"]

WEIGHTS_ENV = "ROBENCH_TEST_WEIGHTS"
DELAY_ENV = "ROBENCH_TEST_FORWARD_DELAY"
#: width of the test MLP: small enough to make the protocol cheap, large enough to fit the data
HIDDEN = 32


def build_mlp(seed: int = 0) -> nn.Module:
    """A freshly initialised DigitsMLP; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsMLP(hidden=HIDDEN)


def train_weights(path: str | Path, epochs: int = 15, seed: int = 0) -> nn.Module:
    """Train the test MLP on the digits training split (under a second) and save it to ``path``.

    Plain SGD with momentum written out by hand: torch.optim's first step imports the compiler
    stack, which costs seconds on a loaded machine.
    """
    from safetensors.torch import save_file

    from benchmark.data import load_dataset

    x, y = load_dataset("digits", "train")
    model = build_mlp(seed)
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(64):
            grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[batch]), y[batch]), params)
            with torch.no_grad():
                for p, v, g in zip(params, velocity, grads):
                    p.sub_(0.1 * v.mul_(0.9).add_(g))
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def digits_mlp() -> nn.Module:
    """The factory for ``--model``: the weights in $ROBENCH_TEST_WEIGHTS (seeded init if unset)."""
    model = build_mlp()
    weights = os.environ.get(WEIGHTS_ENV)
    if weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(weights))
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    if delay > 0:
        model.register_forward_pre_hook(lambda module, args: time.sleep(delay))
    return model.eval()


_shared_dir: Path | None = None


def shared_weights() -> Path:
    """The test MLP's weights, trained once per process into a temporary folder removed at exit."""
    global _shared_dir
    if _shared_dir is None:
        import atexit
        import shutil
        import tempfile

        _shared_dir = Path(tempfile.mkdtemp(prefix="robench-test-mlp-"))
        atexit.register(shutil.rmtree, _shared_dir, ignore_errors=True)
        train_weights(_shared_dir / "digits_mlp.safetensors")
    return _shared_dir / "digits_mlp.safetensors"
