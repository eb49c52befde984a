"""Entry point for torchrun: ``torchrun --nproc_per_node N -m robench.run --model NAME ...``.

Every rank evaluates its share of the chunks; rank 0 gathers them and writes the record,
identical to a single-process run with the same seed. ``robench evaluate --distributed N``
starts this through torch.distributed.run on the local node.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Sequence

from .evaluation import add_evaluation_arguments, run_evaluation

__all__ = ["main", "launch"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robench.run", description=__doc__)
    parser.add_argument("--model", required=True)
    add_evaluation_arguments(parser)
    return run_evaluation(parser.parse_args(argv))


def launch(nproc: int, evaluate_args: Sequence[str]) -> int:
    """Run ``robench.run`` under torch.distributed.run with ``nproc`` processes on this node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "robench.run", *evaluate_args]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
