"""Normalisation inside the model, so that every zoo model takes inputs in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "NormalizedModel"]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel for NCHW batches.

    mean and std are non-persistent buffers: they follow ``.to(device)`` but stay out of the state
    dict, since they come from the card, not from the checkpoint.
    """

    #: an affine function of its input: the verifier (benchmark.bounds) reads it as one
    is_affine = True

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)} values")
        if any(not float(s) > 0 for s in std):
            raise ValueError(f"std values must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected a batch of shape (n, {self.channels}, height, width) with values in [0, 1], "
                f"got shape {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """``model(normalize(x))``: the zoo's wrapper; the network itself is ``.model``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))
