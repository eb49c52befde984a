"""Calibrate the digits boards' eps, and check the shipped digits zoo against strong attacks.

The rule (docs/datasets.md): the digits eps is chosen so that the undefended model falls below 10% robust
accuracy and the best adversarially trained one stays above 50%. For each threat model this
script trains the undefended model once (recipe ``standard``) and, for each eps of a grid, a
PGD-trained model at that eps (recipe ``pgd_at``, the other settings at their defaults), then
prints each one's robust accuracy under a strong attack: the worst case, point by point, over
PGD-CE (50 steps of 2.5 eps / 50, several restarts) then APGD-CE and APGD-T (100 iterations,
9 targets). Trained models are cached under the user cache directory (``--cache``).

``--zoo`` instead evaluates every shipped digits model at its board's eps with each attack
alone (FGSM, PGD-CE, PGD-DLR, APGD-CE, APGD-T) and with all of them (worst case), which shows
gradient masking as a gap between PGD-CE and the DLR attacks (defensive distillation).

    python benchmarks/calibrate_digits_eps.py                       # both grids, ~30 min on 1 thread
    python benchmarks/calibrate_digits_eps.py --threat-model L2 --grid 0.5,0.75,1.0
    python benchmarks/calibrate_digits_eps.py --zoo
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmark.attacks.apgd import APGD
from benchmark.attacks.base import Attack
from benchmark.attacks.pgd import FGSM, PGD
from benchmark.data import load_dataset
from model_zoo.architectures import DigitsCNN
from model_zoo.training import get_recipe, resolve_settings, save_checkpoint, train

GRIDS = {"Linf": [0.1, 0.15, 0.2, 0.25], "L2": [0.5, 0.75, 1.0, 1.25]}
UNDEFENDED_MAX, ROBUST_MIN = 0.10, 0.50


def strong_attacks(threat_model: str, restarts: int) -> list[tuple[str, Attack]]:
    pgd = [(f"pgd-ce#{r}", PGD(threat_model, n_iter=50, step_size=2.5 / 50, seed=r)) for r in range(restarts)]
    return pgd + [("apgd-ce", APGD(threat_model, loss="ce")), ("apgd-t", APGD(threat_model, loss="dlr", n_targets=9))]


def robust_flags(model: nn.Module, x: Tensor, y: Tensor, eps: float, attacks: list[tuple[str, Attack]]) -> Tensor:
    """Per point: correctly classified and not broken by any of the attacks (each run on the survivors)."""
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for _, attack in attacks:
        idx = robust.nonzero().flatten()
        if len(idx) == 0:
            break
        robust[idx[attack(model, x[idx], y[idx], eps).success]] = False
    return robust


def cached_train(cache: Path, recipe: str, **kwargs) -> nn.Module:
    """Train (or load the cached result of) a recipe run; the cache key is the run's full settings."""
    settings = resolve_settings(get_recipe(recipe), **kwargs)
    key = hashlib.sha256(json.dumps([recipe, settings, str(torch.__version__)], sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"{recipe}-{key}.safetensors"
    settings_path = path.with_suffix(".json")
    if path.is_file() and settings_path.is_file():
        from safetensors.torch import load_file

        settings = json.loads(settings_path.read_text())
        model = DigitsCNN(**settings["arch_kwargs"])
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.eval()
    start = time.perf_counter()
    result = train(recipe, **kwargs)
    print(f"  trained {recipe} {kwargs} in {time.perf_counter() - start:.0f} s", flush=True)
    save_checkpoint(result.model, path)
    settings_path.write_text(json.dumps(result.settings))
    return result.model


def calibrate(threat_model: str, grid: list[float], cache: Path, restarts: int, n_examples: int | None) -> None:
    x, y = load_dataset("digits", "test", n_examples=n_examples)
    undefended = cached_train(cache, "standard")
    print(f"\n{threat_model}: robust accuracy (worst case of {restarts} x PGD-CE-50, APGD-CE, APGD-T) on {len(x)} points")
    print(f"{'eps':>6} | {'undefended':>10} | {'PGD-AT clean':>12} | {'PGD-AT robust':>13} | criteria met")
    for eps in grid:
        attacks = strong_attacks(threat_model, restarts)
        und = robust_flags(undefended, x, y, eps, attacks).float().mean().item()
        trained = cached_train(cache, "pgd_at", threat_model=threat_model, eps=eps)
        with torch.no_grad():
            clean = (trained(x).argmax(1) == y).float().mean().item()
        rob = robust_flags(trained, x, y, eps, attacks).float().mean().item()
        ok = und < UNDEFENDED_MAX and rob > ROBUST_MIN
        print(f"{eps:>6g} | {und:>10.1%} | {clean:>12.1%} | {rob:>13.1%} | {'yes' if ok else 'no'}", flush=True)


def zoo_attacks(threat_model: str) -> list[tuple[str, Attack]]:
    steps = 2.5 / 50
    return [
        ("FGSM", FGSM(threat_model)),
        ("PGD-CE", PGD(threat_model, n_iter=50, step_size=steps)),
        ("PGD-DLR", PGD(threat_model, n_iter=50, step_size=steps, loss="dlr")),
        ("APGD-CE", APGD(threat_model, loss="ce")),
        ("APGD-T", APGD(threat_model, loss="dlr", n_targets=9)),
    ]


def evaluate_zoo(n_examples: int | None) -> None:
    """Each shipped digits model at its board's eps: each attack alone, then the worst case over all."""
    from model_zoo import get_card, list_models, load_model

    x, y = load_dataset("digits", "test", n_examples=n_examples)
    names = [n for n, _ in zoo_attacks("Linf")]
    print(f"{'model':26s} {'board':5s} {'eps':>4} {'clean':>6} " + " ".join(f"{n:>7}" for n in names) + f" {'worst':>6}")
    for tm in ("Linf", "L2"):
        for name in list_models(dataset="digits", threat_model=tm):
            card = get_card(name, dataset="digits", threat_model=tm)
            model = load_model(name, dataset="digits", threat_model=tm)
            with torch.no_grad():
                clean = (model(x).argmax(1) == y).float().mean().item()
            attacks = zoo_attacks(tm)
            accs = [robust_flags(model, x, y, card.eps, [entry]).float().mean().item() for entry in attacks]
            worst = robust_flags(model, x, y, card.eps, attacks).float().mean().item()
            print(f"{name:26s} {tm:5s} {card.eps:>4g} {clean:>6.1%} " + " ".join(f"{a:>7.1%}" for a in accs)
                  + f" {worst:>6.1%}", flush=True)


def main() -> None:
    import platformdirs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threat-model", choices=list(GRIDS), action="append", help="default: both")
    parser.add_argument("--grid", default=None, help="comma-separated eps values (default: the built-in grid)")
    parser.add_argument("--restarts", type=int, default=3, help="PGD-CE restarts (default 3)")
    parser.add_argument("--n-examples", type=int, default=None, help="first N test points (default: all 500)")
    parser.add_argument("--cache", type=Path, default=Path(platformdirs.user_cache_dir("robench")) / "calibration")
    parser.add_argument("--zoo", action="store_true", help="evaluate the shipped digits zoo instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.zoo:
        evaluate_zoo(args.n_examples)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    for tm in args.threat_model or list(GRIDS):
        grid = [float(v) for v in args.grid.split(",")] if args.grid else GRIDS[tm]
        calibrate(tm, grid, args.cache, args.restarts, args.n_examples)


if __name__ == "__main__":
    main()
