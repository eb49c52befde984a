"""The two digits models the speed and comparison benchmarks run on: undefended and PGD-trained.

They are the zoo's ``LeCun1998Gradient`` and ``Madry2018Towards`` (digits, Linf) when the zoo ships
them; otherwise the same recipes are trained here with ``model_zoo.training.train`` (seeded,
bit-reproducible on the CPU: about 10 s and 1 min) and cached as safetensors under the user cache
directory. The factories double as ``--model`` specs for subprocesses started from the repository
root: ``--model benchmarks.digits_models:pgd_trained``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["MODELS", "load", "undefended", "pgd_trained", "factory_spec"]

#: short name -> (zoo id, training recipe, recipe arguments)
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "undefended": ("LeCun1998Gradient", "standard", {}),
    "pgd": ("Madry2018Towards", "pgd_at", {"threat_model": "Linf", "eps": 0.1}),
}


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("robench")) / "benchmark-models"


def load(name: str) -> tuple[nn.Module, str]:
    """The model called ``name`` (a key of MODELS) in eval mode on the CPU, and where it came from."""
    if name not in MODELS:
        raise ValueError(f"unknown benchmark model {name!r}; known: {', '.join(MODELS)}")
    zoo_id, recipe, kwargs = MODELS[name]
    from model_zoo import UnknownModelError, load_model

    try:
        return load_model(zoo_id, dataset="digits", threat_model="Linf"), f"zoo {zoo_id}"
    except UnknownModelError:
        pass
    from safetensors.torch import load_file, save_file

    from model_zoo.training.train import train

    path = _cache_dir() / f"{recipe}-seed0.safetensors"
    trained = None
    if not path.exists():
        trained = train(recipe, seed=0, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(path))
    from model_zoo.training._loop import build_model
    from model_zoo.training.recipes import get_recipe, resolve_settings

    settings = resolve_settings(get_recipe(recipe), None, kwargs.get("threat_model"), kwargs.get("eps"))
    model = build_model(settings["architecture"], settings["arch_kwargs"], 10, 0)
    model.load_state_dict(load_file(str(path)))
    source = f"recipe {recipe} ({settings['architecture']} {settings['arch_kwargs']}), {'trained now' if trained else 'cached'} at {path}"
    return model.eval(), source


def undefended() -> nn.Module:
    return load("undefended")[0]


def pgd_trained() -> nn.Module:
    return load("pgd")[0]


def factory_spec(name: str) -> str:
    """The ``--model`` spec of a benchmark model for ``robench evaluate`` / ``robench.run``."""
    return {"undefended": "benchmarks.digits_models:undefended", "pgd": "benchmarks.digits_models:pgd_trained"}[name]
