"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box random search.

Only the logits are queried, never gradients, so gradient masking does not stop it. The
margin ``z_y - max_{k != y} z_k`` is driven below zero by random, localised changes of the
perturbation (square windows), each kept only where it lowers the margin. A point is dropped
from the active set (and costs no more queries) as soon as its margin is <= 0.

Queries: ``RunOutput.queries`` counts forward passes per point, the initial one included: a
point broken by the initial perturbation costs 1, a point never broken costs ``n_queries``
per restart (``Attack.__call__`` adds its own success check on top).

Window schedule: the paper halves the window fraction ``p`` after iterations 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 of a 10,000-query run; for another budget ``N`` the iteration
index is rescaled by ``10000 / N`` (the convention of the authors' evaluation setup, where
AutoAttack's 5,000-query Square halves ``p`` after iterations 5, 25, 100, ...).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

from ..threat_models import Linf, ThreatModel
from ._common import auto_max_rows
from .base import FixedBudgetAttack, RunOutput
from .losses import margin

__all__ = ["Square", "p_schedule", "window_side", "nested_rectangles"]

#: iterations (of a 10,000-query run) after which the window fraction p halves
HALVING_ITERATIONS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REFERENCE_BUDGET = 10_000


def p_schedule(iteration: int, n_queries: int, p_init: float) -> float:
    """Window fraction at update ``iteration`` (1-based) of a run of ``n_queries`` queries."""
    scaled = iteration * _REFERENCE_BUDGET / n_queries
    return p_init / 2 ** sum(scaled > t for t in HALVING_ITERATIONS)


def window_side(p: float, h: int, w: int, min_side: int) -> int:
    """Side of a square window covering a fraction ``p`` of the image, kept inside [min_side, min(h, w) - 1]."""
    return min(max(round(math.sqrt(p * h * w)), min_side), min(h, w) - 1)


def nested_rectangles(rows: int, cols: int) -> Tensor:
    """The centre-peaked block: a pixel at Chebyshev ring r from the centre gets sum_{k >= r} 1/(k+1)^2.

    Equivalently, every rectangle of radius k around the centre adds 1/(k+1)^2 to the pixels inside it.
    """
    ring_r = (torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2).abs().floor()
    ring_c = (torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2).abs().floor()
    ring = torch.maximum(ring_r[:, None], ring_c[None, :]).long()
    weights = 1.0 / (torch.arange(int(ring.max()) + 1, dtype=torch.float64) + 1) ** 2
    tail_sums = weights.flip(0).cumsum(0).flip(0)  # tail_sums[r] = sum_{k >= r} weights[k]
    return tail_sums[ring]


@lru_cache(maxsize=64)
def _l2_pattern(side: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Unit-L2 side x side pattern: two nested-rectangle halves of opposite sign (left +, right -).

    Cached (the window side takes few values in a run); callers must not modify the result.
    """
    left = side // 2
    block = torch.cat([nested_rectangles(side, left), -nested_rectangles(side, side - left)], dim=1)
    return (block / block.norm()).to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def _bands(side: int, size: int, device: torch.device) -> Tensor:
    """Boolean (size - side + 1, size): row t marks [t, t + side). Cached; callers must not modify it."""
    starts, cells = torch.arange(size - side + 1, device=device), torch.arange(size, device=device)
    return (cells[None, :] >= starts[:, None]) & (cells[None, :] < starts[:, None] + side)


def _window(top: Tensor, left: Tensor, side: int, h: int, w: int) -> Tensor:
    """Boolean (m, 1, h, w) masks of one side x side window per point, top-left corners (top, left)."""
    rows, cols = _bands(side, h, top.device)[top], _bands(side, w, top.device)[left]
    return (rows[:, :, None] & cols[:, None, :])[:, None]


@lru_cache(maxsize=16)
def _sign_bits(channels: int, device: torch.device) -> Tensor:
    """Boolean (2**channels, channels): row k holds the bits of k, channel i's sign being + where bit i is set."""
    codes = torch.arange(2**channels, device=device)
    return ((codes[:, None] >> torch.arange(channels, device=device)) & 1).bool()


#: Linf updates draw one sign per channel as a code of ``channels`` bits (a table of 2**channels rows)
MAX_LINF_CHANNELS = 16


#: at most this many proposals per point in one round (see :func:`proposals_per_point`)
MAX_PROPOSALS = 64
#: rows a pass may always have: below this a pass of small inputs costs its fixed overhead, not its rows
MIN_PASS_ROWS = 64


def pass_rows(x: Tensor) -> int:
    """The rows a pass may have for the batch ``x`` handed to the attack: its own size or
    :data:`MIN_PASS_ROWS`, whichever is larger, but no more than ``_common.auto_max_rows`` allows
    for inputs of that size on that device (none beyond the batch for ImageNet-sized images)."""
    return min(max(len(x), MIN_PASS_ROWS), auto_max_rows(x))


def proposals_per_point(active: int, rows: int) -> int:
    """Proposals queried per point in one round: as many as keep the round within ``rows`` (:func:`pass_rows`),
    at most :data:`MAX_PROPOSALS`. While most points are still attacked this is 1, the plain algorithm; when
    few remain, their queries share one forward pass instead of paying the fixed cost of a pass each (one
    point's 5,000 queries: 79 passes of 64 rows, not 5,000 of 1)."""
    return max(1, min(MAX_PROPOSALS, rows // max(active, 1)))


def _pick(u: Tensor, k: int) -> Tensor:
    """Uniform integers in [0, k) from uniform numbers in [0, 1)."""
    return (u * k).long().clamp_max(k - 1)


@lru_cache(maxsize=16)
def _window_sides(n_queries: int, p_init: float, h: int, w: int, min_side: int) -> tuple[int, ...]:
    """The window side of every update 0 .. n_queries - 1 (entry 0 unused)."""
    return (0,) + tuple(window_side(p_schedule(i, n_queries, p_init), h, w, min_side) for i in range(1, n_queries))


class _Draws:
    """The uniform numbers of every (point, update) of one restart, drawn from the attack's generator in
    blocks of updates for the whole batch, in order: what a point's update draws does not depend on which
    other points are still attacked, nor on how many proposals a round queries."""

    BLOCK = 256

    def __init__(self, gen: torch.Generator, n: int, width: int, device: torch.device) -> None:
        self.gen, self.n, self.width, self.device = gen, n, width, device
        self.blocks: dict[int, Tensor] = {}
        self.drawn = 0

    def take(self, point: Tensor, update_no: Tensor) -> Tensor:
        """(rows, width): the numbers of update ``update_no[r]`` (1-based) of point ``point[r]``."""
        block, offset = torch.div(update_no - 1, self.BLOCK, rounding_mode="floor"), (update_no - 1) % self.BLOCK
        low, high = int(block.min()), int(block.max())
        while self.drawn <= high:
            self.blocks[self.drawn] = torch.rand((self.n, self.BLOCK, self.width), generator=self.gen, device=self.device)
            self.drawn += 1
        for old in [b for b in self.blocks if b < low]:  # every attacked point is past them
            del self.blocks[old]
        if low == high:
            return self.blocks[low][point, offset]
        out = torch.empty((len(point), self.width), device=self.device)
        for b in range(low, high + 1):
            rows = (block == b).nonzero().flatten()
            out[rows] = self.blocks[b][point[rows], offset[rows]]
        return out


def _sq_norm(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    return (t * t).sum(dim=dims, keepdim=True)


class Square(FixedBudgetAttack):
    """Square Attack for Linf and L2 with the margin loss (untargeted)."""

    name = "square"
    black_box = True

    def __init__(
        self, threat_model: str | ThreatModel, n_queries: int = 5000, p_init: float = 0.8, n_restarts: int = 1, seed: int = 0
    ) -> None:
        super().__init__(threat_model, seed)
        if int(n_queries) < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if not 0 < float(p_init) <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        if int(n_restarts) < 1:
            raise ValueError(f"n_restarts must be >= 1, got {n_restarts}")
        self.n_queries, self.p_init, self.n_restarts = int(n_queries), float(p_init), int(n_restarts)
        self._linf = isinstance(self.threat_model, Linf)

    def run(self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, generator: torch.Generator) -> RunOutput:
        if x.ndim != 4:
            raise ValueError(f"Square needs image batches of shape (n, c, h, w), got shape {tuple(x.shape)}")
        min_side = 1 if self._linf else 3
        if min(x.shape[2:]) - 1 < min_side:
            raise ValueError(f"Square ({self.threat_model}) needs images of at least {min_side + 1}x{min_side + 1} pixels, got {tuple(x.shape[2:])}")
        if self._linf and x.shape[1] > MAX_LINF_CHANNELS:
            raise ValueError(f"Square (Linf) handles images of at most {MAX_LINF_CHANNELS} channels, got {x.shape[1]}")
        x_best = x.clone()
        queries = torch.zeros(len(x), dtype=torch.long, device=x.device)
        todo = torch.arange(len(x), device=x.device)
        for _ in range(self.n_restarts):
            if todo.numel() == 0:
                break
            x_found, fooled = self._attack(model, x[todo], y[todo], eps[todo], generator, queries, todo)
            x_best[todo] = x_found
            todo = todo[~fooled]
        return RunOutput(self.threat_model.project(x_best, x, eps), queries)

    def _attack(
        self, model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, gen: torch.Generator, queries: Tensor, index: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One restart on a batch; updates ``queries[index]``; returns (best points, fooled flags).

        Each point runs its own sequence of updates. While more than half the batch is attacked, every
        point makes one proposal per pass, all at the same update. Then a round queries, per point still
        attacked, ``k`` proposals at once (:func:`proposals_per_point`): its next k updates as they would
        be drawn if each one were rejected. The first accepted one is kept and the ones after it, drawn
        from a point that has since changed, are thrown away; so the result is that of one proposal per
        query whatever k is, and only the passes are fewer."""
        n, c, h, w = x.shape
        eps4 = eps.view(-1, 1, 1, 1)
        x_best = self._init_linf(x, eps4, gen) if self._linf else self._init_l2(x, eps4, gen)
        with torch.no_grad():
            m_best = margin(model(x_best), y)
        out_x, out_m = x_best.clone(), m_best.clone()
        steps = torch.ones(n, dtype=torch.long, device=x.device)  # per point: its next update (1-based)
        # per point: Linf's two window values (the box-clipped x + eps and x - eps); L2's x and eps
        state = [(x + eps4).clamp(0.0, 1.0), (x - eps4).clamp(0.0, 1.0)] if self._linf else [x, eps4]
        update = self._update_linf if self._linf else self._update_l2
        draws = _Draws(gen, n, 4 if self._linf else 5 + c, x.device)
        sides = _window_sides(self.n_queries, self.p_init, h, w, 1 if self._linf else 3)
        rows_per_pass = pass_rows(x)
        ids = torch.arange(n, device=x.device)  # the points still attacked; the tensors below are theirs
        step = steps.clone()
        while True:
            alive = (m_best > 0) & (step < self.n_queries)
            if not bool(alive.all()):  # the one host sync of a pass: finished points leave
                gone = ~alive
                out_x[ids[gone]], out_m[ids[gone]], steps[ids[gone]] = x_best[gone], m_best[gone], step[gone]
                ids, y, x_best, m_best, step = ids[alive], y[alive], x_best[alive], m_best[alive], step[alive]
                state = [t[alive] for t in state]
                if ids.numel() == 0:
                    break
            k = proposals_per_point(len(ids), rows_per_pass)
            if k == 1:  # every point at the same update
                it = int(step[0]) if len(step) else 0
                x_new = update(*state, x_best, sides[it], draws.take(ids, step))
                with torch.no_grad():
                    m_new = margin(model(x_new), y)
                better = m_new < m_best
                x_best = torch.where(better.view(-1, 1, 1, 1), x_new, x_best)
                m_best = torch.where(better, m_new, m_best)
                step = step + 1
                continue
            own = torch.arange(len(ids), device=x.device).repeat_interleave(k)
            update_no = step[own] + torch.arange(k, device=x.device).repeat(len(ids))
            valid = update_no < self.n_queries
            own, update_no = own[valid], update_no[valid]
            u = draws.take(ids[own], update_no)
            row_side = torch.tensor(sides, device=x.device)[update_no]
            x_new = torch.empty((len(own), c, h, w), dtype=x.dtype, device=x.device)
            for side in row_side.unique().tolist():  # the window side changes at a few updates only
                rows = (row_side == side).nonzero().flatten()
                at = own[rows]
                x_new[rows] = update(*(t[at] for t in state), x_best[at], int(side), u[rows])
            with torch.no_grad():
                m_new = margin(model(x_new), y[own])
            # per point, the first accepted proposal (a point's rows are consecutive, in update order)
            accepted = m_new < m_best[own]
            first = torch.full((len(ids),), len(own), dtype=torch.long, device=x.device)
            first.scatter_reduce_(0, own[accepted], accepted.nonzero().flatten(), reduce="amin")
            took = first < len(own)
            rows = first[took]
            x_best[took], m_best[took] = x_new[rows], m_new[rows]
            step = torch.where(took, update_no[first.clamp_max(len(own) - 1)] + 1, (step + k).clamp_max(self.n_queries))
        queries[index] += steps  # the initial query and steps - 1 updates
        return out_x, out_m <= 0

    # --- Linf -------------------------------------------------------------------------------
    @staticmethod
    def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1

    def _init_linf(self, x: Tensor, eps4: Tensor, gen: torch.Generator) -> Tensor:
        n, c, _, w = x.shape
        return (x + eps4 * self._signs((n, c, 1, w), gen, x)).clamp(0.0, 1.0)

    def _update_linf(self, x_plus: Tensor, x_minus: Tensor, x_best: Tensor, side: int, u: Tensor) -> Tensor:
        """One random window set to x + eps or x - eps (box-clipped), one sign per channel; ``u`` holds
        each point's 4 uniform numbers (window row, window column, signs, flip).

        A draw that would leave the window as it is wastes a query: there, the signs of a uniformly
        chosen non-empty set of channels are flipped (the same law as redrawing until something changes).
        """
        m, c, h, w = x_best.shape
        top, left = _pick(u[:, 0], h - side + 1), _pick(u[:, 1], w - side + 1)
        window = _window(top, left, side, h, w)
        bits = _sign_bits(c, x_best.device)
        code, flip = _pick(u[:, 2], 2**c), 1 + _pick(u[:, 3], 2**c - 1)
        values = torch.where(bits[code].view(m, c, 1, 1), x_plus, x_minus)
        unchanged = ~((values != x_best) & window).flatten(1).any(1)
        code = code ^ (flip * unchanged)
        values = torch.where(bits[code].view(m, c, 1, 1), x_plus, x_minus)
        return torch.where(window, values, x_best)

    # --- L2 ---------------------------------------------------------------------------------
    def _init_l2(self, x: Tensor, eps4: Tensor, gen: torch.Generator) -> Tensor:
        """Tiles of size max(3, h // 5), each one pattern with a random sign per channel, scaled to norm eps."""
        n, c, h, w = x.shape
        tile = max(3, min(h, w) // 5)
        pattern = _l2_pattern(tile, x.device, x.dtype)
        r, q = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        base = pattern[(r % tile)[:, None], (q % tile)[None, :]]  # (h, w); edge tiles are cropped
        signs = self._signs((n, c, -(-h // tile), -(-w // tile)), gen, x)
        delta = signs[:, :, r // tile][:, :, :, q // tile] * base
        delta = delta * eps4 / _sq_norm(delta, (1, 2, 3)).sqrt().clamp_min(1e-12)
        return (x + delta).clamp(0.0, 1.0)

    def _update_l2(self, x: Tensor, eps4: Tensor, x_best: Tensor, side: int, u: Tensor) -> Tensor:
        """Move the mass of windows W1 and W2 (and the unused budget) into W1 as a new pattern; ``u`` holds
        each point's 5 + c uniform numbers (the two windows' rows and columns, the transpose, c signs).

        Per channel i: the new content of W1 is  a_i * normalise(rho_i * eta + nu_{W1,i} / ||nu_{W1,i}||)
        with a_i^2 = ||nu_{W1 u W2,i}||^2 + (eps^2 - ||nu||^2) / c, and W2 \\ W1 is emptied, so the
        perturbation's norm becomes exactly eps before the box clipping (which can only shrink it).
        """
        m, c, h, w = x.shape
        nu = x_best - x
        tops, lefts = _pick(u[:, 0:2].T, h - side + 1), _pick(u[:, 2:4].T, w - side + 1)
        w1, w2 = _window(tops[0], lefts[0], side, h, w), _window(tops[1], lefts[1], side, h, w)
        transpose = (u[:, 4] < 0.5).view(m, 1, 1)
        rho = torch.where(u[:, 5:5 + c] < 0.5, -1.0, 1.0).to(x.dtype).view(m, c, 1, 1)
        # the pattern placed at W1 (optionally transposed), zero outside
        pattern = _l2_pattern(side, x.device, x.dtype)
        rel_r = (torch.arange(h, device=x.device)[None, :] - tops[0][:, None]).clamp(0, side - 1)
        rel_c = (torch.arange(w, device=x.device)[None, :] - lefts[0][:, None]).clamp(0, side - 1)
        rr, cc = rel_r[:, :, None], rel_c[:, None, :]
        eta = torch.where(transpose, pattern[cc, rr], pattern[rr, cc])[:, None] * w1
        nu_w1 = nu * w1
        unused = (eps4**2 - _sq_norm(nu, (1, 2, 3))).clamp_min(0.0)
        available = (_sq_norm(nu * (w1 | w2), (2, 3)) + unused / c).sqrt()
        direction = rho * eta + nu_w1 / _sq_norm(nu_w1, (2, 3)).sqrt().clamp_min(1e-12)
        new_w1 = direction * (available / _sq_norm(direction, (2, 3)).sqrt().clamp_min(1e-12))
        nu_new = torch.where(w1, new_w1, torch.where(w2, torch.zeros_like(nu), nu))
        return (x + nu_new).clamp(0.0, 1.0)
