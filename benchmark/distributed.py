"""torch.distributed helpers: the runner shards chunks across ranks and gathers them on rank 0."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["rank_and_world", "init_from_env", "finish", "gather_chunks", "local_device"]


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment; False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return True


def finish(wait: bool = True) -> None:
    """Leave the process group, after every rank got here when ``wait`` (rank 0 writes the record last).

    A rank that exits with its group alive can be aborted by the backend's threads at interpreter
    exit ("terminate called without an active exception"), so every rank leaves it explicitly.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


def local_device() -> str:
    """The device this rank should use: its own GPU under torchrun, else cuda:0 or cpu."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def gather_chunks(results: dict[int, Any]) -> dict[int, Any]:
    """Merge every rank's {chunk start: results} on all ranks (only rank 0 uses the merge)."""
    gathered: list[dict[int, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, results)
    merged: dict[int, Any] = {}
    for part in gathered:
        merged.update(part or {})
    return merged
