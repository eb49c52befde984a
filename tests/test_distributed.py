"""torchrun: 2 processes (gloo, CPU) shard the chunks and write the record a single process writes."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `--model tests.runner_models:...` and the imports below need the repository root
    sys.path.insert(0, str(REPO))

from robench.cli import build_parser  # noqa: E402
from robench.evaluation import add_evaluation_arguments, evaluation_argv  # noqa: E402
from robench.cli import main as cli_main  # noqa: E402
from tests.runner_models import WEIGHTS_ENV, shared_weights  # noqa: E402

#: 8 chunks of 8 points (the last one of 4): rank 0 attacks chunks 0, 16, 32, 48 and rank 1 the others
ARGS = ["--model", "tests.runner_models:digits_mlp", "--dataset", "digits", "--n-examples", "60",
        "--batch-size", "8", "--eps", "0.18", "--no-progress"]
RECORD = Path("digits", "Linf", "digits_mlp.standard.json")


def _comparable(path: Path) -> dict:
    record = json.loads(path.read_text())
    record = {k: v for k, v in record.items() if k not in ("timings", "created")}
    record["stages"] = [{k: v for k, v in s.items() if k != "time_s"} for s in record["stages"]]
    return record


def test_torchrun_two_processes_match_one_process(tmp_path, monkeypatch):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", WEIGHTS_ENV: str(shared_weights())}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "robench.run", *ARGS, "--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("record written to") == 1  # only rank 0 reports

    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_main(["evaluate", *ARGS, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(before)

    one, two = _comparable(tmp_path / "one" / RECORD), _comparable(tmp_path / "two" / RECORD)
    assert one["points"] == two["points"]
    assert one == two
    assert len(one["points"]) == 60 and one["clean_accuracy"] > one["robust_accuracy"]
    # the journals of both ranks are gone once the record is written
    assert sorted(p.name for p in (tmp_path / "two" / RECORD).parent.iterdir()) == [RECORD.name]


def test_distributed_flag_forwards_every_evaluation_argument():
    """``robench evaluate --distributed N`` hands robench.run exactly the arguments it was given."""
    given = ["-v", "evaluate", "--model", "pkg.mod:factory", "--dataset", "cifar10", "--threat-model", "L2",
             "--eps", "8/255", "--n-examples", "100", "--version", "plus", "--seed", "3", "--batch-size", "50",
             "--device", "cuda", "--out", "res", "--data-dir", "/data", "--no-progress", "--no-channels-last",
             "--distributed", "8"]
    args = build_parser().parse_args(given)
    run_parser = argparse.ArgumentParser()
    run_parser.add_argument("--model", required=True)
    add_evaluation_arguments(run_parser)
    forwarded = vars(run_parser.parse_args(evaluation_argv(args)))
    assert forwarded == {k: v for k, v in vars(args).items() if k in forwarded}
    assert forwarded["eps"] == "8/255" and forwarded["model"] == "pkg.mod:factory" and forwarded["no_progress"]
    assert forwarded["channels_last"] is False  # an explicit --no-x is forwarded, not left to the default
    on = build_parser().parse_args(["evaluate", "--model", "m:f", "--channels-last", "--verify", "--compile"])
    assert evaluation_argv(on)[-5:-2] == ["--channels-last", "--compile", "--verify"]
    defaults = build_parser().parse_args(["evaluate", "--model", "m:f"])
    assert vars(run_parser.parse_args(evaluation_argv(defaults))) == {k: v for k, v in vars(defaults).items()
                                                                       if k in forwarded}


def test_finish_leaves_the_process_group(tmp_path):
    """Every rank destroys its group before exit; a live gloo group can abort the interpreter at exit."""
    import torch.distributed as dist

    from benchmark.distributed import finish, rank_and_world

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized() and rank_and_world() == (0, 1)
    finish()
    assert not dist.is_initialized() and rank_and_world() == (0, 1)
    finish()  # nothing to leave: a no-op
