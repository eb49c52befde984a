"""Training losses the recipes need beyond plain cross-entropy, and the input corruptions of ``noise_blur``.

Each loss returns a per-point tensor of shape (n,) (the recipes average it), so that the same
function serves both as a training loss and, with ``loss_and_grad``, as an attack loss.
``gaussian_blur`` and ``noise_blur_corrupt`` are the training-time corruptions of the ``noise_blur``
recipe; all their randomness comes from the generator they are given. ``margin_bounds`` (with
``ibp_schedule``) is the ``ibp`` recipe's: differentiable lower bounds of the margins z_y - z_t over an
eps-ball, by interval bound propagation and CROWN-IBP.
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


# ------------------------------------------------------------------ certified training (ibp)

def ibp_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` in the order its forward pass applies them, for bound propagation.

    Walks ``nn.Sequential`` (nested too), ``DigitsMLP`` (its ``net``), ``DigitsCNN`` (``features`` then
    ``classifier``) and ``NormalizedModel`` (``normalize`` then ``model``), whose forward passes are known to be
    these chains. Any other module must itself be a layer the bounds take (Flatten, Identity, Linear, Conv2d,
    ReLU, MaxPool2d, AvgPool2d, the zoo's Normalize); anything else raises a ValueError naming it, since its
    forward pass may do anything.
    """
    from model_zoo.architectures.digits import DigitsCNN, DigitsMLP
    from model_zoo.normalize import NormalizedModel

    if type(model) is nn.Sequential:  # a subclass may have its own forward
        return [layer for child in model for layer in ibp_layers(child)]
    if type(model) is DigitsMLP:
        return ibp_layers(model.net)
    if type(model) is DigitsCNN:
        return ibp_layers(model.features) + ibp_layers(model.classifier)
    if type(model) is NormalizedModel:
        return ibp_layers(model.normalize) + ibp_layers(model.model)
    if isinstance(model, _ibp_layer_types()):
        _check_layer(model)
        return [model]
    raise ValueError(f"interval bound propagation cannot take a {type(model).__name__} layer (it takes "
                     f"{', '.join(t.__name__ for t in _ibp_layer_types())}, chained in nn.Sequential, DigitsMLP, "
                     "DigitsCNN or NormalizedModel)")


def _ibp_layer_types() -> tuple[type, ...]:
    from model_zoo.normalize import Normalize

    return (nn.Flatten, nn.Identity, nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, Normalize)


def _check_layer(layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        raise ValueError(f"interval bound propagation takes Conv2d with zero padding only, not padding_mode="
                         f"{layer.padding_mode!r}")
    if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
        raise ValueError("interval bound propagation cannot take a MaxPool2d that returns indices")


def _affine(layer: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``layer`` (Linear or Conv2d) applied to ``x`` with the given weight and bias."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def interval_bounds_through(
    layers: list[nn.Module], low: Tensor, high: Tensor, *, center: Tensor | None = None, l2_eps: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Bounds [low, high] of the output of ``layers`` (applied in order) over the input box [low, high]:
    interval bound propagation (Gowal et al. 2018), differentiable in the layers' weights.

    Linear and Conv2d in centre-radius form (W c + b, |W| r); ReLU, MaxPool2d, AvgPool2d, Flatten and the
    zoo's Normalize are monotone (non-decreasing in every input), so they map the two corners. With ``l2_eps``
    the input set is also inside the L2 ball of that radius around ``center`` (the point, shaped like ``low``):
    the first Linear or Conv2d then takes the tighter of the box's bound and the ball's, w · x0 + b -+ eps ||w||_2
    (a Normalize before it maps the ball into one of radius eps / min(std)); every bound holds over ball ∩ box.
    """
    low, high, _ = _propagate(layers, low, high, center, l2_eps)
    return low, high


def _propagate(
    layers: list[nn.Module], low: Tensor, high: Tensor, center: Tensor | None, l2_eps: float | None,
    record: list[tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor, float] | None]:
    """``interval_bounds_through``, also returning the L2 ball (centre, radius) if no affine layer took it, and
    appending to ``record`` the bounds of each layer's input."""
    from model_zoo.normalize import Normalize

    if l2_eps is not None and center is None:
        raise ValueError("an L2 ball needs its center")
    ball = (center, float(l2_eps)) if l2_eps is not None else None
    for layer in layers:
        _check_layer(layer)
        if record is not None:
            record.append((low, high))
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            mid, rad = (high + low) / 2, (high - low) / 2
            mid, rad = _affine(layer, mid, layer.weight, layer.bias), _affine(layer, rad, layer.weight.abs(), None)
            low, high = mid - rad, mid + rad
            if ball is not None:
                point, radius = ball
                image = _affine(layer, point, layer.weight, layer.bias)
                # ||w||_2 of each output over the inputs it sees (a convolution's border outputs see fewer)
                norms = _affine(layer, torch.ones_like(point[:1]), layer.weight.pow(2), None).clamp_min(1e-24).sqrt()
                low, high = torch.maximum(low, image - radius * norms), torch.minimum(high, image + radius * norms)
                ball = None
        elif isinstance(layer, nn.ReLU):
            low, high = F.relu(low), F.relu(high)  # not the layer itself: it may work in place
            ball = None
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            low, high = layer(low), layer(high)
            ball = None
        elif isinstance(layer, (nn.Flatten, nn.Identity, Normalize)):
            low, high = layer(low), layer(high)
            if ball is not None:  # (x - m) / s maps the ball into one of radius eps / min(s)
                scale = float(layer.std.min()) if isinstance(layer, Normalize) else 1.0
                ball = (layer(ball[0]), ball[1] / scale)
        else:
            raise ValueError(f"interval bound propagation cannot take a {type(layer).__name__} layer")
    return low, high, ball


def check_bound_layers(model: nn.Module, crown_ibp: bool = False) -> tuple[list[nn.Module], nn.Linear]:
    """The layers ``margin_bounds`` walks, less the last, and the last (a Linear, merged into the margins); a
    ValueError if the model has a layer the bounds do not take (``ibp_layers``), does not end with a Linear, or,
    with ``crown_ibp``, has a MaxPool2d."""
    layers = ibp_layers(model)
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise ValueError("the bounds merge the last layer into the margins: the model must end with a Linear layer, "
                         f"not {type(layers[-1]).__name__ if layers else 'nothing'}")
    if crown_ibp and any(isinstance(layer, nn.MaxPool2d) for layer in layers):
        raise ValueError("CROWN-IBP has no relaxation of MaxPool2d here (use crown_ibp=False: IBP alone takes it)")
    *body, last = layers
    return body, last


def _margin_rows(last: nn.Linear, y: Tensor) -> tuple[Tensor, Tensor]:
    """The last layer merged into the margins z_y - z_t: rows W_y - W_t (n, C, h) and offsets b_y - b_t (n, C)."""
    rows = last.weight[y][:, None, :] - last.weight[None, :, :]
    if last.bias is None:
        return rows, rows.new_zeros(rows.shape[:2])
    return rows, last.bias[y][:, None] - last.bias[None, :]


def _linear_lower(coef: Tensor, const: Tensor, low: Tensor, high: Tensor, ball: tuple[Tensor, float] | None) -> Tensor:
    """The lower bound of coef · v + const (coef (n, C, d), const (n, C)) over the box [low, high] (n, d) of v
    and, with ``ball`` (centre (n, d), radius), over the ball too: the tighter of the two."""
    mid, rad = ((high + low) / 2).flatten(1), ((high - low) / 2).flatten(1)
    lower = torch.einsum("ncd,nd->nc", coef, mid) - torch.einsum("ncd,nd->nc", coef.abs(), rad) + const
    if ball is not None:
        point, radius = ball
        norms = coef.pow(2).sum(-1).clamp_min(1e-24).sqrt()  # rows of zeros (t = y) without a NaN gradient
        lower = torch.maximum(lower, torch.einsum("ncd,nd->nc", coef, point.flatten(1)) - radius * norms + const)
    return lower


def ibp_margin_lower(
    model: nn.Module, low: Tensor, high: Tensor, y: Tensor, *, center: Tensor | None = None,
    l2_eps: float | None = None,
) -> Tensor:
    """Per point and class t, IBP's lower bound of the margin z_y - z_t over the input set: (n, C), 0 at t = y.

    Interval bound propagation up to the last layer, which must be a Linear; that layer is merged into the
    margins (rows W_y - W_t, offsets b_y - b_t, bounded over the box of its inputs), as Gowal et al. do: tighter
    than subtracting the logits' bounds. The input set is the box [low, high] (n, ...) and, with ``l2_eps``, the
    L2 ball around ``center`` too (``interval_bounds_through``). Differentiable in the model's weights.
    """
    return margin_bounds(model, low, high, y, center=center, l2_eps=l2_eps)[0]


def crown_ibp_margin_lower(
    model: nn.Module, low: Tensor, high: Tensor, y: Tensor, *, center: Tensor | None = None,
    l2_eps: float | None = None,
) -> Tensor:
    """Per point and class t, CROWN-IBP's lower bound of z_y - z_t over the input set (Zhang et al., ICLR 2020):
    (n, C), 0 at t = y; ``ibp_margin_lower``'s arguments."""
    return margin_bounds(model, low, high, y, center=center, l2_eps=l2_eps, crown_ibp=True)[1]


def margin_bounds(
    model: nn.Module, low: Tensor, high: Tensor, y: Tensor, *, center: Tensor | None = None,
    l2_eps: float | None = None, crown_ibp: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """IBP's lower bounds of the margins (``ibp_margin_lower``) and, with ``crown_ibp``, CROWN-IBP's from the same
    interval bounds (else None).

    CROWN-IBP: the margins' rows are carried back from the last layer to the input through every layer, as
    linear functions: an affine layer by its transpose; a ReLU whose input bounds (from IBP) straddle 0 by the
    linear relaxation CROWN uses, the chord u (z - l) / (u - l) above and slope 1 (if u > -l) or 0 below, each
    coefficient taking the side that bounds from below; a stable ReLU exactly. The linear function of the input
    is then bounded over the box (and the L2 ball). MaxPool2d has no relaxation here: CROWN-IBP refuses it.
    """
    from model_zoo.normalize import Normalize

    body, last = check_bound_layers(model, crown_ibp)
    record: list[tuple[Tensor, Tensor]] = []
    top_low, top_high, ball_left = _propagate(body, low, high, center, l2_eps, record)
    rows, offsets = _margin_rows(last, y)
    ibp = _linear_lower(rows, offsets, top_low, top_high, ball_left)
    if not crown_ibp:
        return ibp, None
    coef, const = rows.reshape(*rows.shape[:2], *top_low.shape[1:]), offsets  # (n, C, *shape of the layer's output)
    for layer, (in_low, in_high) in zip(reversed(body), reversed(record)):
        n, c = coef.shape[:2]
        if isinstance(layer, nn.Linear):
            if layer.bias is not None:
                const = const + coef @ layer.bias
            coef = coef @ layer.weight
        elif isinstance(layer, nn.ReLU):
            lo, hi = in_low[:, None], in_high[:, None]
            unstable = (lo < 0) & (hi > 0)
            active = (lo >= 0).to(lo.dtype)
            upper = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), active)
            intercept = torch.where(unstable, -upper * lo, torch.zeros_like(lo))
            lower = torch.where(unstable, (hi > -lo).to(lo.dtype), active)
            positive, negative = coef.clamp_min(0.0), coef.clamp_max(0.0)
            const = const + (negative * intercept).flatten(2).sum(-1)
            coef = positive * lower + negative * upper
        elif isinstance(layer, (nn.Conv2d, nn.AvgPool2d, nn.Flatten, nn.Identity, Normalize)):
            # an affine map f(v) = A v + b: b from f(0), A^T coef as the gradient of coef · f (exact: f is affine)
            shape = in_low.shape[1:]
            with torch.enable_grad():
                zero = coef.new_zeros((1, *shape))
                bias = layer(zero)
                probe = coef.new_zeros((n * c, *shape), requires_grad=True)
                (back,) = torch.autograd.grad(layer(probe), probe, coef.reshape(n * c, *bias.shape[1:]),
                                              create_graph=True)
            const = const + (coef * bias[:, None]).flatten(2).sum(-1)
            coef = back.reshape(n, c, *shape)
        else:
            raise ValueError(f"CROWN-IBP cannot take a {type(layer).__name__} layer")  # MaxPool2d: refused above
    ball = (center, float(l2_eps)) if l2_eps is not None else None
    return ibp, _linear_lower(coef.flatten(2), const, low, high, ball)


def ibp_input_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The box [x - eps, x + eps] ∩ [0, 1] of each point: the Linf ball ∩ [0, 1], the bounding box of the L2 one."""
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def ibp_schedule(
    step: int, steps_per_epoch: int, *, warmup_epochs: int, ramp_epochs: int, eps_train: float, kappa_final: float,
    beta_final: float = 0.0,
) -> tuple[float, float, float]:
    """(eps, kappa, beta) at optimisation step ``step`` (0-based).

    For ``warmup_epochs`` epochs eps is 0, kappa (the clean loss's weight) 1 and beta (CROWN-IBP's weight in the
    bound) 1; then, over ``ramp_epochs`` epochs, all three are linear in the step: eps up to ``eps_train``, kappa
    down to ``kappa_final``, beta down to ``beta_final``; constant after (Gowal et al. 2018; Zhang et al. 2020 for
    beta).
    """
    start, length = warmup_epochs * steps_per_epoch, ramp_epochs * steps_per_epoch
    if length <= 0:
        progress = 1.0 if step >= start else 0.0
    else:
        progress = min(max((step - start) / length, 0.0), 1.0)
    return eps_train * progress, 1.0 - (1.0 - kappa_final) * progress, 1.0 - (1.0 - beta_final) * progress


__all__ += ["ibp_layers", "check_bound_layers", "interval_bounds_through", "ibp_margin_lower", "crown_ibp_margin_lower",
            "margin_bounds", "ibp_input_box", "ibp_schedule"]
