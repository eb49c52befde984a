"""The evaluation journal: finished chunks are appended as they complete, so a killed run resumes.

One JSON line per finished chunk, after a header line holding the run's configuration. A
journal written under another configuration (arguments, checkpoint, data) is refused. Under
torchrun each rank appends to its own file (``<path>.rank<R>``); any rank may reuse any
finished chunk, since a chunk's results do not depend on who computed it.

Each file has one writer at a time: the first append takes a lock (``<file>.lock``, released by
:meth:`Journal.finish` or when the process ends), and a second run writing the same journal is
refused. Each chunk line carries a sha256 over the header's configuration and the line's content,
and is checked when read, as is its shape (the chunk's start, its points' indices and fields): a
line edited by hand, copied from another run or of the wrong shape is skipped with a warning, and
its chunk is attacked again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from filelock import FileLock, Timeout
from torch import Tensor, nn

from .record import PointResult, remove_stale_temporaries, temporary_prefix

__all__ = ["Journal", "JournalMismatchError", "JournalBusyError", "fingerprint_model"]

JOURNAL_FORMAT = 2

log = logging.getLogger(__name__)
_POINT_FIELDS = frozenset(f.name for f in dataclasses.fields(PointResult))
_POINT_REQUIRED = frozenset(f.name for f in dataclasses.fields(PointResult)
                            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


class JournalMismatchError(RuntimeError):
    """A journal exists for this output but was written by a run with other settings."""


class JournalBusyError(JournalMismatchError):
    """Another run is writing this journal now."""


def fingerprint_model(model: nn.Module | None, tensors: Iterable[Tensor] = ()) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes, bytes) and any extra tensors."""
    h = hashlib.sha256()
    items = list(model.state_dict().items()) if model is not None else []
    items += [(f"tensor{i}", t) for i, t in enumerate(tensors)]
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Journal:
    def __init__(self, path: str | os.PathLike, config: dict[str, Any], rank: int = 0) -> None:
        self.base = Path(path)
        self.path = self.base if rank == 0 else self.base.with_name(f"{self.base.name}.rank{rank}")
        self.config = json.loads(json.dumps(config))  # normalise (tuples -> lists, floats)
        self._lock: FileLock | None = None
        self._check_existing()

    def _take_the_pen(self) -> None:
        if self._lock is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise JournalBusyError(f"another run is writing the journal {self.path} now; wait for it to end, "
                                   "or choose another output") from None
        self._lock = lock

    def _check(self, start: int, points: list[dict], stats: list[dict]) -> str:
        content = json.dumps({"config": self.config, "chunk": start, "points": points, "stats": stats}, sort_keys=True)
        return hashlib.sha256(content.encode()).hexdigest()

    def _valid_chunk(self, line: Any) -> bool:
        """A chunk line of the right shape whose check matches this journal's configuration."""
        if not (isinstance(line, dict) and set(line) == {"chunk", "points", "stats", "check"}):
            return False
        start, points, stats = line["chunk"], line["points"], line["stats"]
        if not (isinstance(start, int) and not isinstance(start, bool) and start >= 0
                and isinstance(points, list) and isinstance(stats, list)
                and all(isinstance(p, dict) and _POINT_REQUIRED <= set(p) <= _POINT_FIELDS for p in points)):
            return False
        if [p["index"] for p in points] != list(range(start, start + len(points))):
            return False
        size, n = self.config.get("batch_size"), self.config.get("n_examples")
        if isinstance(size, int) and isinstance(n, int) and (start % size or start >= n or len(points) != min(size, n - start)):
            return False
        return line["check"] == self._check(start, points, stats)

    def _create(self) -> None:
        """Write the header line: whole, then renamed into place, so that another rank reading it
        now, or a run resuming after a kill, never finds an empty or torn header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        tmp = self.path.with_name(temporary_prefix(self.path) + "tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"journal": JOURNAL_FORMAT, "config": self.config}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _files(self) -> list[Path]:
        ranks = [p for p in self.base.parent.glob(f"{self.base.name}.rank*") if p.name[len(self.base.name) + 5:].isdigit()]
        return [p for p in [self.base, *sorted(ranks)] if p.exists()]

    def _check_existing(self) -> None:
        for f in self._files():
            header = self._read_lines(f)[:1]
            if not header or not isinstance(header[0], dict) or header[0].get("journal") != JOURNAL_FORMAT \
                    or header[0].get("config") != self.config:
                theirs = header[0].get("config", {}) if header and isinstance(header[0], dict) else {}
                theirs = theirs if isinstance(theirs, dict) else {}
                diff = sorted(k for k in set(theirs) | set(self.config) if theirs.get(k) != self.config.get(k))
                raise JournalMismatchError(
                    f"the journal {f} belongs to a run with different settings ({', '.join(diff) or 'unreadable header'}); "
                    "delete it or choose another output to start afresh"
                )

    @staticmethod
    def _read_lines(path: Path) -> list[dict[str, Any]]:
        lines = []
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    # a line torn by a kill mid-write; the lines a resumed run appended after it are whole
                    continue
        return lines

    def completed(self) -> dict[int, tuple[list[dict], list[dict]]]:
        """Finished chunks from every rank's file: start index -> (points, stage stats)."""
        done = {}
        for f in self._files():
            for number, line in enumerate(self._read_lines(f)[1:], start=2):
                if not self._valid_chunk(line):
                    log.warning("%s: chunk line %d is not one this run wrote (edited, copied or malformed); "
                                "its chunk will be attacked again", f, number)
                    continue
                done[line["chunk"]] = (line["points"], line["stats"])
        return done

    def append(self, start: int, points: list[dict], stats: list[dict]) -> None:
        """Record a finished chunk (the file is created with the first one: a run that fails
        before finishing any chunk leaves no journal behind)."""
        self._take_the_pen()
        if not self.path.exists():
            self._create()
        self._write_line({"chunk": start, "points": points, "stats": stats, "check": self._check(start, points, stats)})

    def _write_line(self, obj: dict[str, Any]) -> None:
        # a torn previous line (killed mid-write) must not swallow this one
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                needs_newline = fh.read(1) != b"\n"
        else:
            needs_newline = False
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(("\n" if needs_newline else "") + json.dumps(obj) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finish(self) -> None:
        """The record is written: the journal is no longer needed."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        for f in self._files():  # every rank has finished writing by now (the record gathers them all)
            f.unlink(missing_ok=True)
            Path(str(f) + ".lock").unlink(missing_ok=True)
