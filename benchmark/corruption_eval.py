"""Accuracy under common corruptions: per (corruption, severity), their mean (the board's number), the
per-corruption means, and the mean corruption error (mCE) against a reference model's errors.

``evaluate_corruptions(model, "digits")`` runs the model on the clean test points and on every set of
digits-C (``benchmark.corruptions``); for CIFAR-10/100 it reads CIFAR-10-C / CIFAR-100-C from
``<data dir>/CIFAR-10-C`` (``CIFAR-100-C``), for ImageNet ImageNet-C from ``<data dir>/ImageNet-C``, one
set at a time; ``sets=`` hands it any other sets (a test's own). The result is an EvaluationResult
with threat model ``corruptions``: ``robust_accuracy`` is the mean over every set, ``corruptions``
keeps, per set, the accuracy, each point's correctness (a hex bit string, point i at bit i) and the
set's sha256, so a record says exactly what it was computed on.

Like the attacks, the run is resumable and shardable: with ``journal=`` each finished set is appended to
the journal (``benchmark.journal``: one "chunk" per set, the set's position as its start), and under
torchrun each rank evaluates every world-th set, rank 0 writing the record.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed as dist_utils
from .budgets import CORRUPTIONS as THREAT_MODEL
from .corruptions import CORRUPTIONS, CORRUPTIONS_3D, CorruptionDataError, digits_c, read_cifar_c, read_imagenet_c
from .journal import Journal, fingerprint_model
from .record import CorruptionDetails, EvaluationResult, library_versions, record_path

__all__ = ["evaluate_corruptions", "mean_corruption_error", "correct_bits", "corruption_sets", "CORRUPTED_FOLDERS",
           "IMAGENET_3DCC_FOLDER",
           "ALEXNET_IMAGENET_C_ERRORS", "default_reference_errors"]

#: a set's images, or a function that reads them when the set's turn comes (ImageNet-C: one set in memory)
SetImages = Union[np.ndarray, Callable[[], np.ndarray]]
#: where each dataset's corrupted sets live under the data folder
CORRUPTED_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C", "imagenet": "ImageNet-C"}
#: where ImageNet-3DCC lives under the data folder (evaluated too when it is there)
IMAGENET_3DCC_FOLDER = "ImageNet-3DCC"
#: AlexNet's error on ImageNet-C per corruption, averaged over the five severities (Hendrycks & Dietterich,
#: ICLR 2019): the reference of the mean corruption error, so AlexNet scores 100. Their mean, 78.90%, is
#: AlexNet's published corruption accuracy of 21.1% seen from the other side. The mCE needs only each
#: corruption's sum over severities, five times this mean.
ALEXNET_IMAGENET_C_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


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


def _as_input(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (n, h, w) or (n, h, w, c) scaled to [0, 1] and laid out NCHW; float tensors as they are."""
    if isinstance(images, Tensor):
        return images.float()
    chunk = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0)
    return chunk.unsqueeze(1) if chunk.ndim == 3 else chunk.permute(0, 3, 1, 2)


def _predict(model: nn.Module, images: np.ndarray | Tensor, device: torch.device, batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(model(_as_input(images[start:start + batch_size]).to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def corruption_sets(dataset: str, data_dir: str | Path | None = None, n_examples: int | None = None,
                    ) -> tuple[dict[tuple[str, int], SetImages], np.ndarray | Tensor, np.ndarray]:
    """The board's corrupted sets of ``dataset`` ({(corruption, severity): images or a reader}), the clean test
    images and the labels, the first ``n_examples`` points of each. For ImageNet, ImageNet-3DCC's 12
    corruptions join ImageNet-C's 15 when ``<data dir>/ImageNet-3DCC`` exists."""
    from .data import data_root, load_dataset

    if dataset == "digits":
        generated, labels = digits_c()
        x, _ = load_dataset("digits", "test")
        clean: np.ndarray | Tensor = np.round(x[:, 0].numpy() * 255).astype(np.uint8)
        sets: dict[tuple[str, int], SetImages] = {
            (name, s): generated[i * 5 + s - 1] for i, name in enumerate(CORRUPTIONS) for s in range(1, 6)}
    elif dataset in ("cifar10", "cifar100"):
        arrays, all_labels = read_cifar_c(data_root(data_dir) / CORRUPTED_FOLDERS[dataset])
        n = len(all_labels) // 5
        labels = np.asarray(all_labels[:n])
        clean, clean_labels = load_dataset(dataset, "test", data_dir=data_dir, download=False)
        if len(clean_labels) != n or not np.array_equal(clean_labels.numpy(), labels):
            raise CorruptionDataError(f"{CORRUPTED_FOLDERS[dataset]}'s labels.npy does not list the {dataset} test set's "
                             f"labels in order ({n} per severity, {len(clean_labels)} test points)")
        sets = {(name, s): arrays[name][(s - 1) * n:s * n] for name in CORRUPTIONS for s in range(1, 6)}
    elif dataset == "imagenet":
        folder = data_root(data_dir) / CORRUPTED_FOLDERS[dataset]
        clean, clean_labels = load_dataset("imagenet", "test", data_dir=data_dir, n_examples=n_examples)
        labels = clean_labels.numpy()
        sets = {(name, s): (lambda name=name, s=s: read_imagenet_c(folder, name, s, n_examples)[0])
                for name in CORRUPTIONS for s in range(1, 6)}
        folder_3d = data_root(data_dir) / IMAGENET_3DCC_FOLDER
        if folder_3d.is_dir():  # the 3D corruptions, when given
            sets.update({(name, s): (lambda name=name, s=s: read_imagenet_c(folder_3d, name, s, n_examples)[0])
                         for name in CORRUPTIONS_3D for s in range(1, 6)})
    else:
        raise ValueError(f"no corrupted sets for {dataset!r}; known: digits, {', '.join(CORRUPTED_FOLDERS)}")
    if n_examples is not None:
        clean, labels = clean[:n_examples], labels[:n_examples]
        sets = {key: (images if callable(images) else images[:n_examples]) for key, images in sets.items()}
    return sets, clean, np.asarray(labels, dtype=np.int64)


def default_reference_errors(dataset: str) -> dict[str, list[float]] | None:
    """The reference errors the board's mCE is computed against: AlexNet's on ImageNet-C; none elsewhere (the
    CIFAR-C and digits-C boards rank by accuracy only, as the field's do)."""
    if dataset != "imagenet":
        return None
    return {name: [error] * 5 for name, error in ALEXNET_IMAGENET_C_ERRORS.items()}


def _check_sets(sets: Mapping[tuple[str, int], SetImages], n: int) -> list[str]:
    names = list(dict.fromkeys(name for name, _ in sets))
    if not names:
        raise ValueError("no corrupted sets given")
    if all(name in CORRUPTIONS_3D for name in names):
        raise ValueError("only ImageNet-3DCC sets given: the board's number is the mean over the common corruptions, "
                         "which 3DCC's sets only accompany")
    for name in names:
        absent = [s for s in range(1, 6) if (name, s) not in sets]
        if absent:
            raise ValueError(f"{name}: severities {absent} missing (every corruption needs 1..5)")
    for key, images in sets.items():
        if not callable(images) and len(images) != n:
            raise ValueError(f"{key[0]}/{key[1]}: {len(images)} images for {n} labels")
    return names


def evaluate_corruptions(
    model: nn.Module, dataset: str = "digits", *, sets: Mapping[tuple[str, int], SetImages] | None = None,
    clean: np.ndarray | Tensor | None = None, labels: np.ndarray | None = None,
    reference_errors: Mapping[str, list[float]] | None = None, n_examples: int | None = None,
    batch_size: int = 500, device: str | torch.device = "cpu", data_dir: str | Path | None = None,
    out: str | Path | None = None, journal: str | Path | None = None, version: str = "standard",
    model_info: Mapping[str, Any] | None = None, channels_last: bool | None = None,
) -> EvaluationResult:
    """Accuracy of ``model`` on the clean points and on each (corruption, severity) set, as a record.

    Without ``sets`` the dataset's own corrupted sets are used (:func:`corruption_sets`); with them, give
    ``clean`` (uint8 images or a float tensor in [0, 1]) and ``labels``. Every corruption needs its five
    severities. ``reference_errors`` ({corruption: errors at severities 1..5}) adds the mCE; on ImageNet-C the
    default is AlexNet's (:data:`ALEXNET_IMAGENET_C_ERRORS`). ``out`` writes the record to
    ``out/<dataset>/corruptions/<model id>.<version>.json``."""
    from .runner import prepare_model, uses_channels_last

    t_start = time.perf_counter()
    if sets is None:
        sets, clean, labels = corruption_sets(dataset, data_dir, n_examples)
        if reference_errors is None:
            reference_errors = default_reference_errors(dataset)
    if clean is None or labels is None:
        raise ValueError("clean images and labels are needed with sets")
    labels = np.asarray(labels, dtype=np.int64)
    names = _check_sets(sets, len(labels))
    device = torch.device(device)
    model = model.eval().to(device)
    info = dict(model_info or {})
    info.setdefault("id", type(model).__name__)
    info["fingerprint"] = fingerprint_model(model)
    channels_last = uses_channels_last(model, channels_last, device)
    model = prepare_model(model, channels_last)  # as evaluate() runs it

    order: list[tuple[str, int] | None] = [None, *((name, s) for name in names for s in range(1, 6))]  # None: clean
    rank, world = dist_utils.rank_and_world()
    config = {"dataset": dataset, "threat_model": THREAT_MODEL, "version": version, "n_examples": len(labels),
              "sets": [f"{k[0]}/{k[1]}" if k else "clean" for k in order], "model": info["fingerprint"],
              "checkpoint_sha256": info.get("checkpoint_sha256"), "channels_last": channels_last,
              "labels": hashlib.sha256(labels.tobytes()).hexdigest()}
    log = Journal(journal, config, rank=rank) if journal is not None else None
    done = log.completed() if log is not None else {}
    results: dict[int, dict[str, Any]] = {}
    for position, key in enumerate(order):
        if position % world != rank:
            continue
        if position in done:
            results[position] = done[position][1][0]
            continue
        images = clean if key is None else sets[key]
        images = images() if callable(images) else images
        if not isinstance(images, Tensor):
            images = np.ascontiguousarray(images, dtype=np.uint8)
        if len(images) != len(labels):
            raise ValueError(f"{key[0] if key else 'clean'}/{key[1] if key else ''}: {len(images)} images for "
                             f"{len(labels)} labels")
        ok = _predict(model, images, device, batch_size) == labels
        results[position] = {"correct": correct_bits(ok), "accuracy": float(ok.mean()) if len(ok) else 0.0,
                             "sha256": hashlib.sha256((images.cpu().numpy() if isinstance(images, Tensor) else images).tobytes()).hexdigest()}
        if log is not None:
            log.append(position, [], [results[position]])
    if world > 1:
        results = dist_utils.gather_chunks(results)
        if rank != 0:
            return None  # type: ignore[return-value]

    by_set = {name: [results[order.index((name, s))]["accuracy"] for s in range(1, 6)] for name in names}
    accuracy = {name: values for name, values in by_set.items() if name not in CORRUPTIONS_3D}
    accuracy_3d = {name: values for name, values in by_set.items() if name in CORRUPTIONS_3D}
    per_corruption = {name: sum(values) / 5 for name, values in accuracy.items()}
    mce = None
    if reference_errors is not None and accuracy:
        mce = mean_corruption_error({n: [1.0 - a for a in v] for n, v in accuracy.items()}, reference_errors)
    details = CorruptionDetails(
        accuracy=accuracy, per_corruption=per_corruption,
        sets_sha256={f"{k[0]}/{k[1]}": results[i]["sha256"] for i, k in enumerate(order) if k is not None},
        correct={("clean" if k is None else f"{k[0]}/{k[1]}"): results[i]["correct"] for i, k in enumerate(order)},
        mce=mce, accuracy_3d_sets=accuracy_3d,
        accuracy_3d=sum(sum(v) / 5 for v in accuracy_3d.values()) / len(accuracy_3d) if accuracy_3d else None)
    result = EvaluationResult(
        dataset=dataset, threat_model=THREAT_MODEL, eps=None, version=version, seed=0, n_examples=len(labels),
        batch_size=batch_size, device=str(device), clean_accuracy=results[0]["accuracy"],
        robust_accuracy=sum(per_corruption.values()) / len(per_corruption),
        model=info, timings={"total_s": time.perf_counter() - t_start}, versions=library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), corruptions=details)
    if out is not None:
        result.save(record_path(out, dataset, THREAT_MODEL, str(info["id"]), version))
    if log is not None:
        log.finish()
    return result
