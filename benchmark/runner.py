"""The evaluation runner: runs a protocol version on a model and writes the result record.

Points are processed in fixed chunks of ``batch_size`` consecutive indices. Every random
number an attack draws comes from a generator seeded by (seed, first index of the chunk,
attack position), so a chunk's results do not depend on which process runs it or when:
a single process, several torchrun ranks, and a run resumed from its journal all give
bit-identical per-point results.
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from . import distributed as dist_utils
from .attacks.base import Attack
from .budgets import default_eps, format_eps, is_corruptions
from .corruptions import CorruptionDataError
from .checks import CheckResult, black_box_check, non_finite_check, run_checks
from .analysis import ANALYSIS_STAGES, analyse
from .data import DATASETS, load_dataset
from .journal import Journal, fingerprint_model
from .progress import Progress
from .protocol import FAST_FALLBACK, AttackEntry, attack_class, build_attack, classes_needed, get_protocol
from .record import EvaluationResult, PointResult, StageResult, library_versions, record_path
from .threat_models import get_threat_model

logger = logging.getLogger(__name__)

__all__ = ["evaluate", "EvaluationError", "prepare_model", "uses_channels_last", "ChannelsLastInputs", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on (default: cuda when there is one); a CUDA device that is not there is an
    EvaluationError saying so, before any model is moved to it."""
    try:
        resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise EvaluationError(f"device {device!r} is not a device name (cpu, cuda, cuda:N): {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {resolved} asked for, but no CUDA device is available here (use --device cpu)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise EvaluationError(f"device {resolved} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


class EvaluationError(ValueError):
    """The model or the inputs cannot be evaluated as given."""


class PassCounter(nn.Module):
    """Wraps a model and counts the samples pushed through forward, with and without autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_samples = 0
        self.backward_samples = 0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.backward_samples += x.shape[0]
        else:
            self.forward_samples += x.shape[0]
        return self.model(x)


class ChannelsLastInputs(nn.Module):
    """Feeds the wrapped model its inputs in the channels_last memory format (the same values).

    With the model's weights converted too, convolutions run in the NHWC layout that oneDNN and
    cuDNN prefer; only the order of float additions can change, never the precision.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def uses_channels_last(model: nn.Module, channels_last: bool | None, device: torch.device | str = "cpu") -> bool:
    """Whether to run ``model`` in the channels_last layout: as asked, or (None, the default) when it has
    a 2-d convolution and runs on the CPU, where oneDNN's NHWC kernels pay: on the zoo's digits CNN, one
    CPU thread, 132 images, a forward pass 5.3 ms instead of 12.5 ms, forward and backward 10.9 ms instead
    of 19.2 ms (max pooling's NCHW kernel alone took a quarter of the latter). On a GPU an attack's
    forward and backward pass in float32 is no faster in channels_last (``benchmarks/layout_speed.py`` on
    an H200: 0.90x to 1.23x the NCHW time, the digits CNN and ResNet-50 slower), so there the model keeps
    its own layout."""
    if channels_last is not None:
        return bool(channels_last)
    return torch.device(device).type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """The model as the attacks will call it: channels_last weights and inputs, and/or ``torch.compile``.

    ``channels_last`` converts the model's 4-d weights in place (as ``evaluate``'s ``.to(device)`` does).
    Both keep float32 (the model's own dtype): they change speed, not precision.
    """
    if channels_last:
        model = ChannelsLastInputs(model.to(memory_format=torch.channels_last)).eval()
    if compile:
        model = torch.compile(model)
    return model


@dataclass
class _StageStats:
    time_s: float = 0.0
    forward_samples: int = 0
    backward_samples: int = 0

    def add(self, other: dict[str, Any]) -> None:
        self.time_s += other["time_s"]
        self.forward_samples += other["forward_samples"]
        self.backward_samples += other["backward_samples"]


def _validate_inputs(x: Tensor, y: Tensor) -> None:
    if not torch.is_tensor(x) or not torch.is_floating_point(x):
        raise EvaluationError(f"inputs must be a float tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4:
        raise EvaluationError(f"inputs must be NCHW (4 dimensions), got shape {tuple(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise EvaluationError(f"inputs must lie in [0, 1], got range [{x.min().item():.4g}, {x.max().item():.4g}]")
    if bool(torch.isnan(x).any()):
        raise EvaluationError(f"inputs must lie in [0, 1], got NaN values in {int(torch.isnan(x).flatten(1).any(1).sum())} points")
    if y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise EvaluationError(f"labels must be an int64 tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")


def _probe_model(model: nn.Module, x: Tensor, num_classes: int) -> None:
    with torch.no_grad():
        out = model(x)
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise EvaluationError(
            f"the model must return logits of shape (batch, {num_classes}), got "
            f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
        )
    if out.shape[1] != num_classes:
        raise EvaluationError(f"the model returns {out.shape[1]} classes but the dataset has {num_classes}")
    if not torch.isfinite(out).all():
        raise EvaluationError("the model returned NaN or infinite logits on clean inputs")


def _attack_chunk(
    model: PassCounter, x: Tensor, y: Tensor, start: int, entries: tuple[AttackEntry, ...], attacks: list[Attack],
    eps: float, seed: int, progress: Progress,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every attack of the protocol on one chunk; return per-point dicts and per-stage stats."""
    n = x.shape[0]
    with torch.no_grad():
        logits = model(x)
    finite = torch.isfinite(logits).all(1)
    if not bool(finite.all()):
        bad = (start + (~finite).nonzero().flatten()[:5]).tolist()
        raise EvaluationError(f"the model returned NaN or infinite logits on clean test points {bad}")
    clean = logits.argmax(1) == y
    robust = clean.clone()
    broken_by: list[str | None] = [None if c else "clean" for c in clean.tolist()]
    not_evaluable = [False] * n
    norm = torch.full((n,), float("nan"), dtype=torch.float64)
    min_norm = torch.full((n,), float("inf"), dtype=torch.float64)
    queries = torch.zeros(n, dtype=torch.long)
    stats = []
    for position, (entry, attack) in enumerate(zip(entries, attacks)):
        progress.stage(f"{entry.name} on points {start}-{start + n - 1}")
        idx = robust.nonzero().flatten()
        f0, b0, t0 = model.forward_samples, model.backward_samples, time.perf_counter()
        if idx.numel():
            gen = attack.generator(x.device, offset=(start + 1) * 1000 + position)
            out = attack(model, x[idx], y[idx], eps, generator=gen)
            queries[idx.cpu()] += out.queries.cpu()
            if out.min_norm is not None:
                min_norm[idx.cpu()] = torch.minimum(min_norm[idx.cpu()], out.min_norm.double().cpu())
            hit = idx[out.success].cpu()
            norm[hit] = out.norm[out.success].double().cpu()
            min_norm[hit] = torch.minimum(min_norm[hit], norm[hit])
            lost = idx[out.non_finite].cpu()  # NaN or infinite logits where the attack left the point
            robust[idx[out.success | out.non_finite]] = False
            for i in hit.tolist() + lost.tolist():
                broken_by[i] = entry.name
            for i in lost.tolist():
                not_evaluable[i] = True
        stats.append({"time_s": time.perf_counter() - t0, "forward_samples": model.forward_samples - f0,
                      "backward_samples": model.backward_samples - b0})
        progress.advance(n)
    columns = zip(y.tolist(), clean.tolist(), robust.tolist(), broken_by, norm.tolist(), queries.tolist(), min_norm.tolist(),
                  not_evaluable)
    points = [{  # one transfer per column, not one device read per value
        "index": start + i, "label": label, "clean_correct": is_clean, "robust": is_robust, "broken_by": by,
        "norm": None if math.isnan(nrm) else nrm, "queries": q, "min_norm": None if math.isinf(mn) else mn,
        "not_evaluable": lost,
    } for i, (label, is_clean, is_robust, by, nrm, q, mn, lost) in enumerate(columns)]
    return points, stats


def _stages(entries: Iterable[AttackEntry], points: list[PointResult], stats: list[_StageStats]) -> list[StageResult]:
    n = len(points)
    remaining = sum(p.clean_correct for p in points)
    stages = []
    for entry, st in zip(entries, stats):
        broken = sum(1 for p in points if p.broken_by == entry.name)
        remaining -= broken
        stages.append(StageResult(entry.name, dict(entry.settings), remaining / n, st.time_s, broken,
                                  st.forward_samples, st.backward_samples))
    return stages


def _evaluate_corruptions(model: nn.Module, dataset: str, eps: float | None, *, version: str, x: Tensor | None,
                          n_examples: int | None, device: str | torch.device | None, **kwargs: Any) -> EvaluationResult:
    from .corruption_eval import evaluate_corruptions

    if eps is not None:
        raise EvaluationError("the corruptions threat model has no eps; leave it out")
    if version != "standard":
        raise EvaluationError(f"the corruptions threat model has one version, 'standard', not {version!r}")
    if x is not None:
        raise EvaluationError("the corruptions threat model reads the dataset's corrupted sets; x and y cannot replace them")
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1):
        raise EvaluationError(f"n_examples must be a positive integer, got {n_examples!r}")
    try:
        return evaluate_corruptions(model, dataset, n_examples=n_examples, device=resolve_device(device), version=version,
                                    **kwargs)
    except CorruptionDataError as exc:
        raise EvaluationError(str(exc)) from None


def evaluate(
    model: nn.Module,
    dataset: str = "digits",
    threat_model: str = "Linf",
    eps: float | None = None,
    *,
    n_examples: int | None = None,
    version: str = "standard",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
    model_info: dict[str, Any] | None = None,
    progress: bool = True,
    journal: str | Path | None = None,
    analysis: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    verify: bool = False,
    verify_time_limit: float = 30.0,
) -> EvaluationResult:
    """Evaluate ``model`` (an nn.Module taking [0,1] inputs, returning logits) under a protocol version.

    ``x``/``y`` replace the dataset's test split (the dataset then only fixes the number of
    classes and the default eps). ``journal`` makes the run resumable; ``out`` writes the
    record to ``out/<dataset>/<threat_model>/<model id>.<version>.json``. ``analysis`` adds the
    baselines (PGD-CE), the robustness curve and the local-stability metrics (benchmark.analysis).
    ``channels_last`` and ``compile`` run the model in the channels_last layout and/or through
    ``torch.compile`` (see :func:`prepare_model`), with results equal up to float rounding, not
    bit-identical to a run without them; they are part of a journal's configuration.
    ``channels_last=None`` (the default) turns it on for models with 2-d convolutions run on the CPU
    (:func:`uses_channels_last`); the model's 4-d weights are then converted in place.

    ``verify`` adds the other side of the truth (:mod:`benchmark.verification`): CROWN's certified accuracy
    and, for networks small enough, every point the attacks left robust decided exactly (MILP, at most
    ``verify_time_limit`` seconds a point); run on rank 0 under torchrun (``robench verify`` shards it).

    ``threat_model="corruptions"`` measures the accuracy under the dataset's common corruptions instead
    (:func:`benchmark.corruption_eval.evaluate_corruptions`): no eps, no attacks, version "standard" only.
    """
    if dataset not in DATASETS:
        raise EvaluationError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if is_corruptions(threat_model):
        return _evaluate_corruptions(model, dataset, eps, n_examples=n_examples, version=version, batch_size=batch_size,
                                     device=device, out=out, data_dir=data_dir, x=x, model_info=model_info,
                                     journal=journal, channels_last=channels_last)
    try:
        tm = get_threat_model(threat_model)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    entries = get_protocol(version)
    if eps is None:
        eps = default_eps(dataset, tm.name)
    if not eps > 0:
        raise EvaluationError(f"eps must be positive, got {eps}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    num_classes = DATASETS[dataset]
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1):
        raise EvaluationError(f"n_examples must be a positive integer, got {n_examples!r}")
    if x is None:
        x, y = load_dataset(dataset, "test", n_examples=n_examples, data_dir=data_dir)
    elif y is None:
        raise EvaluationError("labels y are required with inputs x")
    elif n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    if n_examples is not None and len(x) < n_examples:
        raise EvaluationError(f"n_examples is {n_examples}, but there are only {len(x)} test points; "
                              f"ask for at most {len(x)} (or leave n_examples out for all of them)")
    _validate_inputs(x, y)
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise EvaluationError(f"labels must lie in [0, {num_classes - 1}] for {dataset}, got [{int(y.min())}, {int(y.max())}]")
    device = resolve_device(device)
    model = model.eval().to(device)
    _probe_model(model, x[: min(len(x), 4)].to(device), num_classes)
    info = dict(model_info or {})
    info.setdefault("id", type(model).__name__)
    info["fingerprint"] = fingerprint_model(model)
    channels_last = uses_channels_last(model, channels_last, device)
    prepared_original = model  # the plain module (the verifier reads its layers, not a compiled wrapper)
    model = prepare_model(model, channels_last, compile)
    counter = PassCounter(model)

    t_start = time.perf_counter()
    sample = slice(0, min(len(x), 64))
    checks: list[CheckResult] = run_checks(model, x[sample].to(device), y[sample].to(device), num_classes,
                                           classes_needed(entries, tm))
    fired = [c.name for c in checks if c.fired]
    if version == "fast" and fired:
        # the fast version's few attacks are only as good as the model's gradients: any sign that they are not
        # (masking, randomness, too few classes) and the standard version runs instead, and says why
        logger.warning("the 'fast' version is not trusted on this model (%s): running '%s' instead",
                       ", ".join(fired), FAST_FALLBACK)
        info["fast_fallback"] = f"checks fired: {', '.join(fired)}; ran '{FAST_FALLBACK}' instead"
        version, entries = FAST_FALLBACK, get_protocol(FAST_FALLBACK)
    built = [(e, build_attack(e, tm, num_classes, seed)) for e in entries]
    kept = [(e, attack) for e, attack in built if attack.classes_needed() <= num_classes]
    runnable, attacks = tuple(e for e, _ in kept), [attack for _, attack in kept]
    t_checks = time.perf_counter() - t_start

    n = len(x)
    chunks = list(range(0, n, batch_size))
    config = {"dataset": dataset, "threat_model": tm.name, "eps": eps, "version": version, "seed": seed,
              "batch_size": batch_size, "n_examples": n, "model": info["fingerprint"],
              "checkpoint_sha256": info.get("checkpoint_sha256"),
              "data": fingerprint_model(None, tensors=(x, y))}
    config.update({name: True for name, on in (("channels_last", channels_last), ("compile", compile)) if on})
    rank, world = dist_utils.rank_and_world()
    log = Journal(journal, config, rank=rank) if journal is not None else None
    done = log.completed() if log is not None else {}
    mine = [c for i, c in enumerate(chunks) if i % world == rank]
    to_attack = sum(min(batch_size, n - c) for c in mine if c not in done)
    shown = Progress(len(runnable) * to_attack + (len(ANALYSIS_STAGES) * n if analysis and rank == 0 else 0),
                     enabled=progress and rank == 0)

    results: dict[int, tuple[list[dict], list[dict]]] = {c: done[c] for c in mine if c in done}
    for start in mine:
        if start in results:
            continue
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        results[start] = _attack_chunk(counter, xb, yb, start, runnable, attacks, eps, seed, shown)
        if log is not None:
            log.append(start, *results[start])
    if world > 1:
        results = dist_utils.gather_chunks(results)
        if rank != 0:
            return None  # type: ignore[return-value]

    points = [PointResult(**p) for start in sorted(results) for p in results[start][0]]
    stats = [_StageStats() for _ in runnable]
    for start in results:
        for st, chunk_stat in zip(stats, results[start][1]):
            st.add(chunk_stat)
    black_box = [e.name for e in runnable if attack_class(e.kind).black_box]
    broken_by = [None if p.not_evaluable else p.broken_by for p in points]  # only adversarial examples count there
    flags_checks = checks + ([black_box_check(broken_by, n, black_box)] if black_box else [])
    flags_checks.append(non_finite_check([p.not_evaluable for p in points]))
    clean_acc = sum(p.clean_correct for p in points) / n
    robust_acc = sum(p.robust for p in points) / n
    result = EvaluationResult(
        dataset=dataset, threat_model=tm.name, eps=float(eps), version=version, seed=seed, n_examples=n,
        batch_size=batch_size, device=str(device), clean_accuracy=clean_acc, robust_accuracy=robust_acc,
        stages=_stages(runnable, points, stats),
        flags=[c.name for c in flags_checks if c.fired],
        check_details={c.name: c.details for c in flags_checks},
        model=info,
        timings={"checks_s": t_checks, "total_s": time.perf_counter() - t_start},
        versions=library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        points=points,
    )
    if analysis:
        extra = analyse(model, x, y, tm, float(eps), points, seed=seed, device=device, batch_size=batch_size,
                        entries=runnable, progress=shown)
        result.baselines, result.metrics, result.curve = extra.baselines, extra.metrics, extra.curve
        result.timings["analysis_s"] = extra.time_s
    shown.close()
    if verify:
        from .verification import attach, verify_record

        verify_log = None if journal is None else Path(str(journal) + ".verify")
        attach(result, verify_record(prepared_original, result, x, y, time_limit=verify_time_limit, journal=verify_log,
                                     shard=False))
        result.timings["verification_s"] = result.verification.time_s  # type: ignore[union-attr]
    result.model.setdefault("eps_text", format_eps(dataset, tm.name, float(eps)))
    if out is not None:
        result.save(record_path(out, dataset, tm.name, str(info["id"]), version))
    if log is not None:
        log.finish()
    return result
