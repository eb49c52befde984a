"""Accuracy under common corruptions: per (corruption, severity), their mean (the board's number), the
per-corruption means, and the mean corruption error (mCE) against a reference model's errors.

``evaluate_corruptions(model, "digits")`` runs the model on the clean test points and on every set of
digits-C (``benchmark.corruptions``); ``sets=`` hands it any other sets (CIFAR-C read by
``read_cifar_c``, or a test's own). The result keeps, per set, the accuracy, each point's correctness
(a hex bit string, point i at bit i) and the set's sha256, so a result says exactly what it was
computed on. Not yet here: the journal, torchrun sharding, ImageNet-C and the boards (docs/corruptions.md).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .corruptions import CORRUPTIONS, digits_c

__all__ = ["CorruptionResult", "evaluate_corruptions", "mean_corruption_error", "correct_bits"]


@dataclass
class CorruptionResult:
    dataset: str
    n_examples: int
    clean_accuracy: float
    #: corruption -> accuracy at severities 1..5
    accuracy: dict[str, list[float]]
    #: the board's number: the mean over every (corruption, severity) set
    mean_accuracy: float
    #: corruption -> mean over its severities
    per_corruption: dict[str, float]
    #: "corruption/severity" -> sha256 of the set's uint8 images
    sets_sha256: dict[str, str]
    #: "clean" and "corruption/severity" -> each point's correctness, a hex bit string (point i at bit i)
    correct: dict[str, str]
    #: mean corruption error in percent against the reference errors given, else None
    mce: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CorruptionResult":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def correct_bits(correct: np.ndarray) -> str:
    """Each point's correctness as a hex string, point i at bit i (little-endian bytes)."""
    return np.packbits(np.asarray(correct, dtype=bool), bitorder="little").tobytes().hex()


def mean_corruption_error(errors: Mapping[str, list[float]], reference: Mapping[str, list[float]]) -> float:
    """mCE in percent: the mean over corruptions of (sum over severities of the model's error) / (the same
    sum for the reference model, AlexNet on ImageNet-C), so the reference itself scores 100."""
    missing = sorted(set(errors) - set(reference))
    if missing:
        raise ValueError(f"the reference gives no errors for {', '.join(missing)}")
    ratios = []
    for name, values in errors.items():
        denominator = sum(reference[name])
        if not denominator > 0:
            raise ValueError(f"the reference's errors on {name} sum to {denominator}: no ratio")
        ratios.append(sum(values) / denominator)
    return 100.0 * sum(ratios) / len(ratios)


def _predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """Labels for uint8 images (n, h, w) or (n, h, w, c), scaled to [0, 1] and laid out NCHW."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.array(images[start:start + batch_size], dtype=np.uint8)).float().div_(255.0)
            chunk = chunk.unsqueeze(1) if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)
            out.append(model(chunk.to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_corruptions(
    model: nn.Module, dataset: str = "digits", *, sets: Mapping[tuple[str, int], np.ndarray] | None = None,
    clean: np.ndarray | None = None, labels: np.ndarray | None = None, reference_errors: Mapping[str, list[float]] | None = None,
    batch_size: int = 500, device: str | torch.device = "cpu", model_info: Mapping[str, Any] | None = None,
) -> CorruptionResult:
    """Accuracy of ``model`` on the clean points and on each (corruption, severity) set.

    ``dataset="digits"`` uses digits-C and the digits test split; otherwise give ``sets`` ({(corruption,
    severity): uint8 images}), ``clean`` (uint8 images) and ``labels``. Every corruption needs its five
    severities."""
    from .runner import prepare_model, uses_channels_last

    device = torch.device(device)
    model = model.eval().to(device)
    model = prepare_model(model, uses_channels_last(model, None))  # as evaluate() runs it
    if sets is None:
        if dataset != "digits":
            raise ValueError(f"give the corrupted sets of {dataset} (benchmark.corruptions.read_cifar_c)")
        from .data import load_dataset

        generated, labels = digits_c()
        x, _ = load_dataset("digits", "test")
        clean = np.round(x[:, 0].numpy() * 255).astype(np.uint8)
        sets = {(name, s): generated[i * 5 + s - 1] for i, name in enumerate(CORRUPTIONS) for s in range(1, 6)}
    if clean is None or labels is None:
        raise ValueError("clean images and labels are needed with sets")
    labels = np.asarray(labels, dtype=np.int64)
    names = list(dict.fromkeys(name for name, _ in sets))
    for name in names:
        absent = [s for s in range(1, 6) if (name, s) not in sets]
        if absent:
            raise ValueError(f"{name}: severities {absent} missing (every corruption needs 1..5)")
    for key, images in sets.items():
        if len(images) != len(labels):
            raise ValueError(f"{key[0]}/{key[1]}: {len(images)} images for {len(labels)} labels")
    clean_ok = _predict(model, clean, device, batch_size) == labels
    accuracy: dict[str, list[float]] = {}
    correct = {"clean": correct_bits(clean_ok)}
    hashes = {}
    for name in names:
        accuracy[name] = []
        for s in range(1, 6):
            images = np.ascontiguousarray(sets[(name, s)], dtype=np.uint8)
            ok = _predict(model, images, device, batch_size) == labels
            accuracy[name].append(float(ok.mean()))
            correct[f"{name}/{s}"] = correct_bits(ok)
            hashes[f"{name}/{s}"] = hashlib.sha256(images.tobytes()).hexdigest()
    per_corruption = {name: sum(values) / 5 for name, values in accuracy.items()}
    mean = sum(per_corruption.values()) / len(per_corruption)
    mce = None
    if reference_errors is not None:
        mce = mean_corruption_error({n: [1.0 - a for a in v] for n, v in accuracy.items()}, reference_errors)
    return CorruptionResult(
        dataset=dataset, n_examples=len(labels), clean_accuracy=float(clean_ok.mean()), accuracy=accuracy,
        mean_accuracy=mean, per_corruption=per_corruption, sets_sha256=hashes, correct=correct, mce=mce,
        model=dict(model_info or {}), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
