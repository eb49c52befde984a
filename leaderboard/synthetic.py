"""Synthetic cards and records, for the scale benchmark and the leaderboard's tests.

The numbers are made up (seeded) and never reach a real board: they exist to exercise the
aggregation and the site at a given size.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import random
from typing import Sequence

from benchmark.budgets import BOARDS
from benchmark.protocol import get_protocol
from benchmark.record import CorruptionDetails, EvaluationResult, StageResult
from model_zoo.cards import Architecture, Checkpoint, ModelCard, Paper, Preprocessing, Reported, Training

__all__ = ["make_card", "make_record", "make_corruption_record", "synthetic_board"]


def make_card(
    model_id: str,
    dataset: str = "digits",
    threat_model: str = "Linf",
    *,
    title: str = "A Robust Model",
    link: str = "https://example.org/paper",
    authors: Sequence[str] = ("Ada Lovelace", "Alan Turing"),
    venue: str = "ICLR",
    year: int = 2020,
    additional_data: bool = False,
    bibtex: str | None = None,
    footnote: str | None = None,
    width: int = 32,
) -> ModelCard:
    """A complete digits-style card; the checkpoint hash is derived from the id."""
    eps = BOARDS.get((dataset, threat_model), (0.1, ""))[0]
    # the id and the paper are set without validation: tests put odd ids, hostile links and titles on the site
    paper = Paper.model_construct(title=title, link=link, authors=tuple(authors), venue=venue, year=year, bibtex=bibtex)
    card = ModelCard(
        id="Placeholder2020Id", dataset=dataset, threat_model=threat_model, eps=eps, paper=Paper.model_validate(_VALID_PAPER),
        architecture=Architecture(source="robench", name="digits_cnn", kwargs={"width": width}),
        num_classes=10, preprocessing=Preprocessing(mean=(0.0,), std=(1.0,), input_size=(1, 8, 8)),
        checkpoint=Checkpoint(sha256=hashlib.sha256(model_id.encode()).hexdigest(), format="safetensors",
                              path=f"submissions/{dataset}/{threat_model}/{model_id}.safetensors"),
        training=Training(recipe="pgd_at", epochs=30, seed=0), additional_data=additional_data,
        number_forward_passes=1, license="MIT", reported=Reported(clean_accuracy=0.97, robust_accuracy=None),
        footnote=footnote,
    )
    return card.model_copy(update={"id": model_id, "paper": paper}).read_from(f"submissions/{dataset}/{threat_model}/{model_id}.yaml")


_VALID_PAPER = {"title": "t", "link": "https://example.org", "authors": ["a"], "venue": "v", "year": 2020}


def make_record(
    card: ModelCard,
    clean: float,
    robust: float,
    *,
    version: str = "standard",
    created: str = "2024-01-01T00:00:00+00:00",
    flags: Sequence[str] = (),
    n_examples: int = 500,
    eps: float | None = None,
    curve_steps: int = 4,
) -> EvaluationResult:
    """A record whose stages step down from clean to robust and whose curve falls linearly from clean at
    eps 0 to robust at the record's eps (``curve_steps`` points per eps), then to robust / 2 at 3 eps."""
    eps = card.eps if eps is None else eps
    entries = get_protocol(version)
    stages = []
    for i, entry in enumerate(entries, start=1):
        after = robust + (clean - robust) * (len(entries) - i) / (2 * len(entries))
        stages.append(StageResult(entry.name, dict(entry.settings), after if i < len(entries) else robust))
    curve = []
    for k in range(3 * curve_steps + 1):
        fraction = k / curve_steps
        acc = clean - (clean - robust) * min(fraction, 1.0) - robust * max(fraction - 1.0, 0.0) / 4
        curve.append([eps * fraction, max(acc, 0.0)])
    return EvaluationResult(
        dataset=card.dataset, threat_model=card.threat_model, eps=eps, version=version, seed=0,
        n_examples=n_examples, batch_size=500, device="cpu", clean_accuracy=clean, robust_accuracy=robust,
        stages=stages, flags=list(flags), curve=curve,
        model={"id": card.id, "name": card.paper.title, "checkpoint_sha256": card.checkpoint.sha256},
        created=created,
    )


def make_corruption_record(card: ModelCard, clean: float, accuracy: dict[str, list[float]], *,
                           created: str = "2024-01-01T00:00:00+00:00", n_examples: int = 500,
                           mce: float | None = None) -> EvaluationResult:
    """A corruptions record with the given per-set accuracies (corruption -> severities 1..5) and their means."""
    per_corruption = {name: sum(values) / 5 for name, values in accuracy.items()}
    return EvaluationResult(
        dataset=card.dataset, threat_model="corruptions", eps=None, version="standard", seed=0, n_examples=n_examples,
        batch_size=500, device="cpu", clean_accuracy=clean,
        robust_accuracy=sum(per_corruption.values()) / len(per_corruption),
        model={"id": card.id, "name": card.paper.title, "checkpoint_sha256": card.checkpoint.sha256}, created=created,
        corruptions=CorruptionDetails(accuracy=accuracy, per_corruption=per_corruption, mce=mce),
    )


def synthetic_board(n: int, dataset: str = "digits", threat_model: str = "Linf", seed: int = 0
                    ) -> tuple[list[ModelCard], list[EvaluationResult]]:
    """``n`` models with one standard record each, accuracies drawn from a seeded generator."""
    rng = random.Random(seed)
    start = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
    cards, records = [], []
    for i in range(n):
        card = make_card(f"Model{2000 + i % 25}Synthetic_{i:04d}", dataset, threat_model,
                         title=f"Synthetic defence number {i}", venue=rng.choice(["ICLR", "NeurIPS", "ICML", "arXiv"]),
                         additional_data=rng.random() < 0.3, width=rng.choice([16, 32, 64]))
        clean = round(rng.uniform(0.6, 0.99), 3)
        robust = round(rng.uniform(0.0, clean), 3)
        created = (start + _dt.timedelta(days=i)).isoformat()
        flags = ["black_box_beats_white_box"] if rng.random() < 0.05 else []
        cards.append(card)
        records.append(make_record(card, clean, robust, created=created, flags=flags))
    return cards, records
