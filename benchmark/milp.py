"""Exact verification of one point by mixed-integer programming (issue 18; docs/verification.md).

For a :class:`benchmark.bounds.ReluNetwork` and a point, the standard formulation (Tjeng, Xiao & Tedrake,
ICLR 2019): the input ranges over the eps-ball ∩ [0, 1]; every affine map is an equality; a ReLU whose input
bounds [l, u] (from CROWN, ``benchmark.bounds``) straddle 0 gets a binary d and a >= 0, a >= z, a <= u d,
a <= z - l (1 - d); a stable one is a = z or a = 0; a neuron that passes through is a = z. For each class t
not yet ruled out, HiGHS minimises the margin z_y - z_t with the objective bound just above 0: "infeasible"
means no input of the set brings the margin below it, a proof; a solution with a negative margin is a
counterexample, which is kept only if the model itself (its own forward pass) misclassifies it.

L2: the ball is not a polyhedron, so ``benchmark.l2_exact`` decides it instead: branch and bound over the
unstable ReLUs, with a convex quadratic program (the smallest distance to the margin's sign change) at
each node.

A point HiGHS cannot decide within the time limit is "undecided", and counted as such.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .bounds import ReluNetwork

__all__ = ["ExactResult", "verify_point", "model_classifier", "ROBUST", "BROKEN", "UNDECIDED"]

ROBUST, BROKEN, UNDECIDED = "robust", "broken", "undecided"
#: a proof needs the margin's minimum above this
_PROOF_MARGIN = 1e-7


@dataclass
class ExactResult:
    status: str
    #: the counterexample (flat, float64) when broken
    x_adv: np.ndarray | None = None
    #: the class it is classified as, when broken
    target: int | None = None
    time_s: float = 0.0
    #: binary variables of the program (the unstable ReLUs)
    binaries: int = 0
    #: why a point is undecided
    reason: str = ""


def _highs():
    """A silent HiGHS instance (its banner goes to the process's stdout when the first one is made)."""
    import highspy

    stdout = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            solver = highspy.Highs()
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("threads", 1)
    return solver


def set_time_left(solver, seconds: float) -> None:
    """Let the next run of ``solver`` take at most ``seconds``: HiGHS's ``time_limit`` counts every run of an
    instance together, so it is set to the instance's run time so far plus ``seconds``."""
    solver.setOptionValue("time_limit", solver.getRunTime() + max(seconds, 1e-3))


class _Program:
    """The network's constraints for one point, as rows of (indices, values, lower, upper)."""

    def __init__(self, net: ReluNetwork, low: np.ndarray, high: np.ndarray, bounds: list[tuple[np.ndarray, np.ndarray]]):
        self.lower: list[float] = list(low)
        self.upper: list[float] = list(high)
        self.integer: list[bool] = [False] * len(low)
        self.rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        self.input = np.arange(len(low))
        previous = self.input
        for k, (lo, hi) in enumerate(bounds):
            w, b = net.weights[k].numpy(), net.biases[k].numpy()
            z = self._vars(lo, hi)
            for j in range(len(z)):  # z_j - w_j . a_prev = b_j
                nz = np.flatnonzero(w[j])
                self.rows.append((np.concatenate([[z[j]], previous[nz]]), np.concatenate([[1.0], -w[j, nz]]), b[j], b[j]))
            mask = net.relu[k].numpy()
            a = self._vars(np.where(mask, np.maximum(lo, 0.0), lo), np.where(mask, np.maximum(hi, 0.0), hi))
            for j in range(len(a)):
                if not mask[j] or lo[j] >= 0:  # passes through, or a ReLU that is always on
                    self.rows.append((np.array([a[j], z[j]]), np.array([1.0, -1.0]), 0.0, 0.0))
                elif hi[j] <= 0:  # always off: its bounds are [0, 0]
                    continue
                else:
                    d = self._vars(np.array([0.0]), np.array([1.0]), integer=True)[0]
                    self.rows.append((np.array([a[j], z[j]]), np.array([1.0, -1.0]), 0.0, np.inf))  # a >= z
                    self.rows.append((np.array([a[j], d]), np.array([1.0, -hi[j]]), -np.inf, 0.0))  # a <= u d
                    self.rows.append((np.array([a[j], z[j], d]), np.array([1.0, -1.0, -lo[j]]), -np.inf, -lo[j]))
            previous = a
        self.last = previous
        self.binaries = sum(self.integer)

    def _vars(self, lo: np.ndarray, hi: np.ndarray, integer: bool = False) -> np.ndarray:
        start = len(self.lower)
        self.lower += [float(v) for v in lo]
        self.upper += [float(v) for v in hi]
        self.integer += [integer] * len(lo)
        return np.arange(start, start + len(lo))

    def solver(self):
        import highspy

        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.lower), len(self.rows)
        lp.col_cost_ = np.zeros(lp.num_col_)
        lp.col_lower_, lp.col_upper_ = np.array(self.lower), np.array(self.upper)
        lp.row_lower_ = np.array([r[2] for r in self.rows], dtype=np.float64).clip(-highspy.kHighsInf, highspy.kHighsInf)
        lp.row_upper_ = np.array([r[3] for r in self.rows], dtype=np.float64).clip(-highspy.kHighsInf, highspy.kHighsInf)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.cumsum([0] + [len(r[0]) for r in self.rows])
        lp.a_matrix_.index_ = np.concatenate([r[0] for r in self.rows] or [np.zeros(0)]).astype(np.int32)
        lp.a_matrix_.value_ = np.concatenate([r[1] for r in self.rows] or [np.zeros(0)]).astype(np.float64)
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in self.integer]
        solver = _highs()
        solver.passModel(lp)
        return solver


def verify_point(net: ReluNetwork, x0: Tensor, y: int, bounds: list[tuple[Tensor, Tensor]], low: Tensor, high: Tensor,
                 classify: Callable[[np.ndarray], int], l2_eps: float | None = None, targets: list[int] | None = None,
                 time_limit: float = 60.0) -> ExactResult:
    """Decide whether some input of the set (the box [low, high], and for L2 the ball of radius ``l2_eps``)
    makes the network's margin z_y - z_t negative for a class t in ``targets`` (default: all but y).
    ``bounds``: the bounds of each ReLU layer's input for this point; ``classify``: the model's own label for a
    flat float64 input, which a counterexample must change."""
    import highspy

    start = time.perf_counter()
    x0n = x0.reshape(-1).double().numpy()
    box_low, box_high = low.reshape(-1).double().numpy(), high.reshape(-1).double().numpy()
    layer_bounds = [(lo.numpy(), hi.numpy()) for lo, hi in bounds]
    num_classes = len(net.biases[-1])
    targets = targets if targets is not None else [c for c in range(num_classes) if c != y]
    if l2_eps is not None:
        from .l2_exact import decide_l2, unstable_relus  # it builds on this module's solver and statuses

        status, x_adv, label, reason = decide_l2(net, x0n, y, layer_bounds, box_low, box_high, classify, l2_eps,
                                                 targets, deadline=start + time_limit)
        if reason == "time limit":
            reason = f"time limit of {time_limit:g} s"
        return ExactResult(status, x_adv=x_adv, target=label, time_s=time.perf_counter() - start,
                           binaries=unstable_relus(layer_bounds, net), reason=reason)
    program = _Program(net, box_low, box_high, layer_bounds)
    solver = program.solver()
    w_last, b_last = net.weights[-1].numpy(), net.biases[-1].numpy()
    reasons: list[str] = []  # why classes were left undecided (the others are still tried: one may break the point)
    for t in targets:
        cost = np.zeros(len(program.lower))
        cost[program.last] = w_last[y] - w_last[t]
        offset = float(b_last[y] - b_last[t])
        solver.changeColsCost(len(cost), np.arange(len(cost), dtype=np.int32), cost)
        solver.setOptionValue("objective_bound", _PROOF_MARGIN - offset)
        remaining = time_limit - (time.perf_counter() - start)
        if remaining <= 0:
            return ExactResult(UNDECIDED, time_s=time.perf_counter() - start, binaries=program.binaries,
                               reason=f"time limit of {time_limit:g} s")
        set_time_left(solver, remaining)
        solver.run()
        status = solver.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible:
            continue  # the objective bound pruned every solution: no input brings the margin to t below it
        if status == highspy.HighsModelStatus.kTimeLimit and solver.getInfo().primal_solution_status == 0:
            return ExactResult(UNDECIDED, time_s=time.perf_counter() - start, binaries=program.binaries,
                               reason=f"time limit of {time_limit:g} s")
        margin = float(solver.getInfo().objective_function_value) + offset
        if status == highspy.HighsModelStatus.kOptimal and margin > _PROOF_MARGIN:
            continue  # the smallest margin over the set is positive: a proof
        x = np.clip(np.asarray(solver.getSolution().col_value)[program.input], box_low, box_high)  # solver tolerance
        if margin < 0:
            label = classify(x)
            if label != y:
                return ExactResult(BROKEN, x_adv=x, target=int(label), time_s=time.perf_counter() - start,
                                   binaries=program.binaries)
            reasons.append(f"the program's counterexample for class {t} is still classified {y} by the model (rounding)")
        elif status != highspy.HighsModelStatus.kOptimal:
            reasons.append(f"HiGHS stopped with {status.name} on class {t}")
        else:
            reasons.append(f"the margin to class {t} reaches {margin:.2e}, within the proof margin of 0")
    if reasons:
        return ExactResult(UNDECIDED, time_s=time.perf_counter() - start, binaries=program.binaries, reason="; ".join(reasons))
    return ExactResult(ROBUST, time_s=time.perf_counter() - start, binaries=program.binaries)


def model_classifier(model: torch.nn.Module, shape: tuple[int, ...]) -> Callable[[np.ndarray], int]:
    """The model's own label for a flat input (the counterexample check)."""
    def classify(x: np.ndarray) -> int:
        with torch.no_grad():
            inputs = torch.from_numpy(np.clip(x, 0.0, 1.0)).float().reshape(1, *shape)
            return int(model(inputs.to(next(model.parameters()).device)).argmax(1).item())

    return classify

