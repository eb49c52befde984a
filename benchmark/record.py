"""The result record: one JSON file per evaluation, written atomically.

The schema is fixed (``SCHEMA_VERSION``); the leaderboard reads these files and
nothing else. Per-point results travel in the same file under ``points``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydantic

__all__ = ["PointResult", "StageResult", "CorruptionDetails", "VerificationDetails", "POINT_STATUSES", "EvaluationResult", "RecordError", "write_json_atomic", "library_versions",
           "record_path", "SCHEMA_VERSION", "SAFE_NAME", "record_problems"]

SCHEMA_VERSION = 1
#: names that become folders and file names (datasets, threat models, versions, model ids): no path characters
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def record_path(out: str | Path, dataset: str, threat_model: str, model_id: str, version: str) -> Path:
    """Where the record of one evaluation lives: ``out/<dataset>/<threat model>/<model id>.<version>.json``.

    The threat model is written under its canonical name (``linf`` and ``Linf`` give ``Linf``), so
    that the command line, the runner, the journal beside the record and the interchange importer,
    which all call this, agree on one file. Unknown names raise ValueError.
    """
    from .budgets import board_threat_model

    return Path(out) / dataset / board_threat_model(threat_model) / f"{model_id}.{version}.json"

@dataclass
class PointResult:
    """The outcome for one test point."""

    index: int
    label: int
    clean_correct: bool
    robust: bool
    #: name of the first attack that broke the point ("clean" if misclassified clean, None if robust)
    broken_by: str | None = None
    #: norm of the adversarial perturbation that broke it (None if robust or clean-misclassified)
    norm: float | None = None
    #: forward passes spent on this point by all attacks
    queries: int = 0
    #: smallest adversarial norm found by any attack (FAB's minimal norm, or a smaller one), None if none
    min_norm: float | None = None
    #: the model returned NaN or infinite logits where ``broken_by`` left the point: neither robust nor
    #: broken by an adversarial example, so counted as not robust and flagged (``non_finite_logits``)
    not_evaluable: bool = False


@dataclass
class StageResult:
    """One attack of the protocol, after it ran on the points still robust."""

    attack: str
    settings: dict[str, Any]
    robust_accuracy: float
    time_s: float = 0.0
    #: points it broke
    broken: int = 0
    #: samples pushed through forward only / forward and backward
    forward_samples: int = 0
    backward_samples: int = 0


@dataclass
class CorruptionDetails:
    """What a corruptions record holds beyond its mean (benchmark.corruption_eval). Every part may be empty
    in an imported record, which has only what the other leaderboard published."""

    #: corruption -> accuracy at severities 1..5
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    #: corruption -> mean over its five severities
    per_corruption: dict[str, float] = field(default_factory=dict)
    #: "corruption/severity" -> sha256 of the set's uint8 images
    sets_sha256: dict[str, str] = field(default_factory=dict)
    #: "clean" and "corruption/severity" -> each point's correctness, a hex bit string (point i at bit i)
    correct: dict[str, str] = field(default_factory=dict)
    #: mean corruption error in percent against a reference model (AlexNet on ImageNet-C), if computed
    mce: float | None = None
    #: the 3D common corruptions (ImageNet-3DCC), when given: mean accuracy, mCE, and the accuracy at severities
    #: 1..5 per 3D corruption (their per-point bits and hashes sit in ``correct`` and ``sets_sha256``)
    accuracy_3d: float | None = None
    mce_3d: float | None = None
    accuracy_3d_sets: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class VerificationDetails:
    """What the verifier found (benchmark.verification): the other side of the attacks' number."""

    #: "verified", or "not_verifiable" (then ``reason`` says why and no number is given)
    status: str
    reason: str = ""
    #: "crown+milp" (Linf: the mixed-integer program), "crown+bab" (L2: the branch and bound with a QP per node,
    #: benchmark.l2_exact), or "ibp" (certificates only: the network is too large for CROWN and exact verification)
    method: str = ""
    num_relus: int = 0
    #: points the bounds certify (a lower bound of the robust accuracy)
    certified_accuracy: float | None = None
    #: certified and proved robust points; the exact robust accuracy when no point is undecided, else None
    exact_accuracy: float | None = None
    #: the truth lies in [lower, upper]: lower counts certified and proved points, upper the points neither
    #: the attacks nor the program broke
    lower: float | None = None
    upper: float | None = None
    undecided: int = 0
    #: indices of the points the program broke and the protocol's attacks left robust
    missed: list[int] = field(default_factory=list)
    #: per point: clean, certified, attacked, exact_robust, exact_broken or undecided
    statuses: list[str] = field(default_factory=list)
    #: point index -> the program's counterexample (flat input), checked by the model's forward pass
    counterexamples: dict[str, list[float]] = field(default_factory=dict)
    #: per point: seconds in the program, and its binary variables (unstable ReLUs)
    point_times: list[float] = field(default_factory=list)
    binaries: list[int] = field(default_factory=list)
    #: point index -> why it is undecided
    reasons: dict[str, str] = field(default_factory=dict)
    time_limit_s: float = 0.0
    time_s: float = 0.0


@dataclass
class EvaluationResult:
    """One evaluation. Under the Lp threat models, ``robust_accuracy`` is what the attacks left; under
    ``corruptions`` it is the mean accuracy over every (corruption, severity) set (the board's number),
    ``eps`` is None, ``stages`` and ``points`` are empty and ``corruptions`` holds the rest."""

    dataset: str
    threat_model: str
    eps: float | None
    version: str
    seed: int
    n_examples: int
    batch_size: int
    device: str
    clean_accuracy: float
    robust_accuracy: float
    stages: list[StageResult] = field(default_factory=list)
    #: names of the checks that fired (benchmark.checks)
    flags: list[str] = field(default_factory=list)
    #: details per check (values measured), keyed by check name
    check_details: dict[str, Any] = field(default_factory=dict)
    #: baseline attacks outside the protocol (e.g. PGD-CE), name -> robust accuracy
    baselines: dict[str, float] = field(default_factory=dict)
    #: local-stability metrics, name -> value
    metrics: dict[str, float] = field(default_factory=dict)
    #: robustness curve: list of [eps, robust accuracy]
    curve: list[list[float]] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    points: list[PointResult] = field(default_factory=list)
    corruptions: CorruptionDetails | None = None
    verification: VerificationDetails | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def per_attack_accuracy(self) -> dict[str, float]:
        return {s.attack: s.robust_accuracy for s in self.stages}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationResult":
        data = dict(data)
        data["stages"] = [StageResult(**s) for s in data.get("stages", [])]
        data["points"] = [PointResult(**p) for p in data.get("points", [])]
        if isinstance(data.get("corruptions"), dict):
            data["corruptions"] = CorruptionDetails(**data["corruptions"])
        if isinstance(data.get("verification"), dict):
            data["verification"] = VerificationDetails(**data["verification"])
        return cls(**data)

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvaluationResult":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def from_json(cls, text: str | bytes) -> "EvaluationResult":
        """A record read from JSON someone else may have written: every field checked, strictly,
        against its declared type (this class's annotations, through pydantic), so that a malformed
        record (``flags: [1]``, ``curve: [5]``, ``created: 5``, ``flags: "abc"``, ``seed: "1"``) is
        refused with every problem named instead of failing later in the leaderboard. Raises
        :class:`RecordError`."""
        try:
            checked = _record_adapter().validate_json(text, strict=True)
        except pydantic.ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}" for e in exc.errors()]
            raise RecordError(f"{len(problems)} problem(s): " + "; ".join(problems)) from None
        record = cls.from_dict(asdict(checked))
        problems = record_problems(record)
        if problems:
            raise RecordError(f"{len(problems)} problem(s): " + "; ".join(problems))
        return record

    def summary(self) -> str:
        budget = f" eps={self.eps:.4g}" if self.eps is not None else ""
        lines = [
            f"{self.model.get('id', 'model')} on {self.dataset} {self.threat_model}{budget} "
            f"({self.version}, {self.n_examples} points, seed {self.seed})",
            f"  clean accuracy:  {100 * self.clean_accuracy:6.2f}%",
        ]
        if self.corruptions is not None:
            for name, mean in self.corruptions.per_corruption.items():
                lines.append(f"  {name:<18} {100 * mean:6.2f}%   (severities 1-5: "
                             + " ".join(f"{100 * a:.1f}" for a in self.corruptions.accuracy.get(name, [])) + ")")
            lines.append(f"  mean corruption accuracy: {100 * self.robust_accuracy:6.2f}%")
            if self.corruptions.mce is not None:
                lines.append(f"  mCE: {self.corruptions.mce:.2f}")
            return "\n".join(lines)
        for s in self.stages:
            lines.append(f"  after {s.attack:<9} {100 * s.robust_accuracy:6.2f}%   ({s.time_s:.1f}s, broke {s.broken})")
        lines.append(f"  robust accuracy: {100 * self.robust_accuracy:6.2f}%")
        for name, acc in self.baselines.items():
            lines.append(f"  baseline {name}: {100 * acc:6.2f}%")
        v = self.verification
        if v is not None and v.status != "verified":
            lines.append(f"  verification: not verifiable ({v.reason})")
        elif v is not None:
            truth = (f"exact robust accuracy {100 * v.exact_accuracy:6.2f}%" if v.exact_accuracy is not None else
                     f"truth in [{100 * (v.lower or 0):.2f}%, {100 * (v.upper or 0):.2f}%], {v.undecided} point(s) undecided")
            lines.append(f"  certified: {100 * (v.certified_accuracy or 0):6.2f}%; {truth} ({v.method}, {v.time_s:.1f}s)")
            if v.missed:
                lines.append(f"  the attacks missed {len(v.missed)} point(s) the verifier broke: {v.missed[:10]}")
        if self.flags:
            lines.append("  flags: " + ", ".join(self.flags))
        return "\n".join(lines)


class RecordError(ValueError):
    """A document is not a valid evaluation record; the message names every problem."""


def record_problems(record: EvaluationResult) -> list[str]:
    """What makes a well-typed record impossible: names unfit for paths, numbers out of range, and
    accuracies that disagree with the record's own per-point results (an edited number)."""
    problems = []
    for name in ("dataset", "threat_model", "version"):
        if not SAFE_NAME.fullmatch(getattr(record, name)):
            problems.append(f"{name}: {getattr(record, name)!r} may only use letters, digits, '_', '.', '-'")
    model_id = record.model.get("id")
    if not (isinstance(model_id, str) and SAFE_NAME.fullmatch(model_id)):
        problems.append(f"model.id: {model_id!r} may only use letters, digits, '_', '.', '-'")
    if record.threat_model == "corruptions":
        if record.eps is not None:
            problems.append(f"eps: {record.eps!r}, but a corruptions record has no eps (null)")
        if record.corruptions is None:
            problems.append("corruptions: missing (a corruptions record keeps its per-set results there)")
        if record.stages or record.points:
            problems.append("stages/points: a corruptions record has no attack stages or attacked points")
        if record.corruptions is not None:
            problems += corruption_problems(record.corruptions, record.robust_accuracy, record.clean_accuracy,
                                            record.n_examples)
    else:
        if record.eps is None or not (math.isfinite(record.eps) and record.eps > 0):
            problems.append(f"eps: {record.eps!r} is not a positive number")
        if record.corruptions is not None:
            problems.append(f"corruptions: only a corruptions record has them, not a {record.threat_model} one")
    for name in ("n_examples", "batch_size", "seed"):
        if getattr(record, name) < 0:
            problems.append(f"{name}: {getattr(record, name)} is negative")
    for name in ("clean_accuracy", "robust_accuracy"):
        if not 0.0 <= getattr(record, name) <= 1.0:
            problems.append(f"{name}: {getattr(record, name)!r} is not a fraction in [0, 1]")
    if record.verification is not None:
        problems += verification_problems(record.verification, record)
    if record.threat_model != "corruptions" and record.robust_accuracy > record.clean_accuracy + 1e-9:
        problems.append(f"robust_accuracy: {record.robust_accuracy} exceeds the clean accuracy {record.clean_accuracy}")
    points = record.points
    if points:
        if len(points) != record.n_examples or len({p.index for p in points}) != len(points):
            problems.append(f"points: {len(points)} results for {len({p.index for p in points})} distinct points, "
                            f"but n_examples is {record.n_examples}")
        elif any(p.robust and (not p.clean_correct or p.not_evaluable) for p in points):
            problems.append("points: a point is robust though misclassified clean or not evaluable")
        else:
            for name, counted in (("clean_accuracy", sum(p.clean_correct for p in points)),
                                  ("robust_accuracy", sum(p.robust for p in points))):
                if abs(getattr(record, name) - counted / len(points)) > 1e-9:
                    problems.append(f"{name}: {getattr(record, name)} but the points say {counted}/{len(points)}")
    return problems


#: what a point of a verification can end as (benchmark.verification)
POINT_STATUSES = ("clean", "certified", "attacked", "exact_robust", "exact_broken", "undecided")


def verification_problems(v: VerificationDetails, record: "EvaluationResult") -> list[str]:
    """A verification whose numbers contradict its own per-point statuses or the record's points."""
    if v.status == "not_verifiable":
        return [] if v.reason else ["verification: not verifiable without a reason"]
    if v.status != "verified":
        return [f"verification.status: {v.status!r} is neither 'verified' nor 'not_verifiable'"]
    n = len(v.statuses)
    unknown = sorted(set(v.statuses) - set(POINT_STATUSES))
    if unknown or not n:
        return [f"verification.statuses: unknown {unknown} or empty"]
    problems = []
    count = {s: v.statuses.count(s) for s in POINT_STATUSES}
    for name, value in (("certified_accuracy", count["certified"] / n),
                        ("lower", (count["certified"] + count["exact_robust"]) / n),
                        ("upper", (count["certified"] + count["exact_robust"] + count["undecided"]) / n)):
        if getattr(v, name) is None or abs(getattr(v, name) - value) > 1e-9:
            problems.append(f"verification.{name}: {getattr(v, name)} but the statuses say {value}")
    if v.undecided != count["undecided"] or (v.exact_accuracy is None) != bool(count["undecided"]):
        problems.append("verification.undecided/exact_accuracy: do not match the statuses")
    if sorted(v.missed) != [i for i, s in enumerate(v.statuses) if s == "exact_broken"]:
        problems.append("verification.missed: not the points the program broke")
    if record.points and len(record.points) == n:
        for i, (p, s) in enumerate(zip(record.points, v.statuses)):
            if (s == "clean") == p.clean_correct or (s == "attacked") == (p.robust or not p.clean_correct):
                problems.append(f"verification.statuses[{i}]: {s!r} contradicts the attacks' result for the point")
                break
    return problems


def _ones(hex_bits: str) -> int | None:
    try:
        return sum(bin(byte).count("1") for byte in bytes.fromhex(hex_bits))
    except ValueError:
        return None


def corruption_problems(details: CorruptionDetails, mean: float, clean: float, n: int) -> list[str]:
    """Numbers of a corruptions record that contradict each other: five severities per corruption, fractions,
    per-corruption means and the board's mean that are not the means of the accuracies, per-point bits that
    count another accuracy."""
    problems = []
    for name, values in details.accuracy_3d_sets.items():
        if len(values) != 5 or not all(0.0 <= v <= 1.0 for v in values):
            problems.append(f"corruptions.accuracy_3d_sets.{name}: expected five fractions (severities 1-5), got {values!r}")
    if details.accuracy_3d_sets and details.accuracy_3d is not None and \
            abs(details.accuracy_3d - sum(sum(v) / 5 for v in details.accuracy_3d_sets.values()) / len(details.accuracy_3d_sets)) > 1e-9:
        problems.append(f"corruptions.accuracy_3d: {details.accuracy_3d} is not the mean over the 3D corruptions")
    for name, values in details.accuracy.items():
        if len(values) != 5 or not all(0.0 <= v <= 1.0 for v in values):
            problems.append(f"corruptions.accuracy.{name}: expected five fractions (severities 1-5), got {values!r}")
        elif name in details.per_corruption and abs(details.per_corruption[name] - sum(values) / 5) > 1e-9:
            problems.append(f"corruptions.per_corruption.{name}: {details.per_corruption[name]} is not the mean of "
                            f"its severities ({sum(values) / 5})")
    if details.per_corruption and abs(mean - sum(details.per_corruption.values()) / len(details.per_corruption)) > 1e-9:
        problems.append(f"robust_accuracy: {mean} is not the mean over the corruptions "
                        f"({sum(details.per_corruption.values()) / len(details.per_corruption)})")
    for key, bits in details.correct.items():
        name, _, severity = key.partition("/")
        values = details.accuracy.get(name) or details.accuracy_3d_sets.get(name) or []
        expected = clean if key == "clean" else (values[int(severity) - 1]
                                                 if severity in ("1", "2", "3", "4", "5") and len(values) == 5 else None)
        ones = _ones(bits)
        if ones is None or len(bits) != 2 * ((n + 7) // 8):
            problems.append(f"corruptions.correct.{key}: not a bit string of {n} points")
        elif expected is not None and n and abs(ones / n - expected) > 1e-9:
            problems.append(f"corruptions.correct.{key}: {ones}/{n} points correct, but the accuracy says {expected}")
    return problems


@functools.cache
def _record_adapter() -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(EvaluationResult)


def temporary_prefix(path: Path) -> str:
    """The name prefix of this process's temporary files for ``path``: ``.<name>.<pid>.``."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files for ``path`` left by processes that died before renaming them
    (a SIGKILL between writing and renaming): those whose writer's pid no longer runs."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON to a temporary file in the same folder, then rename it into place (and remove what
    killed writers of the same file left behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def library_versions() -> dict[str, str]:
    """Versions of what produced a record (read from the installed packages' metadata: importing
    torchvision just for its version took 2 s)."""
    from importlib import metadata

    import numpy
    import torch

    from . import __version__

    versions = {"robench": __version__, "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        versions["torchvision"] = metadata.version("torchvision")
    except metadata.PackageNotFoundError:  # pragma: no cover - torchvision is a dependency
        pass
    return versions
