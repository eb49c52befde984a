"""Safe checkpoint loading: from a card to an eval-mode model that takes inputs in [0, 1].

The same steps for every model, with no per-model special cases:

1. the checkpoint's bytes: a repository file (``checkpoint.path``) read and hashed, or a download
   (``checkpoint.url``) fetched and verified by :func:`model_zoo.download.fetch`;
2. a state dict from those bytes: safetensors (no code can run), or a ``.pt``/``.pth`` file through
   ``torch.load(weights_only=True)`` only; a pickle that refers to any callable or class is refused
   with :class:`UnsafeCheckpointError` before anything of it runs;
3. the state dict unwrapped (``{"state_dict": ...}``, ``{"model": ...}``) and its keys normalised by
   one rule: strip the card's ``key_prefix``, then strip ``module.`` (DataParallel) and ``model.``
   (wrappers) while every key carries it and the network's own keys do not;
4. the network built from the card (:func:`model_zoo.architectures.build_architecture`), loaded
   strictly, wrapped with the card's normalisation, moved to the device and put in eval mode.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .architectures import build_architecture
from .cards import ModelCard
from .download import ChecksumError, fetch, sha256_bytes
from .normalize import NormalizedModel
from .registry import Registry, default_registry, default_submissions_dir
from .cards import CHECKPOINT_FORMATS

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "load_model", "load_model_from_card", "read_state_dict",
    "unwrap_state_dict", "strip_key_prefixes", "checkpoint_bytes", "GENERIC_PREFIXES",
]

#: prefixes stripped by the general rule, in this order, as long as every key carries one
GENERIC_PREFIXES = ("module.", "model.")
#: keys under which training scripts commonly nest the state dict
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the card's architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint refers to code (a function or class); it was refused unread."""


def read_state_dict(data: bytes, fmt: str, source: str = "checkpoint") -> dict[str, Tensor]:
    """Tensors from a checkpoint's bytes; ``fmt`` is 'safetensors' or 'pt'. Never runs pickled code."""
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return dict(load_safetensors(data))
        except SafetensorError as exc:
            raise CheckpointError(f"{source} is not a valid safetensors file: {exc}") from None
    if fmt == "pt":
        return unwrap_state_dict(_torch_load(data, source), source)
    raise CheckpointError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(CHECKPOINT_FORMATS)}")


def _torch_load(data: bytes, source: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch 2.14-2.15 say "Unsupported global: GLOBAL mod.name", torch 2.2 "Unsupported class mod.name"
        found = re.search(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)", text)
        if found:
            raise UnsafeCheckpointError(
                f"refused to load {source}: it pickles the callable or class {found[1]}, which could run arbitrary "
                "code; nothing in it was executed. robench only loads plain tensors: save the state dict with "
                "safetensors.torch.save_file(model.state_dict(), path) or torch.save(model.state_dict(), path)"
            ) from None
        if "Weights only load failed" in text:
            reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            raise CheckpointError(
                f"refused to load {source}: it is not a plain tensor file (the weights-only unpickler stopped at: "
                f"{reason[1].strip() if reason else 'an unsupported instruction'}); nothing in it was executed"
            ) from None
        raise CheckpointError(f"{source} is not a torch checkpoint: {text.splitlines()[0] if text else exc!r}") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{source} is not a torch checkpoint: {str(exc) or type(exc).__name__}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The {name: tensor} mapping in a loaded checkpoint, also when nested under 'state_dict', 'model', ..."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _NESTING_KEYS:
            if key in obj:
                try:
                    return unwrap_state_dict(obj[key], source)
                except CheckpointError:
                    continue
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{source} holds no state dict of tensors (top-level keys: {keys}); expected "
                              f"{{name: tensor}} or one nested under {', '.join(_NESTING_KEYS)}")
    raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")


def strip_key_prefixes(
    state_dict: Mapping[str, Tensor], expected_keys: Iterable[str], key_prefix: str | None = None
) -> dict[str, Tensor]:
    """Rename keys by the general rule: drop ``key_prefix`` where present, then ``module.``/``model.``
    repeatedly while every key carries it and the expected keys do not all carry it."""
    expected = list(expected_keys)
    sd = dict(state_dict)
    if key_prefix:
        sd = {(k[len(key_prefix):] if k.startswith(key_prefix) else k): v for k, v in sd.items()}
    stripped = True
    while stripped and sd:
        stripped = False
        for prefix in GENERIC_PREFIXES:
            if all(k.startswith(prefix) for k in sd) and not (expected and all(k.startswith(prefix) for k in expected)):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    return sd


def _check_fit(net: nn.Module, sd: Mapping[str, Tensor], source: str, what: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and sd[k].shape != own[k].shape]
    # a float tensor stored as integers (or the reverse) would be cast silently by load_state_dict;
    # float precisions may differ (a float16 checkpoint of a float32 model is common and exact to load)
    kinds = [f"{k}: checkpoint {sd[k].dtype} vs model {own[k].dtype}"
             for k in sd if k in own and sd[k].is_floating_point() != own[k].is_floating_point()]
    # a NaN or infinite weight makes every prediction meaningless: refused here, not evaluated
    non_finite = [f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()} values)"
                  for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not (missing or unexpected or shapes or kinds or non_finite):
        return

    def few(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {few(shapes)}")
    if kinds:
        parts.append(f"integer where a float is expected, or the reverse: {few(kinds)}")
    if non_finite:
        parts.append(f"NaN or infinite weights: {few(non_finite)}")
    raise CheckpointError(f"{source} does not fit {what}: {'; '.join(parts)}. If the keys differ by a prefix, "
                          "declare it as checkpoint.key_prefix in the submission file")


def _cache_suffix(card: ModelCard) -> str:
    if card.checkpoint.format == "safetensors":
        return ".safetensors"
    suffix = PurePosixPath(urlparse(card.checkpoint.url or "").path).suffix.lower()
    return suffix if suffix in CHECKPOINT_FORMATS["pt"] else ".pt"


def checkpoint_bytes(
    card: ModelCard,
    repo_root: str | os.PathLike | None = None,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[bytes, str]:
    """The checkpoint's verified bytes and where they came from (the URL or the repository file)."""
    ckpt = card.checkpoint
    if ckpt.url is not None:
        path = fetch(ckpt.url, ckpt.sha256, suffix=_cache_suffix(card), cache=cache, progress=progress)
        data, source = path.read_bytes(), ckpt.url
    elif ckpt.path is not None:
        root = Path(repo_root) if repo_root is not None else default_submissions_dir().parent
        file = root / ckpt.path
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint of {card.id} not found: {file} (checkpoint.path {ckpt.path!r} "
                                    f"relative to the repository root {root})")
        data, source = file.read_bytes(), str(file)
    else:
        raise CheckpointError(f"the card of {card.id} names neither a checkpoint url nor a path")
    actual = sha256_bytes(data)
    if actual != ckpt.sha256:
        raise ChecksumError(ckpt.sha256, actual, source)
    return data, source


def load_model_from_card(
    card: ModelCard,
    *,
    repo_root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> nn.Module:
    """The card's model with verified weights: eval mode, on ``device``, normalisation inside (takes [0, 1]).

    ``repo_root`` anchors a repository checkpoint path (default: this repository); ``cache`` overrides
    the download cache folder. The network itself is the returned module's ``.model``.
    """
    data, source = checkpoint_bytes(card, repo_root, cache=cache, progress=progress)
    state_dict = read_state_dict(data, card.checkpoint.format, source)
    net = build_architecture(card.architecture, card.num_classes)
    own_keys = list(net.state_dict())
    state_dict = strip_key_prefixes(state_dict, own_keys, card.checkpoint.key_prefix)
    what = f"{card.architecture.source} architecture {card.architecture.name!r} of {card.id}"
    _check_fit(net, state_dict, source, what)
    net.load_state_dict(state_dict, strict=True)
    model = NormalizedModel(net, card.preprocessing.mean, card.preprocessing.std)
    return model.to(device).eval()


def load_model(
    name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    device: str | torch.device = "cpu",
    *,
    registry: Registry | None = None,
    submissions_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> nn.Module:
    """Load zoo model ``name`` of the (dataset, threat model) board; see :func:`load_model_from_card`.

    The card comes from ``registry``, else from a registry of ``submissions_dir``, else from the
    repository's own submissions.
    """
    if registry is not None and submissions_dir is not None:
        raise ValueError("pass either registry or submissions_dir, not both")
    if registry is None:
        registry = Registry(submissions_dir) if submissions_dir is not None else default_registry()
    card = registry.get_card(name, dataset, threat_model)
    return load_model_from_card(card, repo_root=registry.repo_root, device=device, cache=cache, progress=progress)
