"""Exact L2 verification of one point: branch and bound over the unstable ReLUs, a convex quadratic program
at each node (issue 18; docs/verification.md).

For a class t, the question is whether some input of the ball ||x - x0|| <= eps (inside the box [low, high],
which holds the ball ∩ [0, 1]) gives z_y - z_t <= 0. The program's variables are the input x and one
activation a_j per unstable ReLU (CROWN's bounds [l, u] straddle 0); a ReLU that is stable over the box
(always on or always off) is folded into the affine maps, so every pre-activation, and the margin, is an
affine function of (x, a). Each node of the search fixes some unstable ReLUs on (a = z, z >= 0) or off
(a = 0, z <= 0) and relaxes the others to their triangle (a >= 0, a >= z, (u - l) a - u z <= -u l); HiGHS
minimises ||x - x0||² over it, a convex QP:
- no solution, or a minimum above eps²: no input of the ball reaches the margin in this node: pruned;
- a minimiser where every relaxed ReLU is exact (a = max(z, 0)) is a real input of the network at distance
  <= eps with margin <= 0: the model's own forward pass confirms it (or the point on the same ray at the
  ball's edge), else the node stays open, with the reason;
- otherwise the ReLU whose relaxation is most violated there is fixed both ways (two children).
Every node pruned for every class is a proof. A node can always be split until no ReLU is relaxed, where
the program is exact, so the search ends; the time limit leaves the point undecided.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .bounds import ReluNetwork
from .milp import BROKEN, ROBUST, UNDECIDED, _highs, set_time_left

__all__ = ["decide_l2", "unstable_relus"]

#: a relaxed ReLU counts as exact at a solution when a - max(z, 0) is below this
_EXACT = 1e-7
#: a node is pruned when its squared distance is above eps² (1 + this): HiGHS's QP tolerance is far below it
_PRUNE = 1e-6
#: when HiGHS's QP solver stops with a solution infeasible by more than its default tolerance (1e-7), the
#: node is solved again with this tolerance, and pruned only when its squared distance is above
#: eps² (1 + _LOOSE_PRUNE): the set it solved over is larger by about the tolerance, far below that margin
_LOOSE, _LOOSE_PRUNE = 1e-5, 1e-3
_DEFAULT_TOLERANCE = 1e-7
#: HiGHS's active-set QP solver cycles on some of these programs with its default proximal term (1e-7) and
#: not with this one. The term adds at most _REGULARIZATION ||v||² to the minimum, so a node is pruned only
#: above eps² (1 + _PRUNE) + _REGULARIZATION max ||v||² over the variables' box (about 1e-3 on digits)
_REGULARIZATION = 1e-5


def unstable_relus(bounds: list[tuple[np.ndarray, np.ndarray]], net: ReluNetwork) -> int:
    """How many ReLUs the search may split (those whose bounds straddle 0)."""
    return int(sum(((lo < 0) & (hi > 0) & net.relu[k].numpy()).sum() for k, (lo, hi) in enumerate(bounds)))


class _Program:
    """For one point and class: each unstable ReLU's pre-activation z_j = p_j · v + q_j over the variables
    v = (x, a_1, ..., a_U), its bounds [l_j, u_j], and the margin g · v + g0."""

    def __init__(self, net: ReluNetwork, bounds: list[tuple[np.ndarray, np.ndarray]], y: int, t: int, d: int):
        masks = [net.relu[k].numpy() for k in range(len(bounds))]
        unstable = [np.flatnonzero(mask & (lo < 0) & (hi > 0)) for mask, (lo, hi) in zip(masks, bounds)]
        self.d, self.width = d, d + sum(len(u) for u in unstable)
        m = np.zeros((d, self.width))  # the current layer's values: m @ v + c
        m[:, :d] = np.eye(d)
        c = np.zeros(d)
        pre, const, lows, highs = [], [], [], []
        for k, (lo, hi) in enumerate(bounds):
            w, b = net.weights[k].numpy(), net.biases[k].numpy()
            m, c = w @ m, w @ c + b
            keep = np.where(masks[k] & (hi <= 0), 0.0, 1.0)  # an always-off ReLU gives 0
            first = d + len(pre)  # the column of this layer's first unstable ReLU
            pre += [m[j].copy() for j in unstable[k]]
            const += [float(c[j]) for j in unstable[k]]
            lows += [float(lo[j]) for j in unstable[k]]
            highs += [float(hi[j]) for j in unstable[k]]
            m, c = keep[:, None] * m, keep * c
            for n, j in enumerate(unstable[k]):  # an unstable ReLU's output is its own variable
                m[j], c[j] = 0.0, 0.0
                m[j, first + n] = 1.0
        w, b = net.weights[-1].numpy(), net.biases[-1].numpy()
        self.margin, self.margin_const = (w[y] - w[t]) @ m, float((w[y] - w[t]) @ c + b[y] - b[t])
        self.pre, self.const = np.array(pre).reshape(-1, self.width), np.array(const)
        self.low, self.high = np.array(lows), np.array(highs)
        #: twice each unstable ReLU's triangle area: how loose its relaxation is
        self.area = -self.low * self.high

    @property
    def relus(self) -> int:
        return len(self.low)

    def solver(self, x0: np.ndarray, box_low: np.ndarray, box_high: np.ndarray):
        """HiGHS holding min ||x - x0||² over the root node; rows 2j and 2j+1 are ReLU j's a - z >= 0 and its
        triangle's top; the last row is margin <= 0. (With a >= 0 from its column, a = z implies z >= 0 and
        a = 0 implies z <= 0: fixing a ReLU needs no more rows.)"""
        import highspy

        d, u_count = self.d, self.relus
        rows, lower, upper = [], [], []
        for j in range(u_count):
            unit = np.zeros(self.width)
            unit[d + j] = 1.0
            l, u, p, q = self.low[j], self.high[j], self.pre[j], self.const[j]
            rows += [unit - p, (u - l) * unit - u * p]
            lower += [q, -np.inf]
            upper += [np.inf, u * q - u * l]
        rows.append(self.margin)
        lower.append(-np.inf)
        upper.append(-self.margin_const)
        matrix = np.array(rows)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.width, len(rows)
        cost = np.zeros(self.width)
        cost[:d] = -2.0 * x0
        lp.col_cost_, lp.offset_ = cost, float(x0 @ x0)
        lp.col_lower_ = np.concatenate([box_low, np.zeros(u_count)])
        lp.col_upper_ = np.concatenate([box_high, self.high])
        lp.row_lower_ = np.clip(np.array(lower), -highspy.kHighsInf, highspy.kHighsInf)
        lp.row_upper_ = np.clip(np.array(upper), -highspy.kHighsInf, highspy.kHighsInf)
        nz = matrix != 0.0
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int32)
        lp.a_matrix_.index_ = np.nonzero(nz)[1].astype(np.int32)
        lp.a_matrix_.value_ = matrix[nz]
        hessian = highspy.HighsHessian()  # ½ v'Qv with Q = 2 I on the input's columns
        hessian.dim_, hessian.format_ = self.width, highspy.HessianFormat.kTriangular
        hessian.start_ = np.concatenate([np.arange(d + 1), np.full(u_count, d)]).astype(np.int32)
        hessian.index_ = np.arange(d, dtype=np.int32)
        hessian.value_ = np.full(d, 2.0)
        model = highspy.HighsModel()
        model.lp_, model.hessian_ = lp, hessian
        solver = _highs()
        solver.passModel(model)
        return solver


def decide_l2(net: ReluNetwork, x0: np.ndarray, y: int, bounds: list[tuple[np.ndarray, np.ndarray]], low: np.ndarray,
              high: np.ndarray, classify: Callable[[np.ndarray], int], eps: float, targets: list[int],
              deadline: float) -> tuple[str, np.ndarray | None, int | None, str]:
    """(status, counterexample, its label, reason) for the L2 ball of radius ``eps`` around ``x0`` inside the
    box [low, high]; status is "robust", "broken" or "undecided" (``benchmark.milp``'s constants).
    ``deadline``: a time.perf_counter() value."""
    d = len(x0)
    reasons: list[str] = []
    for t in targets:
        program = _Program(net, bounds, y, t, d)
        solver = program.solver(x0, low, high)
        solver.setOptionValue("qp_regularization_value", _REGULARIZATION)
        lp = solver.getLp()
        col_lower, col_upper = np.asarray(lp.col_lower_).copy(), np.asarray(lp.col_upper_).copy()
        row_lower, row_upper = np.asarray(lp.row_lower_).copy(), np.asarray(lp.row_upper_).copy()
        columns, row_ids = np.arange(len(col_lower), dtype=np.int32), np.arange(len(row_lower), dtype=np.int32)
        open_reason = ""
        stack: list[dict[int, bool]] = [{}]  # each node: unstable ReLU -> fixed on (True) or off (False)
        while stack:
            if time.perf_counter() > deadline:
                return UNDECIDED, None, None, "time limit"
            fixed = stack.pop()
            node_col_upper, node_row_upper = col_upper.copy(), row_upper.copy()
            for j, on in fixed.items():
                if on:  # a - z <= 0 beside a - z >= 0: a = z (and so z = a >= 0)
                    node_row_upper[2 * j] = program.const[j]
                else:  # a = 0 (and so z <= a = 0)
                    node_col_upper[d + j] = 0.0
            solver.changeColsBounds(len(columns), columns, col_lower, node_col_upper)
            solver.changeRowsBounds(len(row_ids), row_ids, row_lower, node_row_upper)
            status, prune_above = _solve(solver, deadline, eps)
            prune_above += _REGULARIZATION * float(np.maximum(col_lower ** 2, node_col_upper ** 2).sum())
            if status == "infeasible":
                continue
            if status == "time limit":
                return UNDECIDED, None, None, "time limit"
            free = [j for j in range(program.relus) if j not in fixed]
            if status != "optimal":
                if not free:
                    return UNDECIDED, None, None, f"HiGHS stopped with {status} on class {t}"
                split = max(free, key=lambda j: program.area[j])  # the loosest triangle: its halves differ most
                stack += [{**fixed, split: False}, {**fixed, split: True}]
                continue
            if solver.getInfo().objective_function_value > prune_above:
                continue  # the nearest input of this node that reaches the margin lies outside the ball
            v = np.asarray(solver.getSolution().col_value)
            z = program.pre @ v + program.const
            gaps = [(v[d + j] - max(z[j], 0.0), j) for j in free]
            worst, split = max(gaps, default=(0.0, -1))
            if worst > _EXACT:  # the relaxation is loose where the minimiser lies: split that ReLU
                on_side = bool(z[split] > 0)
                stack += [{**fixed, split: not on_side}, {**fixed, split: on_side}]  # the minimiser's side first
                continue
            x = np.clip(v[:d], low, high)
            for candidate in (x, _to_edge(x, x0, eps, low, high)):
                if np.linalg.norm(candidate - x0) <= eps * (1 + 1e-9) and (label := classify(candidate)) != y:
                    return BROKEN, candidate, int(label), ""
            beyond = float(np.linalg.norm(x - x0)) - eps
            open_reason = (f"the program's counterexample for class {t} is still classified {y} by the model (rounding)"
                           if beyond <= eps * 1e-9 else
                           f"the nearest input of class {t} lies {beyond:.1e} beyond the ball's edge, within the "
                           "solver's tolerance: too close to call")
        if open_reason:
            reasons.append(open_reason)
    if reasons:
        return UNDECIDED, None, None, "; ".join(reasons)
    return ROBUST, None, None, ""


def _solve(solver, deadline: float, eps: float) -> tuple[str, float]:
    """Run HiGHS on the current node: ("optimal" | "infeasible" | "time limit" | HiGHS's status name, the
    squared distance above which the node is pruned)."""
    import highspy

    statuses = highspy.HighsModelStatus
    set_time_left(solver, deadline - time.perf_counter())
    solver.run()
    status, prune_above = solver.getModelStatus(), eps * eps * (1 + _PRUNE)
    if status not in (statuses.kOptimal, statuses.kInfeasible, statuses.kTimeLimit):
        solver.clearSolver()  # HiGHS's QP solver can end a little infeasible: again, from scratch, looser
        solver.setOptionValue("primal_feasibility_tolerance", _LOOSE)
        solver.run()
        solver.setOptionValue("primal_feasibility_tolerance", _DEFAULT_TOLERANCE)
        status, prune_above = solver.getModelStatus(), eps * eps * (1 + _LOOSE_PRUNE)
    names = {statuses.kOptimal: "optimal", statuses.kInfeasible: "infeasible", statuses.kTimeLimit: "time limit"}
    return names.get(status, status.name), prune_above


def _to_edge(x: np.ndarray, x0: np.ndarray, eps: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The point of the ray from x0 through x at distance eps (clipped to the box, which keeps it in the ball): a
    minimiser on the decision boundary may keep its label by rounding; further out the margin is lower."""
    gap = x - x0
    norm = float(np.linalg.norm(gap))
    if norm == 0.0:
        return x
    return np.clip(x0 + gap * (eps * (1 - 1e-9) / norm), low, high)
