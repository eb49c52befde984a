"""Resumable runs: a run killed with SIGKILL in the middle of an attack, started again with the
same arguments, ends with the same record as an uninterrupted run; a journal written under other
settings or another checkpoint is refused and left as it was; torn lines are tolerated."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `--model tests.runner_models:...` and the imports below need the repository root
    sys.path.insert(0, str(REPO))

import benchmark.runner as runner  # noqa: E402
from robench.cli import main as cli_main  # noqa: E402
from benchmark.journal import Journal, JournalBusyError, JournalMismatchError  # noqa: E402
from benchmark.record import EvaluationResult  # noqa: E402
from tests.runner_models import DELAY_ENV, WEIGHTS_ENV, shared_weights, train_weights  # noqa: E402

N_EXAMPLES, BATCH = 48, 8
#: large enough for the undefended test MLP that APGD-CE and APGD-T break every point: the run is cheap
#: yet every chunk goes through the attacks (FAB-T and Square find no point left to attack)
EPS = "0.18"
ARGS = ["evaluate", "--model", "tests.runner_models:digits_mlp", "--n-examples", str(N_EXAMPLES),
        "--batch-size", str(BATCH), "--eps", EPS, "--no-progress"]
RECORD = Path("digits", "Linf", "digits_mlp.standard.json")
JOURNAL = RECORD.with_suffix(".journal")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))
    monkeypatch.delenv(DELAY_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def _comparable(path: Path) -> dict:
    """A record without what differs between two runs of the same evaluation (clock times)."""
    record = json.loads(path.read_text())
    record = {k: v for k, v in record.items() if k not in ("timings", "created")}
    record["stages"] = [{k: v for k, v in s.items() if k != "time_s"} for s in record["stages"]]
    return record


def _chunks_in(journal: Path) -> list[int]:
    if not journal.exists():
        return []
    starts = []
    for line in journal.read_text().splitlines()[1:]:
        try:
            starts.append(json.loads(line)["chunk"])
        except json.JSONDecodeError:
            pass
    return starts


def _start_slow_run(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", DELAY_ENV: "0.02"}
    return subprocess.Popen([sys.executable, "-m", "robench.cli", *ARGS, "--out", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_then_resume_gives_the_uninterrupted_record(tmp_path, monkeypatch, capsys):
    killed = tmp_path / "killed"
    proc = _start_slow_run(killed)
    try:
        deadline = time.monotonic() + 240
        while not _chunks_in(killed / JOURNAL):
            assert proc.poll() is None, f"the run ended before journaling a chunk: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no chunk journaled in time"
            time.sleep(0.02)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert alive, "the run had already finished: nothing was killed"
    journaled = _chunks_in(killed / JOURNAL)
    all_chunks = list(range(0, N_EXAMPLES, BATCH))
    assert 0 < len(journaled) < len(all_chunks) and not (killed / RECORD).exists()

    # a kill in the middle of a write leaves a torn last line
    with open(killed / JOURNAL, "a", encoding="utf-8") as fh:
        fh.write('{"chunk": 40, "points": [{"index": 40, "lab')
    before = (killed / JOURNAL).read_bytes()

    # other settings, or other weights under the same name: refused, and the journal is untouched
    assert cli_main(ARGS + ["--out", str(killed), "--seed", "1"]) == 2
    assert "different settings (seed)" in capsys.readouterr().err
    other = train_weights(tmp_path / "other.safetensors", seed=1)
    assert other is not None
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "other.safetensors"))
    assert cli_main(ARGS + ["--out", str(killed)]) == 2
    assert "different settings (model)" in capsys.readouterr().err
    assert (killed / JOURNAL).read_bytes() == before
    monkeypatch.setenv(WEIGHTS_ENV, str(shared_weights()))

    # the same arguments: only the missing chunks are attacked
    attacked = []
    real_attack_chunk = runner._attack_chunk

    def spy(model, x, y, start, *args, **kwargs):
        attacked.append(start)
        return real_attack_chunk(model, x, y, start, *args, **kwargs)

    monkeypatch.setattr(runner, "_attack_chunk", spy)
    assert cli_main(ARGS + ["--out", str(killed)]) == 0
    assert attacked == [c for c in all_chunks if c not in journaled]
    assert not (killed / JOURNAL).exists()

    attacked.clear()
    assert cli_main(ARGS + ["--out", str(tmp_path / "whole")]) == 0
    assert attacked == all_chunks
    resumed, whole = _comparable(killed / RECORD), _comparable(tmp_path / "whole" / RECORD)
    assert resumed == whole
    assert len(resumed["points"]) == N_EXAMPLES and resumed["robust_accuracy"] < resumed["clean_accuracy"]


# ------------------------------------------------------------------ the journal itself

CONFIG = {"dataset": "digits", "seed": 0, "eps": 0.1, "model": "ab" * 32, "checkpoint_sha256": "12" * 32}


def _chunk(start: int) -> tuple[list[dict], list[dict]]:
    points = [{"index": start + i, "label": i, "clean_correct": True, "robust": i % 2 == 0, "broken_by": None,
               "norm": 0.1 / 3 if i % 2 else None, "queries": 7, "min_norm": None} for i in range(4)]
    return points, [{"time_s": 0.5, "forward_samples": 3, "backward_samples": 2}]


def test_journal_round_trips_chunks_exactly(tmp_path):
    path = tmp_path / "run.journal"
    journal = Journal(path, CONFIG)
    assert not path.exists()  # nothing is written before the first chunk finishes
    for start in (0, 4):
        journal.append(start, *_chunk(start))
    assert Journal(path, dict(CONFIG)).completed() == {0: _chunk(0), 4: _chunk(4)}
    journal.finish()
    assert not path.exists()


@pytest.mark.parametrize("change, named", [({"seed": 1}, "seed"), ({"model": "cd" * 32}, "model"),
                                           ({"checkpoint_sha256": "34" * 32}, "checkpoint_sha256"),
                                           ({"eps": 0.2, "dataset": "cifar10"}, "dataset, eps")])
def test_journal_from_other_settings_is_refused(tmp_path, change, named):
    path = tmp_path / "run.journal"
    Journal(path, CONFIG).append(0, *_chunk(0))
    before = path.read_bytes()
    with pytest.raises(JournalMismatchError, match=rf"^the journal {path} belongs to a run with different settings \({named}\); "
                                                 "delete it or choose another output to start afresh$"):
        Journal(path, {**CONFIG, **change})
    assert path.read_bytes() == before


def test_rank_files_are_shared_and_checked(tmp_path):
    path = tmp_path / "run.journal"
    Journal(path, CONFIG, rank=1).append(4, *_chunk(4))
    assert (tmp_path / "run.journal.rank1").exists() and not path.exists()
    rank0 = Journal(path, CONFIG, rank=0)
    rank0.append(0, *_chunk(0))
    assert Journal(path, CONFIG).completed() == {0: _chunk(0), 4: _chunk(4)}  # a one-process resume sees both
    with pytest.raises(JournalMismatchError, match=r"run.journal.* \(seed\)"):
        Journal(tmp_path / "run.journal", {**CONFIG, "seed": 3}, rank=2)
    rank0.finish()
    assert list(tmp_path.iterdir()) == []


def test_torn_lines_are_skipped_and_later_lines_kept(tmp_path):
    path = tmp_path / "run.journal"
    Journal(path, CONFIG).append(0, *_chunk(0))
    with open(path, "a", encoding="utf-8") as fh:  # killed in the middle of writing chunk 4
        fh.write(json.dumps({"chunk": 4, "points": _chunk(4)[0]})[:57])
    assert Journal(path, CONFIG).completed() == {0: _chunk(0)}
    Journal(path, CONFIG).append(4, *_chunk(4))  # the resumed run redoes chunk 4, on a line of its own
    Journal(path, CONFIG).append(8, *_chunk(8))
    assert Journal(path, CONFIG).completed() == {0: _chunk(0), 4: _chunk(4), 8: _chunk(8)}
    assert len(path.read_text().splitlines()) == 5  # header, chunk 0, torn, chunk 4, chunk 8


def test_record_is_never_half_written(tmp_path, monkeypatch):
    """A failure while writing leaves the previous record (or nothing), never a truncated file."""
    path = tmp_path / "r.json"
    record = EvaluationResult(dataset="digits", threat_model="Linf", eps=0.1, version="standard", seed=0,
                              n_examples=0, batch_size=1, device="cpu", clean_accuracy=1.0, robust_accuracy=0.5)
    record.save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", fail)
    with pytest.raises(OSError, match="disk full"):
        EvaluationResult(**{**record.to_dict(), "robust_accuracy": 0.25}).save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_one_writer_at_a_time(tmp_path):
    """Two runs started together on one output (even with different settings) cannot interleave."""
    path = tmp_path / "run.journal"
    first, second = Journal(path, {**CONFIG, "batch_size": 6}), Journal(path, {**CONFIG, "batch_size": 4})
    first.append(0, *_chunk(0))
    with pytest.raises(JournalBusyError, match="another run is writing the journal"):
        second.append(0, *_chunk(0))
    same = Journal(path, {**CONFIG, "batch_size": 6})
    with pytest.raises(JournalBusyError):
        same.append(4, *_chunk(4))
    first.finish()
    assert list(tmp_path.iterdir()) == []  # journal and lock gone


SHAPED = {**CONFIG, "batch_size": 4, "n_examples": 12}


def _rewrite_line(path, number, edit):
    lines = path.read_text().splitlines()
    lines[number] = edit(lines[number])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit", [
    lambda line: line.replace('"robust": false', '"robust": true', 1),          # a point made robust by hand
    lambda line: json.dumps({**json.loads(line), "points": json.loads(line)["points"][:3]}),   # a point deleted
    lambda line: json.dumps({**json.loads(line), "chunk": 8}),                   # a chunk renumbered
    lambda line: "[1, 2, 3]",                                                    # the wrong JSON shape
    lambda line: json.dumps({"chunk": "four", "points": None, "stats": 1, "check": 2}),
], ids=["made-robust", "point-deleted", "renumbered", "a-list", "wrong-types"])
def test_chunk_lines_not_written_by_this_run_are_attacked_again(tmp_path, edit, caplog):
    path = tmp_path / "run.journal"
    journal = Journal(path, SHAPED)
    for start in (0, 4, 8):
        journal.append(start, *_chunk(start))
    _rewrite_line(path, 2, edit)  # the line of chunk 4; the lines around it are still taken
    assert Journal(path, SHAPED).completed() == {0: _chunk(0), 8: _chunk(8)}
    assert f"{path}: chunk line 3 is not one this run wrote" in caplog.text


def test_points_with_only_the_fields_every_point_has_are_taken(tmp_path):
    """A point record may leave out the fields with defaults (as one written before they existed does)."""
    path = tmp_path / "run.journal"
    points = [{"index": i, "label": 1, "clean_correct": True, "robust": True} for i in range(4)]
    Journal(path, SHAPED).append(0, points, [])
    assert Journal(path, SHAPED).completed() == {0: (points, [])}


def test_a_chunk_off_the_chunk_boundaries_is_not_taken_even_with_its_check(tmp_path, caplog):
    """Chunks start at multiples of the batch size: points 2-5 with a valid check are still no chunk of this run."""
    path = tmp_path / "run.journal"
    journal = Journal(path, SHAPED)
    journal.append(0, *_chunk(0))
    journal.append(2, *_chunk(2))
    journal.append(12, [], _chunk(12)[1])  # an empty chunk just past the last point
    assert Journal(path, SHAPED).completed() == {0: _chunk(0)}
    assert "chunk line 3 is not one this run wrote" in caplog.text and "chunk line 4 is not" in caplog.text


def test_a_line_copied_from_another_run_is_not_taken(tmp_path):
    other = tmp_path / "other.journal"
    Journal(other, {**SHAPED, "seed": 5}).append(4, *_chunk(4))
    path = tmp_path / "run.journal"
    Journal(path, SHAPED).append(0, *_chunk(0))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(other.read_text().splitlines()[1] + "\n")
    assert Journal(path, SHAPED).completed() == {0: _chunk(0)}


def test_a_journal_of_the_earlier_format_is_refused(tmp_path):
    path = tmp_path / "run.journal"
    path.write_text(json.dumps({"journal": 1, "config": CONFIG}) + "\n")
    with pytest.raises(JournalMismatchError, match="different settings"):
        Journal(path, CONFIG)


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    """A SIGKILL between writing a temporary file and renaming it left `.<name>.<...>.tmp` behind."""
    from benchmark.record import write_json_atomic

    record = tmp_path / "r.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [tmp_path / f".r.json.{dead.stdout.strip()}.abc123.tmp", tmp_path / f".run.journal.{dead.stdout.strip()}.tmp"]
    alive = tmp_path / f".r.json.{os.getppid()}.xyz.tmp"  # a writer that still runs keeps its file
    for f in [*stale, alive]:
        f.write_text("half")
    write_json_atomic(record, {"a": 1})
    Journal(tmp_path / "run.journal", CONFIG).append(0, *_chunk(0))
    assert not any(f.exists() for f in stale) and alive.exists()
    assert json.loads(record.read_text()) == {"a": 1}


def test_the_temporary_of_a_writer_killed_mid_write_is_found_and_removed(tmp_path):
    """Not a file made by hand: a real writer, stopped between writing its temporary file and renaming it."""
    from benchmark.record import write_json_atomic

    record = tmp_path / "r.json"
    killed = ("import os, sys, benchmark.record as r; os.replace = lambda *a: os._exit(9); "
              "r.write_json_atomic(sys.argv[1], {'half': True})")
    child = subprocess.run([sys.executable, "-c", killed, str(record)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.returncode == 9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".r.json.") and left.name.endswith(".tmp") and not record.exists()
    write_json_atomic(record, {"a": 1})
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_a_writer_of_another_user_counts_as_running(tmp_path, monkeypatch):
    """os.kill(pid, 0) on another user's process raises PermissionError: it runs, and its file is kept."""
    from benchmark.record import write_json_atomic

    theirs = tmp_path / ".r.json.999999.abc.tmp"
    theirs.write_text("half")

    def not_allowed(pid, signal_number):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_allowed)
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert theirs.exists()
