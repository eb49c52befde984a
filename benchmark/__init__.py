"""robench.benchmark: datasets, threat models, attacks, the protocol and the evaluation runner.

``evaluate`` and ``EvaluationError`` are imported on first use, so that importing a part of the
package (``benchmark.data``, the threat models, the record format) does not load the runner.
"""
from typing import Any

__version__ = "0.1.0"

from .budgets import BOARDS, default_eps
from .data import DATASETS, load_dataset
from .protocol import PROTOCOLS, get_protocol
from .record import EvaluationResult
from .threat_models import L2, THREAT_MODELS, Linf, get_threat_model

__all__ = [
    "__version__", "load_dataset", "evaluate", "EvaluationResult", "EvaluationError", "DATASETS", "BOARDS",
    "default_eps", "PROTOCOLS", "get_protocol", "Linf", "L2", "THREAT_MODELS", "get_threat_model",
]

_FROM_RUNNER = ("evaluate", "EvaluationError")


def __getattr__(name: str) -> Any:
    if name in _FROM_RUNNER:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
