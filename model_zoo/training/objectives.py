"""Training losses the recipes need beyond plain cross-entropy, and the input corruptions of ``noise_blur``.

Each loss returns a per-point tensor of shape (n,) (the recipes average it), so that the same
function serves both as a training loss and, with ``loss_and_grad``, as an attack loss.
``gaussian_blur`` and ``noise_blur_corrupt`` are the training-time corruptions of the ``noise_blur``
recipe; all their randomness comes from the generator they are given.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.attacks._common import loss_and_grad
from benchmark.threat_models import ThreatModel

__all__ = ["soft_cross_entropy", "kl_from_reference", "input_gradient_penalty", "trades_adversary", "gaussian_blur",
           "blur_radius", "noise_blur_corrupt", "CLEAN", "NOISE", "BLUR", "NOISE_AND_BLUR"]


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """-sum_k p_k log softmax(logits)_k: cross-entropy against soft labels (defensive distillation)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1)


def kl_from_reference(logits: Tensor, reference_probs: Tensor) -> Tensor:
    """KL(p || softmax(logits)) = sum_k p_k (log p_k - log q_k), with 0 log 0 = 0 (TRADES' robust term)."""
    log_q = F.log_softmax(logits, dim=1)
    log_p = torch.log(reference_probs.clamp_min(1e-30))
    return (reference_probs * (log_p - log_q)).sum(dim=1)


def input_gradient_penalty(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-point cross-entropy and squared L2 norm of its input gradient, differentiable in the weights.

    The penalty of Ross & Doshi-Velez (2018): ||d CE(f(x), y) / dx||_2^2, computed by double
    backpropagation (the gradient graph is kept so that the penalty can itself be minimised).
    """
    xr = x.detach().requires_grad_(True)
    ce = F.cross_entropy(model(xr), y, reduction="none")
    (grad,) = torch.autograd.grad(ce.sum(), xr, create_graph=True)
    return ce, grad.flatten(1).pow(2).sum(dim=1)


def trades_adversary(
    model: nn.Module,
    x: Tensor,
    eps: float,
    threat_model: ThreatModel,
    n_iter: int,
    step_size: float,
    generator: torch.Generator,
    init_scale: float = 1e-3,
) -> Tensor:
    """TRADES' inner maximisation: ascend KL(f(x) || f(x')) over x' in the eps-ball (Zhang et al. 2019).

    Starts at x + ``init_scale`` * N(0, I) (the paper's small Gaussian start, since the KL's gradient
    vanishes at x' = x) and takes ``n_iter`` steepest-ascent steps of ``step_size * eps``, each
    projected onto the eps-ball intersected with [0, 1]. Returns x' detached.
    """
    with torch.no_grad():
        reference = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    x_adv = threat_model.project(x + init_scale * noise, x, eps)
    for _ in range(n_iter):
        _, grad, _ = loss_and_grad(model, x_adv, reference, kl_from_reference)
        x_adv = threat_model.project(x_adv + step_size * eps * threat_model.steepest_direction(grad), x, eps)
    return x_adv.detach()


# ------------------------------------------------------------------ training-time corruptions (noise_blur)

#: what ``noise_blur_corrupt`` did to an image: nothing (clean), noise only, blur only, blur then noise
CLEAN, NOISE, BLUR, NOISE_AND_BLUR = 0, 1, 2, 3


def blur_radius(blur_max: float) -> int:
    """Half-width of the blur kernel for sigmas up to ``blur_max``: ceil(2.5 sigma), at least 1 pixel."""
    return max(1, math.ceil(2.5 * blur_max))


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Each image of ``x`` (n, c, h, w) blurred by a Gaussian of its own standard deviation ``sigma[i]`` (pixels).

    Separable: a (2 radius + 1)-tap normalised kernel along the rows, then along the columns, one grouped
    ``conv2d`` each, edges repeated (replicate padding). A sigma of 0 leaves the image as it is.
    """
    n, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x.dtype).clamp_min(1e-6)[:, None]                      # 0 would give 0/0 at the centre tap
    kernel = torch.exp(-taps.pow(2) / (2 * s.pow(2)))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n * c, 2 radius + 1)
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def noise_blur_corrupt(
    x: Tensor, generator: torch.Generator, *, sigma_max: float, blur_max: float, clean_fraction: float,
) -> tuple[Tensor, Tensor]:
    """A copy of the batch ``x`` (n, c, h, w) in [0, 1] with most images corrupted, and what each image got.

    round(``clean_fraction`` * n) images, chosen at random, are left exactly as they are. Each of the others
    gets, with equal chance, Gaussian noise, a Gaussian blur, or the blur then the noise: noise of standard
    deviation drawn uniformly in [0, ``sigma_max``] (added per pixel, then clipped to [0, 1]), blur of
    standard deviation drawn uniformly in [0, ``blur_max``] pixels (``gaussian_blur``). Every draw comes from
    ``generator``, the same number of draws for every batch of a size, so a seeded run is reproducible.
    Returns the corrupted batch and a (n,) tensor of CLEAN / NOISE / BLUR / NOISE_AND_BLUR.
    """
    n = len(x)
    n_clean = int(round(clean_fraction * n))
    order = torch.randperm(n, generator=generator)
    kind = torch.randint(NOISE, NOISE_AND_BLUR + 1, (n,), generator=generator)
    kind[order[:n_clean]] = CLEAN
    noise_sigma = sigma_max * torch.rand(n, generator=generator, dtype=x.dtype)
    blur_sigma = blur_max * torch.rand(n, generator=generator, dtype=x.dtype)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    view = (n,) + (1,) * (x.dim() - 1)
    out = x.detach().clone()
    blurred = (kind == BLUR) | (kind == NOISE_AND_BLUR)
    if blur_max > 0 and bool(blurred.any()):
        out[blurred] = gaussian_blur(out[blurred], blur_sigma[blurred], blur_radius(blur_max)).clamp(0.0, 1.0)
    noisy = ((kind == NOISE) | (kind == NOISE_AND_BLUR)).to(x.dtype)
    out = torch.where(noisy.view(view) > 0, (out + (noise_sigma * noisy).view(view) * noise).clamp(0.0, 1.0), out)
    return out, kind
