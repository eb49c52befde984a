"""Certified lower bounds on robust accuracy: interval bound propagation (IBP) and CROWN, written for
feed-forward ReLU networks (issue 18; docs/verification.md).

A model is first read into one canonical form, :class:`ReluNetwork`: affine maps (dense matrices,
float64) with a layer of ReLUs between consecutive ones, where some neurons of a layer may pass through
unchanged. Every supported layer fits it exactly:

- Linear, Conv2d, AvgPool2d, BatchNorm (eval mode), Flatten, Identity, Dropout (eval), and any module that
  declares ``is_affine = True`` (the zoo's Normalize):
  affine maps, read off by applying the layer to the unit vectors, and consecutive ones multiplied into one;
- ReLU: a layer of ReLUs;
- MaxPool2d: a tournament of pairwise maxima, max(a, b) = b + relu(a - b), so each round is an affine map
  and a layer where the differences pass through a ReLU and the b's pass unchanged: exact, with no
  relaxation of its own.

The model's structure is read with torch.fx (the modules above as leaves); a graph that is not a chain of
them (a residual connection, an activation other than ReLU, a function call) raises :class:`NotVerifiable`
with the reason, so the leaderboard shows "not verifiable" instead of a number. Dense matrices limit the
size: a network with more than ``MAX_NEURONS`` neurons in a layer is not verifiable here either.

Bounds hold over the eps-ball around a point intersected with [0, 1]. IBP pushes a box through the network;
CROWN (Zhang et al., NeurIPS 2018) bounds every ReLU's input by back-substitution to the input with linear
relaxations (the upper one the chord, the lower one slope 1 or 0, whichever is closer), layer after layer,
then the margins z_y - z_t the same way. A point is certified when the lower bound of every margin is > 0.
For L2 the lower bound of a linear function over the ball ∩ box is the larger of the ball's (c·x0 - eps ||c||)
and the box's (the ball's bounding box ∩ [0, 1]); both are sound.
"""
from __future__ import annotations

import functools
import math
import operator
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .threat_models import ThreatModel, get_threat_model

__all__ = ["ReluNetwork", "NotVerifiable", "to_network", "interval_bounds", "crown_bounds", "Certification",
           "certify", "MAX_NEURONS", "input_box"]

#: the largest layer (neurons) the dense matrices are built for
MAX_NEURONS = 20_000
#: layers read as affine maps (their output is an affine function of their input in eval mode)
_AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.Identity, nn.Dropout)


class NotVerifiable(ValueError):
    """The model has a part the bound propagation cannot take; the message says which and why."""


@dataclass
class ReluNetwork:
    """x -> W_0 x + b_0 -> act_0 -> W_1 . + b_1 -> ... -> W_L . + b_L (the logits), flat vectors.

    ``relu[k]`` is a bool vector over the outputs of affine k (k < L): True where a ReLU is applied,
    False where the value passes through unchanged."""

    weights: list[Tensor]
    biases: list[Tensor]
    relu: list[Tensor]
    input_shape: tuple[int, ...]

    @functools.cached_property
    def interval_weights(self) -> list[tuple[Tensor, Tensor]]:
        """(W_k, |W_k|) for the interval passes, in CSR form where mostly zeros (a convolution's or a pooling
        tournament's matrix: about 7x faster on DigitsCNN), computed once."""
        return [(_compact(w), _compact(w.abs())) for w in self.weights]

    @property
    def num_relus(self) -> int:
        return int(sum(int(mask.sum()) for mask in self.relu))

    def forward(self, x: Tensor) -> Tensor:
        """The logits of a batch (n, *input_shape), in float64: equal to the model's up to rounding."""
        h = x.reshape(len(x), -1).to(torch.float64)
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if k < len(self.relu):
                h = torch.where(self.relu[k], h.clamp_min(0.0), h)
        return h


# ------------------------------------------------------------------ reading a model

def _declared_affine(m: nn.Module) -> bool:
    """A module that says it computes an affine function of its input (``is_affine = True``, as the zoo's
    Normalize does): read as one, like the layers of ``_AFFINE``."""
    return getattr(m, "is_affine", False) is True


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (isinstance(m, (*_AFFINE, nn.ReLU, nn.MaxPool2d)) or _declared_affine(m)
                or super().is_leaf_module(m, qualified_name))


def _affine_of(layer: Callable[[Tensor], Tensor], shape: tuple[int, ...]) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """The dense matrix and bias of an affine layer on inputs of ``shape``, and its output shape."""
    size = math.prod(shape)
    with torch.no_grad():
        basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
        zero = torch.zeros(1, *shape, dtype=torch.float64)
        bias = layer(zero)
        out_shape = tuple(bias.shape[1:])
        weight = (layer(basis) - bias).reshape(size, -1).T.contiguous()
    return weight, bias.reshape(-1), out_shape


def _pool_windows(pool: nn.MaxPool2d, shape: tuple[int, ...]) -> tuple[list[list[int]], tuple[int, ...]]:
    """Each output of a max pool as the list of the flat input indices it takes the maximum of."""
    if pool.ceil_mode:
        raise NotVerifiable("MaxPool2d with ceil_mode=True is not supported")
    c, h, w = shape
    index = torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w)
    pad = pool.padding if isinstance(pool.padding, tuple) else (pool.padding, pool.padding)
    padded = F.pad(index, (pad[1], pad[1], pad[0], pad[0]), value=-1.0)
    cols = F.unfold(padded.reshape(c, 1, *padded.shape[2:]), pool.kernel_size, dilation=pool.dilation, stride=pool.stride)
    with torch.no_grad():
        out_shape = tuple(pool(torch.zeros(1, c, h, w)).shape[1:])
    windows = [[int(v) for v in cols[ch, :, j].tolist() if v >= 0] for ch in range(c) for j in range(cols.shape[2])]
    return windows, out_shape


class _Builder:
    """Accumulates the canonical form: a pending affine map since the last nonlinearity, then layers."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.weight: Tensor | None = None  # None: the identity (multiplying by an explicit one costs seconds)
        self.bias = torch.zeros(math.prod(shape), dtype=torch.float64)
        self.net = ReluNetwork([], [], [], shape)

    def _then(self, weight: Tensor) -> Tensor:
        """``weight`` applied after the pending map."""
        return weight if self.weight is None else weight @ self.weight

    def affine(self, weight: Tensor, bias: Tensor, out_shape: tuple[int, ...]) -> None:
        self.weight, self.bias = self._then(weight), weight @ self.bias + bias
        self.shape = out_shape

    def nonlinear(self, gather: Tensor | None, mask: Tensor) -> None:
        """Close the pending map with ``gather`` (rows over the current values; None: all of them, as they are)
        and a layer masked by ``mask``."""
        if len(mask) > MAX_NEURONS:
            raise NotVerifiable(f"a layer of {len(mask)} neurons: more than the {MAX_NEURONS} the dense bounds take")
        if gather is None:
            gather = torch.eye(len(self.bias), dtype=torch.float64) if self.weight is None else None
        self.net.weights.append(self.weight if gather is None else self._then(gather))
        self.net.biases.append(self.bias if gather is None else gather @ self.bias)
        self.net.relu.append(mask)
        self.weight, self.bias = None, torch.zeros(len(mask), dtype=torch.float64)

    def relu(self) -> None:
        size = len(self.bias)
        self.nonlinear(None, torch.ones(size, dtype=torch.bool))

    def max_pool(self, windows: list[list[int]], out_shape: tuple[int, ...]) -> None:
        """Pairwise maxima, round after round, until each window holds one value."""

        def matrix(rows: list[dict[int, float]], width: int) -> Tensor:
            dense = torch.zeros(len(rows), width, dtype=torch.float64)
            for r, row in enumerate(rows):
                for column, value in row.items():
                    dense[r, column] += value
            return dense

        size = len(self.bias)
        # each window's candidates, each a sparse row {index: coefficient} over the current values
        current: list[list[dict[int, float]]] = [[{i: 1.0} for i in window] for window in windows]
        while any(len(c) > 1 for c in current):
            rows: list[dict[int, float]] = []
            mask: list[bool] = []
            after: list[list[dict[int, float]]] = []
            for candidates in current:
                combined = []
                for j in range(0, len(candidates) - 1, 2):
                    a, b = candidates[j], candidates[j + 1]
                    difference = dict(a)
                    for key, value in b.items():
                        difference[key] = difference.get(key, 0.0) - value
                    rows += [difference, dict(b)]  # relu(a - b) + b = max(a, b)
                    mask += [True, False]
                    combined.append({len(rows) - 2: 1.0, len(rows) - 1: 1.0})
                if len(candidates) % 2:
                    rows.append(dict(candidates[-1]))
                    mask.append(False)
                    combined.append({len(rows) - 1: 1.0})
                after.append(combined)
            self.nonlinear(matrix(rows, size), torch.tensor(mask))
            current, size = after, len(rows)
        final = matrix([c[0] for c in current], size)
        self.weight, self.bias = self._then(final), final @ self.bias
        self.shape = out_shape

    def finish(self) -> ReluNetwork:
        self.net.weights.append(self._then(torch.eye(len(self.bias), dtype=torch.float64)))
        self.net.biases.append(self.bias)
        return self.net


def to_network(model: nn.Module, input_shape: tuple[int, ...]) -> ReluNetwork:
    """``model`` (read in eval mode) in the canonical form, or :class:`NotVerifiable` naming what is in the way."""
    was_training = model.training
    model.eval()  # BatchNorm and Dropout as the evaluation runs them
    try:
        return _read(model, input_shape)
    finally:
        model.train(was_training)


def _read(model: nn.Module, input_shape: tuple[int, ...]) -> ReluNetwork:
    try:
        graph = torch.fx.GraphModule(model, _LeafTracer().trace(model)).graph
    except Exception as exc:  # fx cannot follow data-dependent control flow
        raise NotVerifiable(f"its forward pass cannot be traced as a fixed graph ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]})") from None
    modules = dict(model.named_modules())
    builder = _Builder(tuple(input_shape))
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise NotVerifiable("the output is not the last layer's")
            break
        if len(node.all_input_nodes) != 1 or node.all_input_nodes[0] is not previous:
            raise NotVerifiable(f"{node.name} takes another input than the layer before it (a branch or a residual "
                                "connection): only chains of layers are supported")
        previous = node
        if node.op == "call_module":
            layer = modules[node.target]
            if isinstance(layer, nn.ReLU):
                builder.relu()
            elif isinstance(layer, nn.MaxPool2d):
                builder.max_pool(*_pool_windows(layer, builder.shape))
            elif isinstance(layer, _AFFINE) or _declared_affine(layer):
                builder.affine(*_affine_of(_as_double(layer), builder.shape))
            else:
                raise NotVerifiable(f"{node.target}: a {type(layer).__name__} layer, which the bounds do not take "
                                    "(Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, BatchNorm, Flatten, Normalize)")
        elif node.op == "call_function" and node.target in (torch.relu, F.relu):
            builder.relu()
        elif node.op == "call_function" and node.target is torch.flatten or \
                node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
            size = math.prod(builder.shape)
            builder.shape = (size,)
        elif node.op == "call_function" and node.target in (operator.getitem,):
            raise NotVerifiable(f"{node.name}: indexing inside the model is not supported")
        else:
            raise NotVerifiable(f"{node.name}: {node.op} {getattr(node.target, '__name__', node.target)!s} is not a layer "
                                "the bounds take")
    return builder.finish()


def _as_double(layer: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(layer).double().eval()


# ------------------------------------------------------------------ bounds

def input_box(x: Tensor, threat_model: ThreatModel, eps: float) -> tuple[Tensor, Tensor]:
    """Per point, the box the eps-ball ∩ [0, 1] lies in (exactly the set for Linf), flat, float64."""
    flat = x.reshape(len(x), -1).to(torch.float64)
    return (flat - eps).clamp(0.0, 1.0), (flat + eps).clamp(0.0, 1.0)


def _linear_lower(coef: Tensor, const: Tensor, x0: Tensor, low: Tensor, high: Tensor, l2_eps: float | None) -> Tensor:
    """The lower bound of coef · x + const (coef (n, m, d), const (n, m)) over the input set of each point."""
    box = (coef.clamp_min(0.0) * low[:, None, :] + coef.clamp_max(0.0) * high[:, None, :]).sum(-1)
    if l2_eps is None:
        return box + const
    ball = torch.einsum("nmd,nd->nm", coef, x0) - l2_eps * coef.norm(dim=-1)
    return torch.maximum(box, ball) + const


def _compact(w: Tensor) -> Tensor:
    """``w`` as a CSR matrix when under a quarter of it is non-zero, else as it is."""
    if w.numel() < 65_536 or float((w != 0).double().mean()) >= 0.25:
        return w
    with warnings.catch_warnings():  # torch marks CSR as beta; matrix products on it are what is used here
        warnings.simplefilter("ignore", UserWarning)
        return w.to_sparse_csr()


def _times_transpose(h: Tensor, w: Tensor) -> Tensor:
    """h @ w.T for a dense or CSR ``w``."""
    return (w @ h.T).T if w.layout == torch.sparse_csr else h @ w.T


def interval_bounds(net: ReluNetwork, low: Tensor, high: Tensor) -> list[tuple[Tensor, Tensor]]:
    """IBP: the bounds of every affine map's output (the last one's are the logits'), given the input box."""
    bounds = []
    for k, ((w, w_abs), b) in enumerate(zip(net.interval_weights, net.biases)):
        centre, radius = (high + low) / 2, (high - low) / 2
        mid, spread = _times_transpose(centre, w) + b, _times_transpose(radius, w_abs)
        lo, hi = mid - spread, mid + spread
        bounds.append((lo, hi))
        if k < len(net.relu):
            low = torch.where(net.relu[k], lo.clamp_min(0.0), lo)
            high = torch.where(net.relu[k], hi.clamp_min(0.0), hi)
    return bounds


def _interval_margin(net: ReluNetwork, objective: Tensor, x0: Tensor, low: Tensor, high: Tensor,
                     l2_eps: float | None) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """IBP's bounds of the ReLU layers' inputs and of the margins, the last affine map merged into the margins
    (objective @ W_L over the box of the last activations, as IBP training does): exact on a linear model."""
    bounds = interval_bounds(net, low, high)[:-1]
    if bounds:
        lo, hi = bounds[-1]
        mask = net.relu[-1]
        low, high = torch.where(mask, lo.clamp_min(0.0), lo), torch.where(mask, hi.clamp_min(0.0), hi)
        l2_eps = None  # the ball is the input's, not the last activations'
    objective = objective.to(torch.float64)
    coef = torch.einsum("nmc,cd->nmd", objective, net.weights[-1])
    const = torch.einsum("nmc,c->nm", objective, net.biases[-1])
    return bounds, _linear_lower(coef, const, x0, low, high, l2_eps)


def _relaxation(mask: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN's linear bounds of each activation a given its input z in [lo, hi]:
    lower slope * z <= a <= upper slope * z + upper intercept."""
    unstable = mask & (lo < 0) & (hi > 0)
    inactive = mask & (hi <= 0)
    upper = torch.where(unstable, hi / (hi - lo).clamp_min(1e-30), torch.ones_like(hi))
    upper = torch.where(inactive, torch.zeros_like(upper), upper)
    intercept = torch.where(unstable, -upper * lo, torch.zeros_like(lo))
    lower = torch.where(unstable, (hi > -lo).to(lo.dtype), upper)  # slope 1 where the upside is larger, else 0
    return lower, upper, intercept


def _back_substitute(net: ReluNetwork, layer: int, coef: Tensor, relax: list[tuple[Tensor, Tensor, Tensor]],
                     x0: Tensor, low: Tensor, high: Tensor, l2_eps: float | None) -> Tensor:
    """Lower bounds of coef · z_layer (coef (n, m, width of affine ``layer``)) over the input set."""
    const = torch.einsum("nmj,j->nm", coef, net.biases[layer])
    coef = torch.einsum("nmj,ji->nmi", coef, net.weights[layer])
    for k in range(layer - 1, -1, -1):
        lower, upper, intercept = relax[k]
        positive, negative = coef.clamp_min(0.0), coef.clamp_max(0.0)
        const = const + torch.einsum("nmj,nj->nm", negative, intercept)
        coef = positive * lower[:, None, :] + negative * upper[:, None, :]
        const = const + torch.einsum("nmj,j->nm", coef, net.biases[k])
        coef = torch.einsum("nmj,ji->nmi", coef, net.weights[k])
    return _linear_lower(coef, const, x0, low, high, l2_eps)


def crown_bounds(net: ReluNetwork, x0: Tensor, low: Tensor, high: Tensor, l2_eps: float | None = None,
                 objective: Tensor | None = None, budget: int = 20_000_000) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    """CROWN: the bounds of every ReLU layer's input and, for ``objective`` (n, m, num_classes), the lower bound
    of objective · logits per point (n, m). The bounds of each layer are the tighter of CROWN's and IBP's.
    ``budget``: about how many numbers a back-substitution holds at once (rows are bounded in chunks)."""
    n = len(x0)
    ibp = interval_bounds(net, low, high)
    layers: list[tuple[Tensor, Tensor]] = []
    relax: list[tuple[Tensor, Tensor, Tensor]] = []
    widest = max(len(b) for b in net.biases)
    chunk = max(1, budget // (n * widest))  # rows bounded at a time: n x chunk x widest numbers in memory
    for k in range(len(net.relu)):
        width = len(net.biases[k])
        lows, highs = [], []
        for start in range(0, width, chunk):
            rows = torch.eye(width, dtype=torch.float64)[start:start + chunk].expand(n, -1, -1)
            lows.append(_back_substitute(net, k, rows, relax, x0, low, high, l2_eps))
            highs.append(-_back_substitute(net, k, -rows, relax, x0, low, high, l2_eps))
        lo = torch.maximum(torch.cat(lows, 1), ibp[k][0])
        hi = torch.minimum(torch.cat(highs, 1), ibp[k][1])
        layers.append((lo, hi))
        relax.append(_relaxation(net.relu[k], lo, hi))
    result = None
    if objective is not None:
        result = _back_substitute(net, len(net.relu), objective.to(torch.float64), relax, x0, low, high, l2_eps)
    return layers, result


def margin_objective(y: Tensor, num_classes: int) -> Tensor:
    """Per point, the rows e_y - e_t for every t != y: (n, num_classes - 1, num_classes)."""
    n = len(y)
    eye = torch.eye(num_classes, dtype=torch.float64)
    rows = eye[y][:, None, :] - eye[None, :, :]  # (n, C, C): row t is e_y - e_t
    keep = torch.ones(n, num_classes, dtype=torch.bool)
    keep[torch.arange(n), y] = False
    return rows[keep].reshape(n, num_classes - 1, num_classes)


@dataclass
class Certification:
    """Per point: whether every margin's lower bound is > 0, and the smallest lower bound."""

    method: str
    certified: Tensor
    #: the lowest lower bound of z_y - z_t over t != y (> 0: certified)
    margin_lower: Tensor
    time_s: float = 0.0
    #: the bounds of each ReLU layer's input, per point (for the exact verification)
    layer_bounds: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    @property
    def certified_accuracy(self) -> float:
        return float(self.certified.double().mean()) if len(self.certified) else 0.0


def certify(model: nn.Module | ReluNetwork, x: Tensor, y: Tensor, threat_model: str | ThreatModel, eps: float,
            method: str = "crown", batch_size: int = 50) -> Certification:
    """Certify each point of ``x`` against every other class within the eps-ball ∩ [0, 1]. A point the model
    misclassifies is never certified. ``method``: "ibp" or "crown"."""
    tm = get_threat_model(threat_model)
    if method not in ("ibp", "crown"):
        raise ValueError(f"unknown method {method!r}; known: ibp, crown")
    net = model if isinstance(model, ReluNetwork) else to_network(model, tuple(x.shape[1:]))
    start = time.perf_counter()
    margins, layer_bounds = [], []
    num_classes = len(net.biases[-1])
    for s in range(0, len(x), batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        x0 = xb.reshape(len(xb), -1).to(torch.float64)
        low, high = input_box(xb, tm, eps)
        objective = margin_objective(yb, num_classes)
        l2_eps = eps if tm.name == "L2" else None
        ibp_layers, ibp_margin = _interval_margin(net, objective, x0, low, high, l2_eps)
        if method == "ibp":
            layers, margin = ibp_layers, ibp_margin
        else:  # the final margins: the tighter of CROWN's and IBP's (both are sound)
            layers, margin = crown_bounds(net, x0, low, high, l2_eps, objective)
            margin = torch.maximum(margin, ibp_margin)
        margins.append(margin.min(1).values)
        layer_bounds.append(layers)
    margin_lower = torch.cat(margins) if margins else torch.zeros(0, dtype=torch.float64)
    merged = [(torch.cat([b[k][0] for b in layer_bounds]), torch.cat([b[k][1] for b in layer_bounds]))
              for k in range(len(net.relu))] if layer_bounds else []
    return Certification(method, margin_lower > 0, margin_lower, time.perf_counter() - start, merged)
