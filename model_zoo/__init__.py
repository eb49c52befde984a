"""robench's model zoo: one submission file per model, read into typed, frozen cards.

>>> from model_zoo import list_models, load_model, get_card
>>> list_models(dataset="digits", threat_model="Linf")            # ids, filterable with fnmatch patterns
>>> model = load_model("Madry2018Towards", dataset="digits", threat_model="Linf")  # eval mode, takes [0, 1]
>>> get_card("Madry2018Towards", dataset="digits", threat_model="Linf")           # the frozen card
"""
from .cards import Architecture, Checkpoint, ModelCard, Preprocessing, Reported
from .download import ChecksumError, DownloadError
from .loading import CheckpointError, UnsafeCheckpointError, load_model, load_model_from_card
from .registry import DuplicateModelError, Registry, UnknownModelError, get_card, list_cards, list_models
from .submission_schema import Problem, SubmissionError, read_card, validate_file

__all__ = [
    "list_models", "list_cards", "get_card", "load_model", "load_model_from_card",
    "ModelCard", "Architecture", "Preprocessing", "Checkpoint", "Reported",
    "Registry", "read_card", "validate_file", "Problem",
    "SubmissionError", "DuplicateModelError", "UnknownModelError",
    "DownloadError", "ChecksumError", "CheckpointError", "UnsafeCheckpointError",
]
