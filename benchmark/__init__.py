"""robench.benchmark: datasets, threat models, attacks, the protocol and the evaluation runner."""
__version__ = "0.1.0"

from .budgets import BOARDS, default_eps
from .data import DATASETS, load_dataset
from .protocol import PROTOCOLS, get_protocol
from .record import EvaluationResult
from .runner import EvaluationError, evaluate
from .threat_models import L2, THREAT_MODELS, Linf, get_threat_model

__all__ = [
    "__version__", "load_dataset", "evaluate", "EvaluationResult", "EvaluationError", "DATASETS", "BOARDS",
    "default_eps", "PROTOCOLS", "get_protocol", "Linf", "L2", "THREAT_MODELS", "get_threat_model",
]
