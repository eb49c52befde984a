"""External claims submitted by pull request count on a board only once their adversarial examples are checked.

A claim (``submissions/<dataset>/<threat_model>/external/*.yaml``, :mod:`benchmark.external`) says
some attack leaves a zoo model at a robust accuracy. It ranks only when its file names adversarial
examples and :func:`benchmark.external.verify_adversarial` accepts them all, at the board's eps, on
the model's verified checkpoint and the board's test split, here, when the site is built; the board
then counts the robust accuracy the examples *prove* (never the number typed in the file). A claim
without examples, or whose examples fail, is listed in the build notes and ranks nothing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from benchmark.budgets import default_eps
from benchmark.external import ExternalEvaluation

__all__ = ["verify_claims"]


def verify_claims(
    claims: list[ExternalEvaluation], registry: Any = None, data_dir: str | None = None,
) -> tuple[list[ExternalEvaluation], list[str]]:
    """The claims that verify (their robust accuracy replaced by the proven one), and a note per other claim.

    ``registry`` (a :class:`model_zoo.registry.Registry`) is where the claimed models' cards are
    looked up (default: the repository's submissions)."""
    verified: list[ExternalEvaluation] = []
    notes: list[str] = []
    for claim in claims:
        try:
            proven = _proven_robust_accuracy(claim, registry, data_dir)
        except (ValueError, OSError, LookupError, RuntimeError) as exc:
            notes.append(f"{claim.source_file}: not ranked: {' '.join(str(exc).split())}")
            continue
        verified.append(dataclasses.replace(claim, robust_accuracy=proven, attack=f"{claim.attack} (verified)"))
    return verified, notes


def _proven_robust_accuracy(claim: ExternalEvaluation, registry: Any, data_dir: str | None) -> float:
    from benchmark.data import load_dataset
    from benchmark.external import load_adversarial_file, verify_adversarial
    from model_zoo import load_model

    board_eps = default_eps(claim.dataset, claim.threat_model)
    if abs(claim.eps - board_eps) > 1e-9 * board_eps:
        raise ValueError(f"eps {claim.eps:.12g} is not the board's {board_eps:.12g}")
    if not claim.adversarial_examples:
        raise ValueError("no adversarial examples given, so the claim cannot be checked")
    examples = Path(str(claim.source_file)).parent / claim.adversarial_examples
    model = load_model(claim.model_id, dataset=claim.dataset, threat_model=claim.threat_model, registry=registry)
    x, y = load_dataset(claim.dataset, "test", data_dir=data_dir)
    x_adv, indices = load_adversarial_file(examples)
    report = verify_adversarial(model, x, y, x_adv, indices, claim.threat_model, board_eps)
    if not report.ok:
        index, reason = report.rejected[0]
        raise ValueError(f"{len(report.rejected)} of {report.n_examples} adversarial examples rejected "
                         f"(test point {index}: {reason})")
    return report.proven_robust_accuracy
