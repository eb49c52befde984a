"""Hostile and unlucky inputs, tried against every reader: the table of outcomes per category.

    python benchmarks/hostile_inputs.py [--fuzz N] [--only CATEGORY]

Each case is one input an attacker or an unlucky user could hand robench (a submission file, a
checkpoint, a server, a model, a claim, a journal line, a record, a command line, text for the
site). Each is classified:

- **refused correctly**: a clear error or a listed problem, of the kind the case expects (or, for a
  valid input, accepted with the right value);
- **crashed**: an exception other than the reader's own error (a traceback for the user);
- **silently wrong**: accepted though it should have been refused, or a wrong number;
- **hung**: no answer within the case's time limit (SIGALRM; 30 s unless said).

With ``--fuzz N`` the property-based fuzzers of tests/test_hostile_readers.py and
tests/test_submission_schema.py run with N examples each instead of the suite's ~150 (a longer
fuzz run than the test suite can afford), and their time and peak memory are printed.
Nothing here needs the network: servers listen on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.budgets import default_eps  # noqa: E402
from benchmark.journal import Journal, JournalMismatchError  # noqa: E402
from leaderboard.aggregate import aggregate, write_csvs  # noqa: E402
from leaderboard.site import build_site  # noqa: E402
from leaderboard.sources import load_results  # noqa: E402
from leaderboard.synthetic import make_card, make_record  # noqa: E402
from model_zoo.architectures import DigitsMLP  # noqa: E402
from model_zoo.download import sha256_bytes, sha256_file  # noqa: E402
from model_zoo.submission_schema import validate_document, validate_file  # noqa: E402

OUTCOMES = ("refused correctly", "crashed", "silently wrong", "hung")


class Wrong(AssertionError):
    """The case was answered, but wrongly (accepted, or a wrong number)."""


@dataclass
class Case:
    category: str
    name: str
    run: Callable[[], None]  # returns when handled correctly, raises Wrong when not
    #: exceptions that are a clean refusal (the reader's own errors)
    clean: tuple[type[BaseException], ...] = ()
    #: part of the clean error's message that must be there
    says: str = ""
    seconds: int = 30


class _Timeout(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def classify(case: Case) -> tuple[str, str]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(case.seconds)
    try:
        case.run()
        return "refused correctly", ""
    except _Timeout:
        return "hung", f"no answer in {case.seconds} s"
    except Wrong as exc:
        return "silently wrong", str(exc)
    except case.clean as exc:  # type: ignore[misc]
        if case.says and case.says not in str(exc):
            return "silently wrong", f"refused, but not saying {case.says!r}: {exc}"
        return "refused correctly", ""
    except BaseException as exc:  # noqa: BLE001 - this is what the table counts
        return "crashed", "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
    finally:
        signal.alarm(0)


# ------------------------------------------------------------------ a valid submission to break

def _document(model_id: str = "Doe2024Example") -> dict:
    return {
        "id": model_id, "dataset": "digits", "threat_model": "Linf", "eps": default_eps("digits", "Linf"),
        "paper": {"title": "An Example", "link": "https://example.org/paper", "authors": ["Jane Doe"],
                  "venue": "ICLR", "year": 2024},
        "architecture": {"source": "robench", "name": "digits_mlp", "kwargs": {"hidden": 8}},
        "num_classes": 10,
        "preprocessing": {"mean": [0.5], "std": [0.25], "input_size": [1, 8, 8]},
        "checkpoint": {"path": f"submissions/digits/Linf/{model_id}.safetensors", "sha256": "0" * 64,
                       "format": "safetensors"},
        "training": {"recipe": "pgd_at", "epochs": 1, "seed": 0},
        "additional_data": False, "number_forward_passes": 1, "license": "MIT",
        "reported": {"clean_accuracy": 0.9, "robust_accuracy": 0.5},
    }


def _repository(root: Path) -> tuple[Path, dict]:
    """A repository with one valid submission and its checkpoint: (the file, the document)."""
    doc = _document()
    ckpt = root / doc["checkpoint"]["path"]
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in DigitsMLP(hidden=8).state_dict().items()}, str(ckpt))
    doc["checkpoint"]["sha256"] = sha256_file(ckpt)
    path = ckpt.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, doc


def _set(doc: dict, where: str, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = where.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


def _refused_at(doc: Any, path: Path, root: Path, where: str) -> None:
    card, problems = validate_document(doc, path, repo_root=root, check_hash=True)
    if card is not None or not problems:
        raise Wrong(f"accepted; expected a problem at {where}")
    if not any(p.field == where or p.field.startswith(where + ".") or where.startswith(p.field + ".")
               for p in problems):
        raise Wrong(f"refused, but at {[p.field for p in problems]}, not at {where}")


def _only_file(root: Path, suffix: str) -> Path:
    """Where a case's text goes, the other spellings of the file removed (they would collide with it)."""
    folder = root / "submissions" / "digits" / "Linf"
    for other in (".yaml", ".json", ".toml"):
        (folder / f"Doe2024Example{other}").unlink(missing_ok=True)
    return folder / f"Doe2024Example{suffix}"


def _text_refused(text: str | bytes, root: Path, says: str, suffix: str = ".yaml") -> None:
    path = _only_file(root, suffix)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    problems = validate_file(path, root)
    if not problems:
        raise Wrong("accepted")
    if says not in " ".join(p.message for p in problems):
        raise Wrong(f"refused, but not saying {says!r}: {problems[0].message[:120]}")


def _text_accepted(text: str, root: Path, suffix: str) -> None:
    path = _only_file(root, suffix)
    path.write_text(text, encoding="utf-8")
    problems = validate_file(path, root)
    if problems:
        raise Wrong(f"refused a valid file: {problems[0]}")


_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


def document_cases(root: Path, valid: Path, doc: dict) -> Iterator[Case]:
    text = valid.read_text()
    for field in ("footnote", "training", "license", "paper", "eps", "reported", "id", "checkpoint", "architecture"):
        body = {k: v for k, v in doc.items() if k != field}
        bombed = yaml.safe_dump(body, sort_keys=False) + f"{field}:\n" + "".join(f"  {line}\n" for line in _BOMB.splitlines())
        yield Case("documents", f"alias bomb in {field}", lambda b=bombed: _text_refused(b, root, "anchors and aliases"))
    yield Case("documents", "alias bomb at the top", lambda: _text_refused(_BOMB + text, root, "anchors and aliases"))
    yield Case("documents", "a single anchor and alias", lambda: _text_refused(
        text.replace("license: MIT", "license: &l MIT\nfootnote: *l"), root, "anchors and aliases"))
    yield Case("documents", "a merge key", lambda: _text_refused(
        text + "x: &m {a: 1}\ny:\n  <<: *m\n", root, "anchors and aliases"))
    yield Case("documents", "python object tag", lambda: _text_refused(
        text + "footnote: !!python/object/apply:os.system ['touch /tmp/robench_pwned']\n", root, "invalid YAML"))
    yield Case("documents", "duplicate key (YAML)", lambda: _text_refused(text + "license: GPL\n", root, "duplicate key"))
    yield Case("documents", "duplicate key (JSON)", lambda: _text_refused(
        json.dumps(doc)[:-1] + ', "license": "GPL"}', root, "duplicate key", ".json"))
    yield Case("documents", "nested 100,000 deep (YAML)", lambda: _text_refused("[" * 100_000 + "]" * 100_000, root, "nested"))
    yield Case("documents", "nested 100,000 deep (JSON)", lambda: _text_refused(
        '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}", root, "nested", ".json"))
    yield Case("documents", "invalid UTF-8", lambda: _text_refused(b"id: \xff\xfe\xfa\n", root, "not UTF-8"))
    yield Case("documents", "NUL bytes", lambda: _text_refused("id: a\x00b\n", root, ""))
    yield Case("documents", "empty file", lambda: _text_refused("", root, "empty"))
    yield Case("documents", "a list document", lambda: _text_refused("- a\n- b\n", root, "expected a mapping"))
    yield Case("documents", "a scalar document", lambda: _text_refused("42\n", root, "expected a mapping"))
    yield Case("documents", "an 8 MB file", lambda: _text_refused(text + "footnote: " + "x" * 8_000_000 + "\n", root,
                                                                   "expected at most"))
    yield Case("documents", "an 8 MB id", lambda: _text_refused(text.replace("id: Doe2024Example", "id: " + "A" * 8_000_000),
                                                                 root, "expected at most"))
    yield Case("documents", "BOM before YAML (valid)", lambda: _text_accepted("\ufeff" + text, root, ".yaml"))
    yield Case("documents", "BOM before JSON (valid)", lambda: _text_accepted("\ufeff" + json.dumps(
        yaml.safe_load(text)), root, ".json"))
    yield Case("documents", "unsupported suffix", lambda: _text_refused(text, root, "unsupported file type", ".toml"))


#: field -> values that must each be refused there
BAD_VALUES: dict[str, list[Any]] = {
    "id": [None, 42, "", "doe2024example", "Doe2024Example\n", "Doe2024Example/../x", "Doe24Example", ["Doe2024Example"]],
    "dataset": [None, "mnist", "DIGITS", 3, "digits\n", ""],
    "threat_model": [None, "linf", "L1", "Linf\n", 2, "corruptions"],
    "eps": [None, "eight", 0, -0.2, float("nan"), float("inf"), 10**400, True, "1/0", 0.35, [0.2]],
    "paper": [None, "a paper", [1, 2]],
    "paper.title": [None, "", "   ", 5],
    "paper.link": [None, "http://example.org", "javascript:alert(1)", "https://", "https://x.org\n", "ftp://x", 7],
    "paper.authors": [None, "Jane Doe", [], [""], [1, 2]],
    "paper.venue": [None, "", 2024],
    "paper.year": [None, "2024", 2023, 2024.0, True, 10**30],
    "paper.bibtex": [5, ""],
    "architecture": [None, "digits_mlp", []],
    "architecture.source": [None, "keras", "ROBENCH", 1],
    "architecture.name": [None, "digit_mlp", "", 3, "../../etc/passwd"],
    "architecture.kwargs": ["hidden=8", [8], {"depth": 3}, {"hidden": "abc"}, {"hidden": -3}, {"hidden": 10**9},
                            {"hidden": True}, {"1x": 2}, {3: 4}],
    "num_classes": [None, "ten", 100, 0, -10, 10.0, True],
    "preprocessing.mean": [None, [], [0.5, 0.5, 0.5], ["a"], [float("nan")], 0.5],
    "preprocessing.std": [None, [0.0], [-1.0], [float("inf")], [0.25, 0.25]],
    "preprocessing.input_size": [None, [3, 32, 32], [1, 8], [1, 8, 8, 1], [0, 8, 8], ["1", 8, 8], [1.0, 8, 8]],
    "preprocessing.crop": [224, 0, "224"],
    "preprocessing.resize": [256, -1],
    "checkpoint.sha256": [None, "abc", "0" * 64 + "\n", "A" * 64, 5, "g" * 64],
    "checkpoint.format": [None, "onnx", "pt", 1],
    "checkpoint.path": ["../elsewhere/m.safetensors", "/etc/passwd", "submissions/digits/Linf/Nope.safetensors",
                        "C:\\x.safetensors", "submissions\\digits\\x.safetensors", 5],
    "checkpoint.url": ["http://example.org/m.safetensors", "https://example.org/m.safetensors", "file:///etc/passwd"],
    "training": [None, {"epochs": 3}, "pgd", {"recipe": "pgd_at", "eps": 0.1}, {"recipe": ""},
                 {"recipe": "pgd_at", "architecture": "digits_mlp"}],
    "additional_data": [None, "no", 0],
    "number_forward_passes": [None, 0, -1, "1", 1.5, True],
    "license": [None, "", "  ", 3],
    "reported": [None, [0.9, 0.5]],
    "reported.clean_accuracy": [None, 97.5, -0.1, "0.9", float("nan"), True],
    "reported.robust_accuracy": [0.95, 1.5, "0.5", float("inf")],
    "footnote": [5, "", ["a"]],
    "unknown_field": ["x"],
    "paper.unknown": ["x"],
}


def field_cases(root: Path, valid: Path, doc: dict) -> Iterator[Case]:
    for where, values in BAD_VALUES.items():
        for value in values:
            changed = _set(doc, where, _DELETE if value is None and where in _required() else value)
            if value is None and where not in _required():
                changed = _set(doc, where, None)
            expected = "checkpoint" if where == "checkpoint.url" else where  # url and path together
            yield Case("submission fields", f"{where} = {value!r}"[:70],
                       lambda d=changed, w=expected: _refused_at(d, valid, root, w))


def _required() -> set[str]:
    return {"id", "dataset", "threat_model", "eps", "paper", "paper.title", "paper.link", "paper.authors",
            "paper.venue", "paper.year", "architecture", "architecture.source", "architecture.name", "num_classes",
            "preprocessing.mean", "preprocessing.std", "preprocessing.input_size", "checkpoint.sha256",
            "checkpoint.format", "training", "additional_data", "number_forward_passes", "license", "reported",
            "reported.clean_accuracy"}


# ------------------------------------------------------------------ checkpoints and pickles

_MARKER = Path(tempfile.gettempdir()) / "robench_hostile_marker"


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {_MARKER}",))


def _pickled(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in DigitsMLP(hidden=8).state_dict().items()}


def _checkpoint_refused(data: bytes, fmt: str, says: str) -> Callable[[], None]:
    def run() -> None:
        from model_zoo.loading import CheckpointError, read_state_dict

        _MARKER.unlink(missing_ok=True)
        try:
            read_state_dict(data, fmt, "the checkpoint")
        except CheckpointError as exc:
            if _MARKER.exists():
                raise Wrong("refused, but the pickled code ran") from None
            if says not in str(exc):
                raise Wrong(f"refused, but not saying {says!r}: {exc}") from None
            return
        raise Wrong("loaded")
    return run


def _card_with(root: Path, doc: dict, data: bytes, fmt: str = "safetensors", declared: str | None = None) -> Callable[[], None]:
    """Load a card whose committed checkpoint holds ``data``; the hash declared is ``declared`` (default: the bytes')."""
    def run() -> None:
        from model_zoo.download import ChecksumError
        from model_zoo.loading import CheckpointError, load_model_from_card
        from model_zoo.submission_schema import validate_document

        suffix = ".safetensors" if fmt == "safetensors" else ".pt"
        rel = f"submissions/digits/Linf/Doe2024Example{suffix}"
        (root / rel).write_bytes(data)
        d = _set(_set(_set(doc, "checkpoint.path", rel), "checkpoint.format", fmt),
                 "checkpoint.sha256", declared or sha256_bytes(data))
        card, problems = validate_document(d, root / "submissions/digits/Linf/Doe2024Example.yaml", repo_root=root)
        if card is None:
            raise Wrong(f"the card itself was refused: {problems}")
        try:
            load_model_from_card(card, repo_root=root, device="cpu")
        except (CheckpointError, ChecksumError) as exc:
            if declared and not (declared in str(exc) and sha256_bytes(data) in str(exc)):
                raise Wrong(f"a hash mismatch not naming both hashes: {exc}") from None
            return
        raise Wrong("loaded")
    return run


def checkpoint_cases(root: Path, valid: Path, doc: dict) -> Iterator[Case]:
    sd = _state_dict()
    good = save_safetensors(sd)
    yield Case("checkpoints", "pickle running os.system", _checkpoint_refused(_pickled(_RunsCode()), "pt", "nothing in it was executed"))
    yield Case("checkpoints", "pickle running code inside a state dict",
               _checkpoint_refused(_pickled({"w": torch.zeros(2), "x": _RunsCode()}), "pt", "nothing in it was executed"))
    yield Case("checkpoints", "pickle of a whole module", _checkpoint_refused(_pickled(DigitsMLP(hidden=8)), "pt", "nothing in it was executed"))
    yield Case("checkpoints", "raw pickle protocol 0 with GLOBAL os.system",
               _checkpoint_refused(b"cos\nsystem\n(S'touch " + str(_MARKER).encode() + b"'\ntR.", "pt", "nothing in it was executed"))
    yield Case("checkpoints", "pt holding a list", _checkpoint_refused(_pickled([torch.zeros(2)]), "pt", "not a state dict"))
    yield Case("checkpoints", "truncated safetensors", _checkpoint_refused(good[: len(good) // 2], "safetensors", "not a valid safetensors"))
    yield Case("checkpoints", "safetensors header length 2**60",
               _checkpoint_refused((2**60).to_bytes(8, "little") + b"{}", "safetensors", "not a valid safetensors"))
    yield Case("checkpoints", "empty file", _checkpoint_refused(b"", "safetensors", "not a valid safetensors"))
    yield Case("checkpoints", "an HTML page", _checkpoint_refused(b"<html><body>login</body></html>", "pt", "refused to load"))
    tampered = bytearray(good)
    tampered[-5] ^= 0xFF
    yield Case("checkpoints", "one byte changed (hash mismatch)",
               _card_with(root, doc, bytes(tampered), declared=sha256_bytes(good)))
    yield Case("checkpoints", "truncated (hash mismatch)", _card_with(root, doc, good[:-100], declared=sha256_bytes(good)))
    yield Case("checkpoints", "int64 weights", _card_with(root, doc, save_safetensors({k: v.long() for k, v in sd.items()})))
    yield Case("checkpoints", "a tensor of the wrong shape",
               _card_with(root, doc, save_safetensors({**sd, next(iter(sd)): torch.zeros(3, 3)})))
    yield Case("checkpoints", "a missing tensor", _card_with(root, doc, save_safetensors(dict(list(sd.items())[1:]))))
    yield Case("checkpoints", "an extra tensor", _card_with(root, doc, save_safetensors({**sd, "extra": torch.zeros(1)})))
    yield Case("checkpoints", "NaN weights", _card_with(root, doc, save_safetensors({k: torch.full_like(v, float("nan")) for k, v in sd.items()})))


# ------------------------------------------------------------------ downloads from a local server

class _Server:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                try:
                    routes.get(self.path, lambda h: h.send_error(404))(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"


def _endless(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.end_headers()
    chunk = b"\0" * (1 << 16)
    for _ in range(100_000):
        h.wfile.write(chunk)


def _trickle(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(1000):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.5)


def _redirect_to(target: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", target)
        h.end_headers()
    return handle


def _body(data: bytes, length: int | None = None, content_type: str = "application/octet-stream") -> Callable:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data) if length is None else length))
        h.end_headers()
        h.wfile.write(data)
    return handle


def _fetch_refused(url: str, sha: str, says: str, keeps_part: bool = False, **limits: Any) -> Callable[[], None]:
    """Refused with ``says`` in the error, nothing left in the cache (but the partial file of an interrupted
    download, ``keeps_part``, which the next call resumes from)."""
    def run() -> None:
        from model_zoo.download import DownloadError, fetch

        with tempfile.TemporaryDirectory() as cache:
            try:
                fetch(url, sha, cache=cache, retries=1, backoff=0.01, progress=False, **limits)
            except DownloadError as exc:
                if says not in str(exc):
                    raise Wrong(f"refused, but not saying {says!r}: {exc}") from None
                left = [p.name for p in Path(cache).rglob("*")
                        if p.is_file() and p.suffix != ".lock" and not (keeps_part and p.suffix == ".part")]
                if left:
                    raise Wrong(f"refused, but {left} was left in the cache") from None
                return
            raise Wrong("downloaded")
    return run


def download_cases(server: _Server) -> Iterator[Case]:
    good = save_safetensors(_state_dict())
    sha = sha256_bytes(good)
    server.routes.update({
        "/endless": _endless, "/trickle": _trickle, "/good": _body(good), "/short": _body(good[:-64], length=len(good)),
        "/html": _body(b"<!doctype html><html>sign in</html>", content_type="text/html"),
        "/to-http": _redirect_to("http://example.org/x.safetensors"), "/to-file": _redirect_to("file:///etc/passwd"),
        "/loop": _redirect_to("/loop"),
    })
    yield Case("downloads", "a server streaming forever (cap 4 MB)",
               _fetch_refused(server.url("/endless"), sha, "more than the limit", max_bytes=4 << 20))
    yield Case("downloads", "a byte every 0.5 s (deadline 3 s)", _fetch_refused(server.url("/trickle"), sha, "deadline", deadline_s=3.0))
    yield Case("downloads", "a byte every 0.5 s (stall timeout 0.2 s)", _fetch_refused(server.url("/trickle"), sha, "timed out", keeps_part=True, timeout=0.2))
    yield Case("downloads", "a redirect to plain http on another host", _fetch_refused(server.url("/to-http"), sha, "https"))
    yield Case("downloads", "a redirect to file://", _fetch_refused(server.url("/to-file"), sha, "https"))
    yield Case("downloads", "a redirect loop", _fetch_refused(server.url("/loop"), sha, "redirects"))
    yield Case("downloads", "404", _fetch_refused(server.url("/nothing"), sha, "404"))
    yield Case("downloads", "the wrong bytes (hash mismatch)", _fetch_refused(server.url("/good"), "1" * 64, sha))
    yield Case("downloads", "fewer bytes than announced", _fetch_refused(server.url("/short"), sha, "could not download", keeps_part=True))
    yield Case("downloads", "an HTML login page", _fetch_refused(server.url("/html"), sha, "HTML or XML page"))


# ------------------------------------------------------------------ numbers: non-finite logits, point counts

class _NaNOffGrid(torch.nn.Module):
    """Returns NaN for inputs off the 1/16 pixel grid of the digits images (any perturbed input)."""

    def __init__(self, inner: torch.nn.Module, value: float = float("nan")) -> None:
        super().__init__()
        self.inner, self.value = inner, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        off = ((x * 16 - (x * 16).round()).abs() > 1e-4).flatten(1).any(1)
        return torch.where(off[:, None], torch.full_like(out, self.value), out)


def _non_finite_flagged(value: float) -> Callable[[], None]:
    def run() -> None:
        from benchmark import evaluate
        from model_zoo import load_model

        inner = load_model("LeCun1998Gradient", dataset="digits", threat_model="Linf")
        with tempfile.TemporaryDirectory() as out:
            result = evaluate(_NaNOffGrid(inner, value), "digits", "Linf", n_examples=20, progress=False,
                              device="cpu", analysis=False, out=out)
        if "non_finite_logits" not in result.flags:
            raise Wrong(f"no non_finite_logits flag; flags {result.flags}")
        counted = sum(p.robust for p in result.points if p.not_evaluable)
        if counted:
            raise Wrong(f"{counted} not-evaluable points counted robust")
    return run


def _n_examples_refused(n: int) -> Callable[[], None]:
    def run() -> None:
        from benchmark import evaluate
        from model_zoo import load_model

        model = load_model("LeCun1998Gradient", dataset="digits", threat_model="Linf")
        evaluate(model, "digits", "Linf", n_examples=n, progress=False, device="cpu", analysis=False)
        raise Wrong(f"n_examples={n} was run")
    return run


def number_cases() -> Iterator[Case]:
    yield Case("numbers", "NaN logits off the pixel grid", _non_finite_flagged(float("nan")), seconds=120)
    yield Case("numbers", "+inf logits off the pixel grid", _non_finite_flagged(float("inf")), seconds=120)
    for n in (100_000, -3, 0):
        yield Case("numbers", f"n_examples={n}", _n_examples_refused(n), clean=(ValueError,), says="n_examples")


# ------------------------------------------------------------------ external claims

def claim_cases(root: Path) -> Iterator[Case]:
    from benchmark.external import read_external

    folder = root / "claims" / "digits" / "Linf" / "external"
    folder.mkdir(parents=True, exist_ok=True)
    base = {"model_id": "LeCun1998Gradient", "dataset": "digits", "threat_model": "Linf", "eps": 0.2,
            "robust_accuracy": 0.0, "who": "Mallory", "attack": "trust me", "link": "https://example.org"}
    x_blank = torch.zeros(446, 1, 8, 8)
    save_file({"x_adv": x_blank, "indices": torch.arange(446)}, str(folder / "blank.safetensors"))
    save_file({"x_adv": torch.full((4, 1, 8, 8), 2.0), "indices": torch.arange(4)}, str(folder / "range.safetensors"))
    (folder / "notsafe.safetensors").write_bytes(_pickled({"x_adv": torch.zeros(1)}))

    def ranked_not(name: str, change: dict, says: str) -> Case:
        def run() -> None:
            from leaderboard.claims import verify_claims

            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump({**base, **change}))
            try:
                claim = read_external(path)
            except ValueError as exc:
                if says not in str(exc):
                    raise Wrong(f"refused, but not saying {says!r}: {exc}") from None
                return
            verified, notes = verify_claims([claim])
            if verified:
                raise Wrong(f"ranked at {verified[0].robust_accuracy}")
            if says not in " ".join(notes):
                raise Wrong(f"not ranked, but the note does not say {says!r}: {notes}")
        return Case("external claims", name, run, seconds=60)

    yield ranked_not("no examples", {}, "no adversarial examples")
    yield ranked_not("eps 1.0 on the 0.2 board", {"eps": 1.0, "adversarial_examples": "blank.safetensors"}, "not the board's")
    yield ranked_not("blank images as examples", {"adversarial_examples": "blank.safetensors"}, "rejected")
    yield ranked_not("pixels outside [0, 1]", {"adversarial_examples": "range.safetensors"}, "rejected")
    yield ranked_not("a pickle as examples", {"adversarial_examples": "notsafe.safetensors"}, "")
    yield ranked_not("a path with ..", {"adversarial_examples": "../../../../tmp/x.safetensors"}, "must stay inside")
    yield ranked_not("an absolute path", {"adversarial_examples": "/tmp/x.safetensors"}, "must stay inside")
    yield ranked_not("an accuracy of 5", {"robust_accuracy": 5}, "fraction")
    yield ranked_not("an http link", {"link": "http://example.org"}, "https")


# ------------------------------------------------------------------ journals

CONFIG = {"dataset": "digits", "seed": 0, "batch_size": 2, "n_examples": 6, "model": "ab" * 32}


def _point(i: int, robust: bool = False) -> dict:
    return {"index": i, "label": 1, "clean_correct": True, "robust": robust, "broken_by": None if robust else "apgd-ce",
            "norm": 0.1, "queries": 3, "min_norm": 0.1, "not_evaluable": False}


def _journal_with(root: Path, edit: Callable[[list[str]], list[str]], name: str) -> Callable[[], None]:
    """Two good chunks, then ``edit`` on the file's lines: only untouched chunks may be trusted."""
    def run() -> None:
        path = root / f"{name.replace(' ', '_')}.journal"
        path.unlink(missing_ok=True)
        journal = Journal(path, CONFIG)
        journal.append(0, [_point(0), _point(1)], [{"time_s": 0.1}])
        journal.append(2, [_point(2), _point(3)], [{"time_s": 0.1}])
        del journal  # the run is killed: the journal stays, its lock is let go
        lines = path.read_text().splitlines()
        path.write_text("\n".join(edit(lines)) + "\n")
        done = Journal(path, CONFIG).completed()
        if 2 in done:
            raise Wrong(f"the edited chunk was trusted: {done[2][0]}")
        if 0 not in done or [p["index"] for p in done[0][0]] != [0, 1]:
            raise Wrong("the untouched chunk was lost")
    return run


def _flip(lines: list[str]) -> list[str]:
    return lines[:-1] + [lines[-1].replace('"robust": false', '"robust": true', 1)]


def journal_cases(root: Path) -> Iterator[Case]:
    yield Case("journals", "a point edited to robust", _journal_with(root, _flip, "flip"))
    yield Case("journals", "a point deleted", _journal_with(
        root, lambda ls: ls[:-1] + [json.dumps({**json.loads(ls[-1]), "points": json.loads(ls[-1])["points"][:1]})], "deleted"))
    yield Case("journals", "a chunk renumbered", _journal_with(
        root, lambda ls: ls[:-1] + [ls[-1].replace('"chunk": 2', '"chunk": 4')], "renumbered"))
    yield Case("journals", "a chunk line of the wrong JSON shape", _journal_with(root, lambda ls: ls[:-1] + ['{"start": [2]}'], "shape"))
    yield Case("journals", "a truncated last line", _journal_with(root, lambda ls: ls[:-1] + [ls[-1][: len(ls[-1]) // 2]], "truncated"))
    yield Case("journals", "binary garbage", _journal_with(root, lambda ls: ls[:-1] + ["\x00\xff" * 40], "garbage"))

    def second_writer() -> None:
        path = root / "busy.journal"
        path.unlink(missing_ok=True)
        first = Journal(path, CONFIG)
        first.append(0, [_point(0), _point(1)], [{"time_s": 0.1}])
        try:
            Journal(path, CONFIG).append(2, [_point(2), _point(3)], [{"time_s": 0.1}])
        finally:
            first.finish()
        raise Wrong("a second writer was let in")

    yield Case("journals", "a second run on the same journal", second_writer, clean=(JournalMismatchError,))

    def other_settings() -> None:
        path = root / "other.journal"
        path.unlink(missing_ok=True)
        first = Journal(path, CONFIG)
        first.append(0, [_point(0), _point(1)], [{"time_s": 0.1}])
        del first
        Journal(path, {**CONFIG, "batch_size": 4})
        raise Wrong("a journal of other settings was resumed")

    yield Case("journals", "resumed with other settings", other_settings, clean=(JournalMismatchError,))


# ------------------------------------------------------------------ records and the build

RECORD_CHANGES: dict[str, dict] = {
    "curve [5]": {"curve": [5]}, "flags [1]": {"flags": [1]}, "created 5": {"created": 5}, "flags 'abc'": {"flags": "abc"},
    "robust 1.5": {"robust_accuracy": 1.5}, "robust NaN": {"robust_accuracy": float("nan")},
    "robust above clean": {"robust_accuracy": 0.95}, "no model id": {"model": {}}, "points a string": {"points": "x"},
    "n_examples -1": {"n_examples": -1}, "eps 0": {"eps": 0}, "dataset '../x'": {"dataset": "../x"},
    "schema_version 99": {"schema_version": 99}, "model id 'a/b'": {"model": {"id": "a/b"}},
    "robust edited against its points": {"robust_accuracy": 0.4},
}


def record_cases(root: Path) -> Iterator[Case]:
    card = make_card("Good2020Model")
    good = make_record(card, 0.9, 0.5).to_dict()
    good["points"] = [{**_point(i, robust=i < 250), "clean_correct": i < 450, "broken_by": None if i < 250 else
                       "apgd-ce" if i < 450 else "clean"} for i in range(500)]  # agreeing with 0.9 and 0.5
    for name, change in RECORD_CHANGES.items():
        def run(change: dict = change, name: str = name) -> None:
            folder = root / "records" / name.replace(" ", "_").replace("'", "").replace("/", "")
            folder.mkdir(parents=True, exist_ok=True)
            make_record(card, 0.9, 0.5).save(folder / "digits" / "Linf" / "Good2020Model.standard.json")
            (folder / "bad.json").write_text(json.dumps({**good, **change}, allow_nan=True))
            loaded = load_results(folder)
            if len(loaded.records) != 1 or not any("bad.json" in p for p in loaded.problems):
                raise Wrong(f"{len(loaded.records)} records read; problems {loaded.problems}")
            build_site(aggregate([card], loaded.records), folder / "site", problems=loaded.problems)
            if "bad.json" not in (folder / "site" / "index.html").read_text():
                raise Wrong("the build report does not name the bad file")
        yield Case("records", name, run)


# ------------------------------------------------------------------ the command line

def _one_line(argv: list[str], code: int, says: str) -> Callable[[], None]:
    def run() -> None:
        from robench.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                got = main(argv)
            except SystemExit as exc:
                got = exc.code
        text = err.getvalue().strip()
        if got != code:
            raise Wrong(f"exit {got}, expected {code}: {text[-200:]}")
        if "Traceback" in text or len(text.splitlines()) != 1:
            raise Wrong(f"not one line: {text[-300:]}")
        if says not in text:
            raise Wrong(f"does not say {says!r}: {text}")
    return run


def cli_cases(root: Path) -> Iterator[Case]:
    yield Case("command line", "unknown model id", _one_line(["evaluate", "--model", "Madry2018Toward", "--n-examples", "2"], 2, "Madry2018Towards"))
    yield Case("command line", "a model on the wrong board", _one_line(
        ["evaluate", "--model", "Papernot2016Distillation", "--threat-model", "L2", "--n-examples", "2"], 2, "Papernot2016Distillation"))
    yield Case("command line", "--eps 1e400", _one_line(["evaluate", "--model", "LeCun1998Gradient", "--eps", "1e400"], 2, "eps"))
    if not torch.cuda.is_available():
        yield Case("command line", "--device cuda without a GPU", _one_line(
            ["evaluate", "--model", "LeCun1998Gradient", "--device", "cuda", "--n-examples", "2"], 2, "cuda"))
    yield Case("command line", "--n-examples -3", _one_line(["evaluate", "--model", "LeCun1998Gradient", "--n-examples", "-3"], 2, "n_examples"))
    yield Case("command line", "a missing results folder", _one_line(
        ["leaderboard", "build", "--results", str(root / "nope"), "--out", str(root / "site")], 2, "does not exist"))
    yield Case("command line", "an unknown protocol version", _one_line(["evaluate", "--model", "LeCun1998Gradient", "--version", "fast!"], 2, "version"))
    notes = root / "examples.safetensors"
    notes.write_bytes(b"not a safetensors file")
    yield Case("command line", "a non-safetensors examples file", _one_line(
        ["submit", "verify-adversarial", "--model", "LeCun1998Gradient", "--examples", str(notes)], 2, "safetensors"))


# ------------------------------------------------------------------ text shown on the site

_PAYLOADS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "javascript:alert(1)",
             "</title><script>alert(2)</script>", "{{ 7*7 }}<svg onload=alert(3)>"]


def site_cases(root: Path) -> Iterator[Case]:
    for i, payload in enumerate(_PAYLOADS):
        for place in ("title", "venue", "footnote", "authors", "link"):
            def run(payload: str = payload, place: str = place, i: int = i) -> None:
                kwargs: dict[str, Any] = {place: (payload,) if place == "authors" else payload}
                card = make_card(f"Evil202{i % 10}Model", **kwargs)
                out = root / "xss" / f"{place}{i}"
                build_site(aggregate([card], [make_record(card, 0.9, 0.4)]), out)
                write_csvs(aggregate([card], [make_record(card, 0.9, 0.4)]), out / "csv")
                for page in out.rglob("*.html"):
                    html = page.read_text()
                    for raw in ("<script>alert", "<img src=x", "<svg onload", 'href="javascript:'):
                        if raw in html:
                            raise Wrong(f"{raw!r} live in {page.relative_to(out)}")
                    if "49&lt;svg" in html or "49<svg" in html:
                        raise Wrong(f"a template expression was evaluated in {page.relative_to(out)}")
            yield Case("site text", f"{place}: {payload[:30]}", run)


# ------------------------------------------------------------------ running it all

def cases(root: Path, server: _Server, only: str | None) -> Iterator[Case]:
    repo = root / "repo"
    valid, doc = _repository(repo)
    groups = [
        lambda: document_cases(repo, valid, doc), lambda: field_cases(repo, valid, doc),
        lambda: checkpoint_cases(root / "ckpt", valid, doc), lambda: download_cases(server), number_cases,
        lambda: claim_cases(root), lambda: journal_cases(root), lambda: record_cases(root), lambda: cli_cases(root),
        lambda: site_cases(root),
    ]
    (root / "ckpt" / "submissions" / "digits" / "Linf").mkdir(parents=True, exist_ok=True)
    for group in groups:
        for case in group():
            if only is None or case.category == only:
                yield case


def _fuzz(n: int) -> None:
    """The suite's fuzzers, each with ``n`` examples, in a child process (their own time and memory)."""
    import subprocess

    start = time.perf_counter()
    files = [str(REPO / "tests" / name) for name in ("test_hostile_readers.py", "test_submission_schema.py")]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-k", "random or any",
         "--timeout", "3600", *files],
        cwd=REPO, env={**os.environ, "ROBENCH_FUZZ_EXAMPLES": str(n)}, capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    print(f"fuzz: {n} examples per fuzzer: {last}; {time.perf_counter() - start:.0f} s, peak RSS {peak:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="one category")
    parser.add_argument("--fuzz", type=int, default=0, help="also run the fuzzers with this many examples each")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    server = _Server()
    table: dict[str, dict[str, int]] = {}
    bad: list[str] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases(Path(tmp), server, args.only):
            outcome, detail = classify(case)
            table.setdefault(case.category, dict.fromkeys(OUTCOMES, 0))[outcome] += 1
            if args.verbose or outcome != "refused correctly":
                print(f"  [{outcome}] {case.category}: {case.name}{': ' + detail if detail else ''}", flush=True)
            if outcome != "refused correctly":
                bad.append(f"{case.category}: {case.name}")
    print(f"\n| category | tried | {' | '.join(OUTCOMES)} |\n|---|---|{'---|' * len(OUTCOMES)}")
    totals = dict.fromkeys(OUTCOMES, 0)
    for category, counts in table.items():
        print(f"| {category} | {sum(counts.values())} | {' | '.join(str(counts[o]) for o in OUTCOMES)} |")
        for o in OUTCOMES:
            totals[o] += counts[o]
    print(f"| **all** | {sum(totals.values())} | {' | '.join(str(totals[o]) for o in OUTCOMES)} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{time.perf_counter() - start:.0f} s, peak RSS {peak:.0f} MiB; pickled code ran: {_MARKER.exists()}")
    if args.fuzz:
        _fuzz(args.fuzz)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
