"""robench's standard protocol against torchattacks' AutoAttack: same model, points, eps, machine, one run.

    python benchmarks/compare_torchattacks.py [--n-examples 500] [--models undefended,pgd]
                                              [--threads 1] [--device cpu|cuda] [--profile] [--no-channels-last]

An independent check (issue 2): on the digits CNNs of benchmarks/digits_models.py
(undefended and PGD-trained), Linf eps 0.1, the first ``--n-examples`` digits test points, it
runs, one after the other in this process:

* robench ``evaluate(version="standard")`` (APGD-CE, APGD-T, FAB-T with 100 iterations, Square 5,000),
  with ``channels_last=True`` (``robench evaluate --channels-last``) unless ``--no-channels-last``;
* ``torchattacks.AutoAttack(version="standard", n_classes=10, seed=0)`` as shipped. torchattacks 3.3
  builds its APGD, APGD-T and FAB there with their default of 10 iterations, not the paper's 100;
* the same four torchattacks attacks with the standard settings (``MultiAttack``, which like
  AutoAttack attacks only the points still robust): APGD-CE, APGD-T (``n_classes=10``: 9 targets),
  FAB multi-targeted (9 targets) with 100 iterations, Square with 5,000 queries; the fair comparison
  of cost. It runs twice: on the model as given, and on the same model converted to channels_last
  as robench runs it, so that the layout's own speedup is not credited to robench.

It prints robust accuracy and wall time of each, the speed ratio, and the points one side breaks
and the other misses. Targets: robench's robust accuracy <= torchattacks', robench's wall time
<= 0.5 x torchattacks'. Last, the model time of robench's passes (each model call it made, costed
at its own batch size from measured times, as in benchmarks/protocol_speed.py) as a share of both
wall times: torchattacks makes at least the same passes (it does not drop broken points inside a
run), so that share is the lowest ratio any implementation of the protocol could reach here.
``--profile`` adds where robench's time goes (cProfile, top functions).
torchattacks is used here only as an outside reference; nothing of it is used by robench.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark import evaluate, load_dataset  # noqa: E402
from benchmarks.digits_models import load  # noqa: E402
import benchmarks.protocol_speed as speed  # noqa: E402
from benchmarks.protocol_speed import CallLog, cost_table_for  # noqa: E402

EPS = 0.1


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``fn()``, with the GPU's queued work included."""
    return speed.timed(fn, speed.synchronised_wall_time)


def robench_run(model: nn.Module, x: Tensor, y: Tensor, profile: bool, channels_last: bool
                ) -> tuple[float, Tensor, dict[str, float], float | None]:
    """Wall time, per-point robust flags and per-attack times of robench's standard protocol, and the
    model time of its passes: every model call it made, costed at its batch size (a lower bound for
    any implementation that makes the same passes; CPU only: the cost table counts CPU seconds)."""
    log = CallLog(model)
    run = lambda: evaluate(log, "digits", "Linf", EPS, x=x, y=y, batch_size=len(x), seed=0, progress=False,  # noqa: E731
                           analysis=False, channels_last=channels_last, device=x.device)
    if profile:
        prof = cProfile.Profile()
        wall, result = timed(lambda: prof.runcall(run))
        stream = io.StringIO()
        pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(25)
        print("   robench profile (by own time; the profiler itself slows the run down):")
        print("\n".join("   " + line for line in stream.getvalue().splitlines()[4:40]))
    else:
        wall, result = timed(run)
    robust = torch.tensor([p.robust for p in result.points])
    if x.device.type != "cpu":
        return wall, robust, {s.attack: s.time_s for s in result.stages}, None
    table = cost_table_for(log, model, x, y)  # model was converted in place when channels_last
    model_s = sum(n * table.cost(b, grad) for (_, b, grad), n in log.calls.items())
    return wall, robust, {s.attack: s.time_s for s in result.stages}, model_s


def _time_parts(multi: Any) -> dict[str, float]:
    """Accumulate the time of each attack of a torchattacks MultiAttack (by wrapping its forward)."""
    times: dict[str, float] = {}
    for part in multi.attacks:
        def forward(*args: Any, _part: Any = part, _real: Callable = part.forward, **kwargs: Any) -> Any:
            seconds, out = timed(lambda: _real(*args, **kwargs))
            times[_part.attack] = times.get(_part.attack, 0.0) + seconds
            return out
        part.forward = forward
    return times


def torchattacks_run(attack: Any, model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, Tensor, int, dict[str, float]]:
    """Wall time, per-point robust flags, points outside the eps-ball or [0, 1], and time per attack."""
    parts = _time_parts(getattr(attack, "_autoattack", attack))
    wall, x_adv = timed(lambda: attack(x, y))
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).cpu()
    delta = (x_adv - x).flatten(1).abs().amax(1)
    outside = int(((delta > EPS + 1e-5) | (x_adv.flatten(1).amin(1) < 0) | (x_adv.flatten(1).amax(1) > 1)).sum())
    return wall, robust, outside, parts


def torchattacks_paper_settings(model: nn.Module) -> Any:
    """torchattacks' four standard attacks with the paper's 100 iterations (AutoAttack there uses 10)."""
    import torchattacks as ta

    return ta.MultiAttack([
        ta.APGD(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0, loss="ce"),
        ta.APGDT(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0, n_classes=10),
        ta.FAB(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, seed=0, multi_targeted=True, n_classes=10),
        ta.Square(model, norm="Linf", eps=EPS, n_queries=5000, n_restarts=1, seed=0),
    ])


def compare(name: str, n: int, profile: bool, channels_last: bool, device: str = "cpu") -> dict[str, Any]:
    import copy

    import torchattacks as ta

    from benchmark.runner import prepare_model

    model, source = load(name)
    model = model.to(device)
    model_cl = prepare_model(copy.deepcopy(model), channels_last=True)
    x, y = (t.to(device) for t in load_dataset("digits", "test", n_examples=n))
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    print(f"\n== {name}: {source}\n   {n} points, Linf eps {EPS}, clean accuracy {clean:.1%}, torchattacks {ta.__version__}, "
          f"device {device}")
    ours_wall, ours_robust, stages, model_s = robench_run(copy.deepcopy(model), x, y, profile, channels_last)
    rows = {"robench standard" + (" (channels_last)" if channels_last else ""): (ours_wall, ours_robust, 0, stages)}
    rows["torchattacks AutoAttack (as shipped)"] = torchattacks_run(
        ta.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0), model, x, y)
    rows["torchattacks, standard settings"] = torchattacks_run(torchattacks_paper_settings(model), model, x, y)
    rows["torchattacks, standard, channels_last"] = torchattacks_run(torchattacks_paper_settings(model_cl), model, x, y)
    print(f"   {'':<38}{'robust acc':>11}{'wall s':>9}{'robench / it':>14}{'outside ball':>14}")
    out: dict[str, Any] = {"clean": clean, "robench_stages_s": stages, "robench_model_s": model_s}
    for label, (wall, robust, outside, parts) in rows.items():
        ratio = ours_wall / wall
        print(f"   {label:<38}{robust.float().mean().item():11.1%}{wall:9.1f}{ratio:14.2f}{outside:14d}")
        print(f"   {'':<38}per attack (s): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        out[label] = {"robust_accuracy": robust.float().mean().item(), "wall_s": wall, "robench_time_ratio": ratio,
                      "outside": outside, "per_attack_s": parts}
        if not label.startswith("robench"):
            only_ours = int((~ours_robust & robust).sum())
            only_theirs = int((ours_robust & ~robust).sum())
            print(f"   {'':<38}points broken only by robench: {only_ours}, only by torchattacks: {only_theirs}")
    if model_s is None:
        return out
    fair = rows["torchattacks, standard, channels_last"][0]
    print(f"   model time of robench's passes (CPU s, each call costed at its batch size): {model_s:.1f} s = "
          f"{model_s / ours_wall:.2f} of robench's wall time, {model_s / fair:.2f} of torchattacks' (channels_last): "
          f"no implementation making these passes can go below that ratio on this machine")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument("--models", default="undefended,pgd", help="comma-separated: undefended, pgd")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the model-time floor is computed on the CPU only)")
    parser.add_argument("--profile", action="store_true", help="profile robench's run with cProfile")
    parser.add_argument("--no-channels-last", action="store_true", help="run robench on the model's own layout")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmark.record import library_versions

    library_versions()  # imports torchvision once, outside the timed runs
    print(f"torch {torch.__version__}, {args.device}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in args.models.split(","):
        compare(name, args.n_examples, args.profile, not args.no_channels_last, args.device)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
