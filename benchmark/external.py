"""External evaluations: a stronger attack found by someone else, recorded beside the zoo's own.

An external evaluation is a small YAML/JSON file under
``submissions/<dataset>/<threat_model>/external/<ModelID>__<Who>.yaml``:

```yaml
model_id: Madry2018Towards
dataset: digits
threat_model: Linf
eps: 0.2                        # the board's budget
who: Jane Doe
attack: APGD-DLR with 100 restarts
robust_accuracy: 0.512          # fraction in [0, 1]
link: https://example.org/paper
adversarial_examples: Madry2018Towards__Doe.safetensors   # optional, relative to this file
```

When adversarial examples are given (a safetensors file with ``x_adv`` of shape (k, C, H, W) and
``indices`` (k,) into the board's test split), :func:`verify_adversarial` checks that each one is
in [0, 1], within eps of its clean point and misclassified, and computes the robust accuracy they
prove: the share of test points still classified correctly and not broken by a valid example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import Tensor, nn

from .threat_models import get_threat_model

__all__ = ["ExternalEvaluation", "read_external", "VerificationReport", "verify_adversarial", "load_adversarial_file"]

_REQUIRED = {"model_id": str, "dataset": str, "threat_model": str, "who": str, "attack": str, "link": str}


@dataclass(frozen=True)
class ExternalEvaluation:
    model_id: str
    dataset: str
    threat_model: str
    eps: float
    who: str
    attack: str
    robust_accuracy: float
    link: str
    adversarial_examples: str | None = None
    source_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def read_external(path: str | Path) -> ExternalEvaluation:
    """Read and validate one external-evaluation file; every problem is listed in the error."""
    from .documents import DocumentError, load_document
    from .threat_models import parse_eps

    path = Path(path)
    try:
        data = load_document(path.read_text(encoding="utf-8"), path.suffix)
    except DocumentError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    problems = []
    for key, typ in _REQUIRED.items():
        if not isinstance(data.get(key), typ) or not data.get(key):
            problems.append(f"{key}: required, a non-empty {typ.__name__}")
    try:
        eps = parse_eps(data.get("eps"))
    except (ValueError, TypeError):
        problems.append("eps: required, a positive number or a fraction like '8/255'")
        eps = float("nan")
    acc = data.get("robust_accuracy")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
        problems.append("robust_accuracy: required, a fraction in [0, 1]")
    link = data.get("link")
    if isinstance(link, str) and not link.startswith("https://"):
        problems.append("link: must be an https:// URL")
    examples = data.get("adversarial_examples")
    if examples is not None:
        problem = _examples_path_problem(examples, path)
        if problem:
            problems.append(f"adversarial_examples: {problem}")
    unknown = set(data) - set(_REQUIRED) - {"eps", "robust_accuracy", "adversarial_examples"}
    problems += [f"{k}: unknown field" for k in sorted(unknown)]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return ExternalEvaluation(
        data["model_id"], data["dataset"], data["threat_model"], eps, data["who"], data["attack"],
        float(acc), data["link"], data.get("adversarial_examples"), str(path),
    )


def _examples_path_problem(value: Any, path: Path) -> str | None:
    """Why ``value`` is not a file beside the external-evaluation file ``path``, else None."""
    if not isinstance(value, str) or not value or "\\" in value:
        return f"expected a file name relative to this file, got {value!r}"
    relative = PurePosixPath(value)
    if relative.is_absolute() or ".." in relative.parts:
        return f"{value!r} must stay inside the folder of {path.name} (no absolute path, no '..')"
    folder = path.parent.resolve()
    if not (folder / relative).resolve().is_relative_to(folder):
        return f"{value!r} resolves outside the folder of {path.name} (a symbolic link?)"
    return None


@dataclass
class VerificationReport:
    n_points: int
    n_examples: int
    #: per-example problems: (test index, reason)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: test indices broken by a valid adversarial example
    broken: list[int] = field(default_factory=list)
    clean_accuracy: float = 0.0
    #: the robust accuracy the valid examples prove (an upper bound on the true robust accuracy)
    proven_robust_accuracy: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected


def load_adversarial_file(path: str | Path) -> tuple[Tensor, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a safetensors file of adversarial examples ({exc})") from None
    missing = {"x_adv", "indices"} - set(tensors)
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {', '.join(sorted(missing))} (expected x_adv and indices)")
    return tensors["x_adv"], tensors["indices"].long()


def verify_adversarial(
    model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, indices: Tensor, threat_model: str, eps: float,
    tol: float = 1e-5, batch_size: int = 500,
) -> VerificationReport:
    """Check claimed adversarial examples against the test points ``x[indices]``."""
    tm = get_threat_model(threat_model)
    report = VerificationReport(n_points=len(x), n_examples=len(x_adv))
    if x_adv.shape[1:] != x.shape[1:] or indices.shape != (len(x_adv),):
        raise ValueError(f"x_adv must have shape (k, {', '.join(map(str, x.shape[1:]))}) and indices shape (k,); "
                         f"got {tuple(x_adv.shape)} and {tuple(indices.shape)}")
    if len(indices) and (indices.min() < 0 or indices.max() >= len(x)):
        raise ValueError(f"indices must lie in [0, {len(x)}), got range [{int(indices.min())}, {int(indices.max())}]")
    if len(set(indices.tolist())) != len(indices):
        raise ValueError("indices must not repeat: give one adversarial example per test point")
    x_adv = x_adv.to(x.dtype)
    model = model.eval()
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) == y
    report.clean_accuracy = clean.float().mean().item()
    robust = clean.clone()
    for s in range(0, len(x_adv), batch_size):
        xa, idx = x_adv[s:s + batch_size], indices[s:s + batch_size]
        xo = x[idx]
        flat = xa.reshape(len(xa), -1)
        in_box = (flat >= -tol).all(1) & (flat <= 1 + tol).all(1)
        norms = tm.norm(xa - xo)
        in_ball = norms <= eps + tol
        with torch.no_grad():
            wrong = model(xa.clamp(0, 1)).argmax(1) != y[idx]
        for j, i in enumerate(idx.tolist()):
            if not in_box[j]:
                report.rejected.append((i, "outside [0, 1]"))
            elif not in_ball[j]:
                report.rejected.append((i, f"{tm} norm {norms[j].item():.6g} exceeds eps {eps:.6g}"))
            elif not wrong[j]:
                report.rejected.append((i, "classified correctly: not adversarial"))
            elif robust[i]:
                robust[i] = False
                report.broken.append(i)
    report.proven_robust_accuracy = robust.float().mean().item()
    return report
