"""How fast the standard protocol runs, and how much of its wall time the model itself needs.

    python benchmarks/protocol_speed.py [--n-examples 500] [--models undefended,pgd] [--device cpu]
                                        [--threads 1] [--channels-last] [--skip-torchrun] [--skip-optimisations]

On the undefended and the PGD-trained digits CNN (benchmarks/digits_models.py), digits test
points, Linf eps 0.1, the standard protocol, it prints:

1. Per attack: wall time, samples through forward only and through forward+backward
   (StageResult.forward_samples / backward_samples), the model time and the efficiency
   = model time / attack time. The model time is what the model alone needs for those passes,
   measured on the same machine just after the run:
   * ``model@calls``: every call the attacks made, costed at its own batch size from a table of
     measured forward and forward+backward times (the per-call cost of a tiny model is mostly
     fixed overhead, so the batch size matters);
   * ``model@B``: the issue's coarser figure, samples x per-sample cost at the run's batch size B
     (forward+backward samples x t_fb(B)/B + forward samples x t_f(B)/B).
   The rest is the attacks' own arithmetic and Python. Target: efficiency >= 0.8. Both times are
   CPU seconds of this process (``time.process_time``), not wall seconds: on a machine shared with
   other jobs, wall times swing by half from one minute to the next while CPU times stay put.
   With ``--device cuda`` they are wall seconds taken after ``torch.cuda.synchronize()`` instead
   (the GPU's work is not CPU time); the torchrun comparison of part 2 stays on the CPU.
   The optimisations of part 3 are compared in CPU seconds too.
2. One process against two processes under torchrun (the same ``robench.run`` command line,
   wall time of the whole command including start-up), and whether the records agree.
3. The speedup of each optimisation that can be switched: targets batched vs one after another
   (APGD-T and FAB-T ``batch_targets``), early stopping (the protocol attacking only points still
   robust; PGD's and FAB's own early stop), and ``torch.inference_mode`` (Square's queries, and a
   plain forward against one that records autograd). ``--channels-last`` runs parts 1 to 3 on
   the channels_last model (as ``make run`` does); torch.compile is a GPU option, not measured here.

No assertion on time: the figures are for the docs (docs/scaling.md) and the attack authors.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmark.runner as runner  # noqa: E402
from benchmark import evaluate, load_dataset  # noqa: E402
from benchmark.attacks.apgd import APGD  # noqa: E402
from benchmark.attacks.fab import FAB  # noqa: E402
from benchmark.attacks.pgd import PGD  # noqa: E402
from benchmark.attacks.square import Square  # noqa: E402
from benchmark.protocol import PROTOCOLS, build_attack  # noqa: E402
from benchmark.record import EvaluationResult  # noqa: E402
from benchmark.threat_models import get_threat_model  # noqa: E402
from benchmarks.digits_models import factory_spec, load  # noqa: E402

EPS = 0.1


# ------------------------------------------------------------------ instrumentation


class CallLog(nn.Module):
    """Wraps a model and counts its calls per (stage, batch size, with autograd)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stage: str | None = None
        self.calls: Counter[tuple[str | None, int, bool]] = Counter()
        self.cpu: Counter[str] = Counter()

    def forward(self, x: Tensor) -> Tensor:
        self.calls[(self.stage, x.shape[0], torch.is_grad_enabled() and x.requires_grad)] += 1
        return self.model(x)


class _Tagged:
    """An attack whose model calls are logged under its protocol entry's name, and its CPU time summed."""

    def __init__(self, attack: Any, name: str, log: CallLog) -> None:
        self.attack, self.name, self.log = attack, name, log

    def generator(self, *args: Any, **kwargs: Any) -> torch.Generator:
        return self.attack.generator(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.log.stage = self.name
        start = clock()
        try:
            return self.attack(*args, **kwargs)
        finally:
            self.log.cpu[self.name] += clock() - start
            self.log.stage = None


def timed(fn: Callable[[], Any], timer: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    start = timer()
    out = fn()
    return timer() - start, out


def synchronised_wall_time() -> float:
    """Wall seconds, once the GPU's queued work is done (when there is a GPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


#: the clock of the measured figures: CPU seconds of this process on a CPU (steady on a shared machine);
#: on a GPU, wall seconds once the queued work is done (CPU time would miss the device's work)
clock: Callable[[], float] = time.process_time


def use_clock_for(device: str | torch.device) -> None:
    """Pick :data:`clock` for ``device``: CUDA-synchronised wall time on a GPU, CPU time otherwise."""
    global clock
    clock = synchronised_wall_time if torch.device(device).type == "cuda" else time.process_time


def clock_label() -> str:
    return "cpu" if clock is time.process_time else "sync"


def clocked(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of ``fn()`` by :data:`clock` (CPU seconds on a CPU, see :func:`use_clock_for`)."""
    return timed(fn, lambda: clock())


def per_call_seconds(fn: Callable[[], Any], min_time: float = 0.05, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time of one call by :data:`clock`, each repeat lasting >= min_time."""
    fn()
    loops = 1
    while clocked(lambda: [fn() for _ in range(loops)])[0] < min_time:
        loops *= 2
    return sorted(clocked(lambda: [fn() for _ in range(loops)])[0] / loops for _ in range(repeats))[repeats // 2]


class CostTable:
    """Measured seconds of one forward, or one forward+backward (as loss_and_grad does), per batch size."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, sizes: dict[bool, set[int]], points: int = 24) -> None:
        self.model, self.x, self.y = model, x, y
        self.grid = {grad: self._grid(s, points) for grad, s in sizes.items() if s}
        self.seconds = {grad: {b: self._measure(b, grad) for b in grid} for grad, grid in self.grid.items()}

    @staticmethod
    def _grid(sizes: set[int], points: int) -> list[int]:
        if len(sizes) <= points:
            return sorted(sizes)
        lo, hi = min(sizes), max(sizes)
        return sorted({round(lo * (hi / lo) ** (i / (points - 1))) for i in range(points)})

    def _batch(self, b: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(b, device=self.x.device) % len(self.x)
        return self.x[idx], self.y[idx]

    def _measure(self, b: int, grad: bool) -> float:
        x, y = self._batch(b)
        if grad:
            def call() -> Tensor:
                xr = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = nn.functional.cross_entropy(self.model(xr), y, reduction="sum")
                    return torch.autograd.grad(loss, xr)[0]
        else:
            def call() -> Tensor:
                with torch.no_grad():
                    return self.model(x)
        return per_call_seconds(call)

    def cost(self, b: int, grad: bool) -> float:
        """Seconds of one call at batch size b (linear interpolation between measured sizes)."""
        table = self.seconds[grad]
        sizes = self.grid[grad]
        if b in table:
            return table[b]
        if b <= sizes[0]:
            return table[sizes[0]] * b / sizes[0] if b < sizes[0] and sizes[0] > 1 else table[sizes[0]]
        if b >= sizes[-1]:
            return table[sizes[-1]] * b / sizes[-1]
        hi = next(s for s in sizes if s > b)
        lo = max(s for s in sizes if s < b)
        w = (b - lo) / (hi - lo)
        return (1 - w) * table[lo] + w * table[hi]


def cost_table_for(log: CallLog, model: nn.Module, x: Tensor, y: Tensor, also: int | None = None) -> CostTable:
    """A cost table covering the batch sizes of every logged call (and ``also``, when given)."""
    sizes: dict[bool, set[int]] = {True: set(), False: set()}
    for (_, b, grad) in log.calls:
        sizes[grad].add(b)
    if also is not None:
        sizes[True].add(also)
        sizes[False].add(also)
    return CostTable(model, x, y, sizes)


# ------------------------------------------------------------------ 1. the protocol, per attack


def protocol_run(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: str, channels_last: bool = False,
                 log: CallLog | None = None) -> tuple[EvaluationResult, CallLog]:
    """The standard protocol on ``model`` with every model call logged, in ``log`` when given (a CallLog
    of ``model`` or of a wrapper of it); channels_last converts ``model`` in place."""
    log = log if log is not None else CallLog(model)
    real_build = runner.build_attack
    runner.build_attack = lambda entry, *a, **k: _Tagged(real_build(entry, *a, **k), entry.name, log)
    try:
        result = evaluate(log, "digits", "Linf", EPS, x=x, y=y, batch_size=batch_size, device=device,
                          progress=False, analysis=False, channels_last=channels_last)
    finally:
        runner.build_attack = real_build
    return result, log


def report_protocol(name: str, source: str, result: EvaluationResult, log: CallLog, table: CostTable) -> dict:
    b = result.batch_size
    t_fb, t_f = table.cost(b, True) / b, table.cost(b, False) / b
    print(f"\n== {name}: {source}")
    print(f"   {result.n_examples} points, batch {b}, clean {result.clean_accuracy:.1%}, robust {result.robust_accuracy:.1%}; "
          f"per-sample {clock_label()} cost at batch {b}: forward+backward {1e6 * t_fb:.1f} us, forward {1e6 * t_f:.1f} us")
    print(f"   {'attack':<9}{'wall s':>8}{clock_label() + ' s':>8}{'fwd smp':>10}{'fwd+bwd smp':>13}{'calls':>7}"
          f"{'model@calls':>13}{'eff':>6}{'model@B':>9}{'eff':>6}{'robust':>8}")
    rows: dict[str, dict[str, float]] = {}
    for stage in result.stages:
        calls = {(bs, g): n for (s, bs, g), n in log.calls.items() if s == stage.attack}
        row = {"wall_s": stage.time_s, "cpu_s": log.cpu[stage.attack], "forward_samples": stage.forward_samples,
               "backward_samples": stage.backward_samples, "calls": sum(calls.values()),
               "model_s_calls": sum(n * table.cost(bs, g) for (bs, g), n in calls.items()),
               "model_s_batch": stage.backward_samples * t_fb + stage.forward_samples * t_f}
        rows[stage.attack] = row
    rows["attacks"] = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    for attack, r in rows.items():
        cpu = r["cpu_s"] or float("nan")
        r["efficiency_calls"], r["efficiency_batch"] = r["model_s_calls"] / cpu, r["model_s_batch"] / cpu
        robust = f"{result.stages[[s.attack for s in result.stages].index(attack)].robust_accuracy:8.1%}" if attack != "attacks" else ""
        print(f"   {attack:<9}{r['wall_s']:8.2f}{r['cpu_s']:8.2f}{int(r['forward_samples']):10d}{int(r['backward_samples']):13d}"
              f"{int(r['calls']):7d}{r['model_s_calls']:13.2f}{r['efficiency_calls']:6.2f}{r['model_s_batch']:9.2f}"
              f"{r['efficiency_batch']:6.2f}{robust}")
    print(f"   whole run {result.timings['total_s']:.2f} s wall (checks {result.timings['checks_s']:.2f} s, clean passes "
          f"and bookkeeping {result.timings['total_s'] - result.timings['checks_s'] - rows['attacks']['wall_s']:.2f} s)")
    return {"stages": rows, "total_s": result.timings["total_s"], "t_fb_us": 1e6 * t_fb, "t_f_us": 1e6 * t_f}


# ------------------------------------------------------------------ 2. torchrun


def torchrun_comparison(model_name: str, n: int, batch_size: int, nproc: int, channels_last: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["-m", "robench.run", "--model", factory_spec(model_name), "--n-examples", str(n), "--batch-size",
            str(batch_size), "--eps", str(EPS), "--device", "cpu", "--no-progress"] + ["--channels-last"] * channels_last
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        records = {}
        for label, prefix in (("1 process", []), (f"{nproc} processes", ["-m", "torch.distributed.run", "--standalone",
                                                                       f"--nproc_per_node={nproc}"])):
            folder = Path(tmp) / label.replace(" ", "_")
            cmd = [sys.executable, *prefix, *args, "--out", str(folder)]
            wall, proc = timed(lambda: subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True))
            if proc.returncode != 0:
                print(f"   {label}: failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
                return out
            path = next(folder.rglob("*.json"))
            records[label] = json.loads(path.read_text())
            out[label] = {"command_wall_s": wall, "record_total_s": records[label]["timings"]["total_s"]}
        one, many = records.values()
        same = one["points"] == many["points"] and one["robust_accuracy"] == many["robust_accuracy"]
        (l1, r1), (l2, r2) = out.items()
        print(f"\n== torchrun, {model_name} model, {n} points in chunks of {batch_size}, OMP_NUM_THREADS=1, "
              f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f})")
        print(f"   {'':<12}{'command wall s':>16}{'attacks+checks s':>18}")
        for label, r in out.items():
            print(f"   {label:<12}{r['command_wall_s']:16.1f}{r['record_total_s']:18.1f}")
        print(f"   speedup: {r1['command_wall_s'] / r2['command_wall_s']:.2f}x whole command, "
              f"{r1['record_total_s'] / r2['record_total_s']:.2f}x evaluation; identical per-point results: {same}")
        out["identical"] = same
    return out


# ------------------------------------------------------------------ 3. optimisations


def _robust_after(result: EvaluationResult, stage: str) -> Tensor:
    names = [s.attack for s in result.stages]
    later = set(names[names.index(stage) + 1:])
    return torch.tensor([p.index for p in result.points if p.robust or p.broken_by in later], dtype=torch.long)


def _speedup_line(label: str, slow: tuple[str, float, Any], fast: tuple[str, float, Any]) -> dict:
    print(f"   {label:<44}{slow[0]:>22} {slow[1]:7.2f} s   {fast[0]:>22} {fast[1]:7.2f} s   speedup {slow[1] / fast[1]:5.2f}x"
          f"   (robust: {slow[2]} / {fast[2]})")
    return {"label": label, slow[0]: slow[1], fast[0]: fast[1], "speedup": slow[1] / fast[1]}


def _attack_time(attack: Any, model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, int]:
    """CPU seconds of one attack call, and the points it left unbroken."""
    gen = attack.generator(x.device, offset=1)
    seconds, out = clocked(lambda: attack(model, x, y, EPS, generator=gen))
    return seconds, int((~out.success).sum())


def optimisations(models: dict[str, tuple[nn.Module, EvaluationResult]], x: Tensor, y: Tensor) -> list[dict]:
    print("\n== optimisations (CPU seconds; same points, same seeds; robust = points left unbroken by the attack)")
    rows = []
    pgd_model, pgd_result = models.get("pgd", next(iter(models.values())))
    std = {e.name: e for e in PROTOCOLS["standard"]}

    # targets batched into one batch of copies, or one target after another
    for stage, cls in (("apgd-t", APGD), ("fab-t", FAB)):
        idx = _robust_after(pgd_result, "apgd-ce" if stage == "apgd-t" else "apgd-t")
        if not len(idx):
            continue
        settings = dict(std[stage].settings)
        timings = []
        for batched in (False, True):
            attack = cls("Linf", seed=0, batch_targets=batched, **settings)
            timings.append((f"batch_targets={batched}", *_attack_time(attack, pgd_model, x[idx], y[idx])))
        rows.append(_speedup_line(f"{stage} on the {len(idx)} points it gets (pgd model)", *timings))

    # the protocol attacks only the points still robust, against every attack on every clean point
    for name, (model, result) in models.items():
        clean = torch.tensor([p.index for p in result.points if p.clean_correct], dtype=torch.long)
        total = 0.0
        for entry in PROTOCOLS["standard"]:
            total += _attack_time(build_attack(entry, get_threat_model("Linf"), 10, 0), model, x[clean], y[clean])[0]
        cascade = clocked(lambda: evaluate(model, "digits", "Linf", EPS, x=x, y=y, batch_size=len(x), progress=False,
                                             analysis=False))[0]
        rows.append(_speedup_line(f"protocol: only still-robust points ({name})", ("every attack, all pts", total, "-"),
                                  ("still-robust only", cascade, f"{result.robust_accuracy:.1%}")))

    # early stop inside an attack
    und_model, und_result = models.get("undefended", (pgd_model, pgd_result))
    clean = torch.tensor([p.index for p in und_result.points if p.clean_correct], dtype=torch.long)
    timings = [(f"early_stop={flag}", *_attack_time(PGD("Linf", n_iter=100, early_stop=flag), und_model, x[clean], y[clean]))
               for flag in (False, True)]
    rows.append(_speedup_line(f"PGD-100 on {len(clean)} clean points (undefended)", *timings))
    idx = _robust_after(pgd_result, "apgd-t")
    if len(idx):
        settings = dict(std["fab-t"].settings)
        timings = [(f"early_stop_eps={flag}", *_attack_time(FAB("Linf", seed=0, early_stop_eps=flag, **settings),
                                                             pgd_model, x[idx], y[idx])) for flag in (False, True)]
        rows.append(_speedup_line(f"fab-t on {len(idx)} points (pgd model)", *timings))

    # inference_mode: Square's queries with and without it, and one forward pass
    idx = _robust_after(pgd_result, "fab-t")[:100]
    if len(idx):
        attack = Square("Linf", n_queries=1000, seed=0)
        real = torch.inference_mode
        try:
            torch.inference_mode = torch.enable_grad  # type: ignore[assignment]  # the queries then record autograd
            without = ("autograd recorded", *_attack_time(attack, pgd_model, x[idx], y[idx]))
        finally:
            torch.inference_mode = real  # type: ignore[assignment]
        with_ = ("inference_mode", *_attack_time(attack, pgd_model, x[idx], y[idx]))
        rows.append(_speedup_line(f"square 1000 queries on {len(idx)} points (pgd model)", without, with_))
    for b in (1, 32, 500):
        xb = x[torch.arange(b) % len(x)]
        costs = []
        for label, ctx in (("autograd recorded", torch.enable_grad), ("no_grad", torch.no_grad),
                           ("inference_mode", torch.inference_mode)):
            def call(ctx=ctx) -> Tensor:
                with ctx():
                    return pgd_model(xb)
            costs.append((label, per_call_seconds(call) * 1e3, "-"))
        print(f"   forward of batch {b:<4} (ms): " + ", ".join(f"{label} {ms:.3f}" for label, ms, _ in costs)
              + f"; inference_mode speedup {costs[0][1] / costs[2][1]:.2f}x")
        rows.append({"label": f"forward batch {b}", **{label: ms for label, ms, _ in costs}})
    return rows


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--models", default="undefended,pgd", help="comma-separated: undefended, pgd")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models on a shared machine)")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun comparison")
    parser.add_argument("--torchrun-batch-size", type=int, default=250,
                        help="chunk size of the torchrun comparison (at least one chunk per process)")
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument("--skip-optimisations", action="store_true")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the protocol as `robench evaluate --channels-last` (make run's setting); the model "
                             "time is then measured on the converted model")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    use_clock_for(args.device)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), {os.cpu_count()} cores, "
          f"{'channels_last, ' if args.channels_last else ''}"
          f"load average {os.getloadavg()[0]:.1f}")
    x, y = load_dataset("digits", "test", n_examples=args.n_examples)
    x, y = x.to(args.device), y.to(args.device)
    figures: dict[str, Any] = {"protocol": {}}
    runs = {}
    warm_up, _ = load(args.models.split(",")[0])
    evaluate(warm_up.to(args.device), "digits", "Linf", EPS, x=x[:8], y=y[:8], progress=False)  # first-call costs
    for name in args.models.split(","):
        model, source = load(name)
        model = model.to(args.device).eval()
        result, log = protocol_run(model, x, y, args.batch_size, args.device, args.channels_last)
        table = cost_table_for(log, model, x, y, also=args.batch_size)
        figures["protocol"][name] = report_protocol(name, source, result, log, table)
        runs[name] = (model, result)
    if not args.skip_torchrun:
        for name in args.models.split(","):
            figures.setdefault("torchrun", {})[name] = torchrun_comparison(name, args.n_examples, args.torchrun_batch_size,
                                                                           args.nproc, args.channels_last)
    if not args.skip_optimisations:
        figures["optimisations"] = optimisations(runs, x, y)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
