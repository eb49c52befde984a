"""Both sides of the truth (issue 18; docs/verification.md): next to the attacks' robust accuracy, an upper
bound, a certified lower bound from CROWN and, for networks small enough, the exact robust accuracy.

``verify_record(model, record, x, y)`` takes an attack record (its per-point results) and decides every
point:

- ``clean``: misclassified without attack;
- ``certified``: CROWN's lower bound of every margin is positive over the eps-ball ∩ [0, 1] (IBP's for
  networks with more than ``MAX_EXACT_RELUS`` ReLUs, where CROWN's dense matrices are too slow);
- ``attacked``: an attack of the protocol broke it;
- ``exact_robust`` / ``exact_broken``: the mixed-integer program (``benchmark.milp``) proved it robust or found a
  counterexample, checked by the model's own forward pass; an ``exact_broken`` point the protocol left robust
  is one the attacks missed, and the record gets the flag ``attacks_missed_points``;
- ``undecided``: the program did not finish within its time limit (or the network is too large for it).

So certified <= exact <= attacked robust accuracy, and exact is known when no point is undecided. A point
certified or proved robust that an attack broke would be a contradiction (a bug in one of them): it
raises. Like the attacks, the run keeps a journal (one line per block of points) and shards the blocks
across torchrun's ranks.
"""
from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from . import distributed as dist_utils
from .bounds import NotVerifiable, ReluNetwork, certify, input_box, to_network
from .journal import Journal, fingerprint_model
from .milp import BROKEN, ROBUST, model_classifier, verify_point
from .record import POINT_STATUSES, EvaluationResult, VerificationDetails
from .threat_models import get_threat_model

__all__ = ["verify_record", "attach", "VerificationError", "MAX_EXACT_RELUS", "POINT_STATUSES", "BLOCK"]

#: networks with more ReLUs than this get IBP's certificate only (CROWN's dense back-substitution took 15 s a
#: point on the 9,344 ReLUs of DigitsCNN width 32): their uncertified points stay undecided
MAX_EXACT_RELUS = 2_000
#: points per journal line (and per torchrun share)
BLOCK = 25


class VerificationError(RuntimeError):
    """The verifier and the attacks contradict each other: a bug in one of them."""


def _decide_block(model: nn.Module, net: ReluNetwork, x: Tensor, y: Tensor, robust: list[bool], clean: list[bool],
                  threat: str, eps: float, time_limit: float, exact: bool) -> list[dict[str, Any]]:
    tm = get_threat_model(threat)
    cert = certify(net, x, y, tm, eps, method="crown" if exact else "ibp")
    low, high = input_box(x, tm, eps)
    classify = model_classifier(model, tuple(x.shape[1:]))
    out = []
    for i in range(len(x)):
        entry: dict[str, Any] = {"status": "", "margin_lower": float(cert.margin_lower[i]), "time_s": 0.0,
                                 "binaries": 0, "counterexample": None, "reason": ""}
        if not clean[i]:
            entry["status"] = "clean"
        elif bool(cert.certified[i]):
            if not robust[i]:
                raise VerificationError(f"point {i} of the block is certified but an attack broke it")
            entry["status"] = "certified"
        elif not robust[i]:
            entry["status"] = "attacked"
        elif not exact:
            entry["status"], entry["reason"] = "undecided", "too many ReLUs for CROWN and exact verification here"
        else:
            result = verify_point(net, x[i], int(y[i]), [(lo[i], hi[i]) for lo, hi in cert.layer_bounds], low[i], high[i],
                                  classify, l2_eps=eps if tm.name == "L2" else None, time_limit=time_limit)
            entry["time_s"], entry["binaries"], entry["reason"] = result.time_s, result.binaries, result.reason
            if result.status == ROBUST:
                entry["status"] = "exact_robust"
            elif result.status == BROKEN:
                entry["status"] = "exact_broken"
                entry["counterexample"] = [float(v) for v in result.x_adv]  # type: ignore[union-attr]
            else:
                entry["status"] = "undecided"
        out.append(entry)
    return out


def verify_record(model: nn.Module, record: EvaluationResult, x: Tensor, y: Tensor, *, time_limit: float = 30.0,
                  journal: str | Path | None = None, max_exact_relus: int = MAX_EXACT_RELUS,
                  shard: bool = True) -> VerificationDetails:
    """Decide every point of ``record`` (an attack record on ``x``, ``y``) and return what the record keeps.

    Not verifiable models (a layer the bounds cannot take) get ``status: not_verifiable`` and the reason.
    ``shard``: under torchrun, every rank takes its share of the blocks (all ranks must call this); rank 0
    gets the result, the others None."""
    start = time.perf_counter()
    if record.eps is None or record.corruptions is not None:
        raise ValueError("only Linf and L2 records can be verified")
    if len(record.points) != len(x):
        raise ValueError(f"the record has {len(record.points)} points for {len(x)} inputs")
    if "randomness" in record.flags:
        return VerificationDetails(status="not_verifiable", time_s=time.perf_counter() - start,
                                   reason="its outputs change between passes (a randomised model): a bound on the "
                                          "network read once says nothing about the next pass")
    model = copy.deepcopy(model).eval().cpu()  # the caller's model stays where it is
    try:
        net = to_network(model, tuple(x.shape[1:]))
    except NotVerifiable as exc:
        return VerificationDetails(status="not_verifiable", reason=str(exc), time_s=time.perf_counter() - start)
    exact = net.num_relus <= max_exact_relus
    robust = [p.robust for p in record.points]
    clean = [p.clean_correct for p in record.points]
    rank, world = dist_utils.rank_and_world() if shard else (0, 1)
    config = {"verify": True, "dataset": record.dataset, "threat_model": record.threat_model, "eps": record.eps,
              "n_examples": len(x), "model": fingerprint_model(model), "time_limit": time_limit, "exact": exact,
              "record": hashlib.sha256(repr([(p.robust, p.clean_correct) for p in record.points]).encode()).hexdigest(),
              "data": fingerprint_model(None, tensors=(x, y))}
    log = Journal(journal, config, rank=rank) if journal is not None else None
    done = log.completed() if log is not None else {}
    blocks = list(range(0, len(x), BLOCK))
    results: dict[int, list[dict[str, Any]]] = {}
    for position, first in enumerate(blocks):
        if position % world != rank:
            continue
        if first in done:
            results[first] = done[first][1]
            continue
        last = first + BLOCK
        results[first] = _decide_block(model, net, x[first:last].cpu(), y[first:last].cpu(), robust[first:last],
                                       clean[first:last], record.threat_model, record.eps, time_limit, exact)
        if log is not None:
            log.append(first, [], results[first])
    if world > 1:
        results = dist_utils.gather_chunks(results)
        if rank != 0:
            return None  # type: ignore[return-value]
    points = [entry for first in sorted(results) for entry in results[first]]
    statuses = [p["status"] for p in points]
    n = len(points)
    count = {s: statuses.count(s) for s in POINT_STATUSES}
    certified = count["certified"] / n if n else 0.0
    undecided = count["undecided"]
    details = VerificationDetails(
        status="verified", method=("crown+bab" if record.threat_model == "L2" else "crown+milp") if exact else "ibp",
        num_relus=net.num_relus,
        certified_accuracy=certified,
        exact_accuracy=(count["certified"] + count["exact_robust"]) / n if n and not undecided else None,
        lower=(count["certified"] + count["exact_robust"]) / n if n else 0.0,
        upper=(count["certified"] + count["exact_robust"] + undecided) / n if n else 0.0,
        undecided=undecided,
        missed=[i for i, s in enumerate(statuses) if s == "exact_broken"],
        statuses=statuses,
        counterexamples={str(i): p["counterexample"] for i, p in enumerate(points) if p["counterexample"] is not None},
        point_times=[round(p["time_s"], 6) for p in points], binaries=[p["binaries"] for p in points],
        reasons={str(i): p["reason"] for i, p in enumerate(points) if p["reason"]},
        time_limit_s=time_limit, time_s=time.perf_counter() - start,
    )
    if log is not None:
        log.finish()
    return details



def attach(record: EvaluationResult, details: VerificationDetails) -> EvaluationResult:
    """The record with its verification, and the flag ``attacks_missed_points`` when the program broke points
    the protocol left robust. The record's robust accuracy stays the attacks'; the leaderboard's best known
    robust accuracy takes the verifier's upper bound, which is below it then."""
    record.verification = details
    if details.missed and "attacks_missed_points" not in record.flags:
        record.flags.append("attacks_missed_points")
        record.check_details["attacks_missed_points"] = {"points_missed": len(details.missed),
                                                         "indices": details.missed[:20]}
    return record
