"""Verified downloads, for real, against an HTTP server on 127.0.0.1 started by the tests.

The server supports ``Range`` requests and can misbehave on purpose: serve an HTML error page,
drop the connection halfway through the first response, send a short body, answer slowly.
``LocalServer`` is also used by tests/test_zoo_loading.py.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from model_zoo.download import ChecksumError, DownloadError, cache_dir, check_url, fetch, sha256_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HTML = b"<!DOCTYPE html><html><body><h1>Quota exceeded</h1></body></html>"


#: what an 'endless' body stops at: far past any limit a test sets, so that a client whose size limit is
#: broken fails the test (the bytes do not hash to what it expects) instead of filling the disk, as a
#: mutant of that limit once did (70 GB in a minute)
ENDLESS_CAP = 64 << 20


class LocalServer:
    """An HTTP server on 127.0.0.1 in a daemon thread. ``routes`` maps a path to (body, behaviour);
    behaviours: 'ok', 'drop-once' (first GET sends half the body, then closes), 'short' (announces and
    sends only half), 'slow' (3 ms per 16 KiB chunk), 'trickle' (a byte every 50 ms), 'endless' (no length, the body
    repeated until the client hangs up, or ENDLESS_CAP bytes have gone), 'no-length' (the body with no length, then
    the connection closed), 'wrong-range' (like 'drop-once', then a Range request answered with the whole body
    as 206 'bytes 0-...'), 'redirect' (302 to the body as a URL), 'missing' (404). ``log`` records (path,
    Range header)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.log: list[tuple[str, str | None]] = []
        self._dropped: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                server._serve(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                if isinstance(sys.exc_info()[1], ConnectionError):
                    return  # a client hanging up (the tests that refuse a download do): not news
                super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def requests_for(self, path: str) -> list[str | None]:
        with self._lock:
            return [rng for p, rng in self.log if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path, range_header = handler.path, handler.headers.get("Range")
        with self._lock:
            self.log.append((path, range_header))
            first_time = path not in self._dropped
            self._dropped.add(path)
        if path not in self.routes or self.routes[path][1] == "missing":
            body = b"not found"
            handler.send_response(404)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        body, behaviour = self.routes[path]
        if behaviour == "redirect":  # body: where to
            handler.send_response(302)
            handler.send_header("Location", body.decode())
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if behaviour == "no-length":  # HTTP/1.0 style: the body ends when the connection does
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.end_headers()
            handler.close_connection = True
            handler.wfile.write(body)
            return
        if behaviour == "wrong-range" and range_header is not None:  # the whole body, as if it were the range
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        if behaviour == "endless":  # no length, goes on until the client hangs up (or ENDLESS_CAP)
            handler.send_response(200)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.end_headers()
            handler.close_connection = True
            try:
                for _ in range(ENDLESS_CAP // len(body)):
                    handler.wfile.write(body)
            except OSError:
                return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match:
            start = int(match[1])
            if start >= len(body):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(body)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            handler.send_response(200)
        part = body[start:]
        content_type = "text/html" if body.lstrip().startswith(b"<!DOCTYPE") else "application/octet-stream"
        handler.send_header("Content-Type", content_type)
        if behaviour == "short":
            part = part[: len(part) // 2]
        handler.send_header("Content-Length", str(len(part)))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        if behaviour in ("drop-once", "wrong-range") and first_time:
            handler.wfile.write(part[: len(part) // 2])
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return
        if behaviour == "trickle":  # one byte every 50 ms
            try:
                for i in range(len(part)):
                    handler.wfile.write(part[i:i + 1])
                    handler.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        if behaviour == "slow":
            for i in range(0, len(part), 16384):
                handler.wfile.write(part[i:i + 16384])
                time.sleep(0.003)
            return
        handler.wfile.write(part)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.exists() else []


def test_good_file_is_cached_and_every_hit_is_verified(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/good.safetensors"] = (PAYLOAD, "ok")
    url = server.url("/good.safetensors")
    path = fetch(url, PAYLOAD_SHA, suffix=".safetensors", cache=tmp_path, progress=False)
    assert path == tmp_path / f"{PAYLOAD_SHA}.safetensors"
    assert path.read_bytes() == PAYLOAD
    assert _cache_files(tmp_path) == [path.name]
    assert fetch(url, PAYLOAD_SHA, suffix=".safetensors", cache=tmp_path, progress=False) == path
    assert len(server.requests_for("/good.safetensors")) == 1  # the second call was a cache hit

    # a cache hit is hashed again: a corrupted cached file is replaced by a fresh download
    path.write_bytes(PAYLOAD[:-1] + b"\x00")
    assert fetch(url, PAYLOAD_SHA, suffix=".safetensors", cache=tmp_path, progress=False) == path
    assert sha256_file(path) == PAYLOAD_SHA
    assert len(server.requests_for("/good.safetensors")) == 2


def test_tampered_file_is_refused_with_both_hashes_and_the_url(server: LocalServer, tmp_path: Path) -> None:
    tampered = PAYLOAD[:1000] + b"evil" + PAYLOAD[1004:]
    server.routes["/tampered.pt"] = (tampered, "ok")
    url = server.url("/tampered.pt")
    with pytest.raises(ChecksumError) as info:
        fetch(url, PAYLOAD_SHA, suffix=".pt", cache=tmp_path, progress=False, retries=0)
    message = str(info.value)
    actual = hashlib.sha256(tampered).hexdigest()
    assert PAYLOAD_SHA in message and actual in message and url in message
    assert (info.value.expected, info.value.actual, info.value.source) == (PAYLOAD_SHA, actual, url)
    assert _cache_files(tmp_path) == []  # neither the file nor a partial download is kept


def test_html_error_page_is_refused(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/quota"] = (HTML, "ok")
    url = server.url("/quota")
    with pytest.raises(ChecksumError) as info:
        fetch(url, PAYLOAD_SHA, cache=tmp_path, progress=False, retries=0)
    message = str(info.value)
    assert "HTML or XML page" in message and url in message and PAYLOAD_SHA in message
    assert hashlib.sha256(HTML).hexdigest() in message
    assert _cache_files(tmp_path) == []


@pytest.mark.parametrize("page", [
    b"<!DOCTYPE html>\n<meta charset=utf-8><title>Sign in</title>" + b" " * 600 + b"<html>",  # HTML5: no <html> up front
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>',     # a storage bucket's refusal
], ids=["html5-without-html-tag", "xml-error"])
def test_pages_that_are_no_checkpoint_are_named_as_such(server: LocalServer, tmp_path: Path, page: bytes) -> None:
    server.routes["/page"] = (page, "ok")
    with pytest.raises(ChecksumError, match="the server sent an HTML or XML page, not a checkpoint"):
        fetch(server.url("/page"), PAYLOAD_SHA, cache=tmp_path, progress=False, retries=0)
    server.routes["/binary"] = (b"PK\x03\x04" + bytes(600) + b"<html>", "ok")  # "<html>" past the head
    with pytest.raises(ChecksumError, match="received 610 bytes: a truncated, tampered or different file"):
        fetch(server.url("/binary"), PAYLOAD_SHA, cache=tmp_path, progress=False, retries=0)


def test_a_body_without_a_length_is_read_to_its_end(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/unsized.bin"] = (PAYLOAD, "no-length")
    cache = tmp_path / "not" / "yet" / "there"  # the cache folder is made, parents too
    assert fetch(server.url("/unsized.bin"), PAYLOAD_SHA, cache=cache, progress=False).read_bytes() == PAYLOAD


def test_a_resume_answered_with_another_range_starts_over(server: LocalServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    server.routes["/ranged.bin"] = (PAYLOAD, "wrong-range")
    with caplog.at_level(logging.WARNING, logger="model_zoo.download"):
        path = fetch(server.url("/ranged.bin"), PAYLOAD_SHA, cache=tmp_path, progress=False, backoff=0.0)
    assert path.read_bytes() == PAYLOAD  # not the first half followed by the whole body
    assert len(server.requests_for("/ranged.bin")) == 3  # dropped; resumed and refused; whole from the start
    assert f"unexpected Content-Range 'bytes 0-{len(PAYLOAD) - 1}/{len(PAYLOAD)}'; restarting" in caplog.text


def test_truncated_file_is_refused(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/short.pt"] = (PAYLOAD, "short")
    with pytest.raises(ChecksumError, match=f"received {len(PAYLOAD) // 2} bytes"):
        fetch(server.url("/short.pt"), PAYLOAD_SHA, cache=tmp_path, progress=False, retries=0)
    assert _cache_files(tmp_path) == []


def test_dropped_connection_is_resumed_with_a_range_request(server: LocalServer, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    server.routes["/drop.safetensors"] = (PAYLOAD, "drop-once")
    with caplog.at_level(logging.WARNING, logger="model_zoo.download"):
        path = fetch(server.url("/drop.safetensors"), PAYLOAD_SHA, cache=tmp_path, progress=False, backoff=0.0,
                     retries=3)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "model_zoo.download"]
    assert "connection dropped after 524288 bytes" in warning and "attempt 2 of 4 in 0.0 s" in warning
    assert path.read_bytes() == PAYLOAD
    first, second = server.requests_for("/drop.safetensors")
    assert first is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second)[1])  # the second request asked for the rest only
    assert 0 < resumed_at <= len(PAYLOAD) // 2
    assert _cache_files(tmp_path) == [path.name]


def test_http_errors_are_not_retried_and_retries_run_out(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("/nowhere"), PAYLOAD_SHA, cache=tmp_path, progress=False, backoff=0.0)
    assert len(server.requests_for("/nowhere")) == 1
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(f"http://127.0.0.1:{port}/x", PAYLOAD_SHA, cache=tmp_path, progress=False, retries=2, backoff=0.0)


def _fetch_in_child(url: str, cache: str, queue: multiprocessing.Queue) -> None:
    path = fetch(url, PAYLOAD_SHA, suffix=".safetensors", cache=cache, progress=False)
    queue.put((str(path), sha256_file(path)))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_two_processes_loading_at_once_download_once(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/slow.safetensors"] = (PAYLOAD, "slow")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_fetch_in_child, args=(server.url("/slow.safetensors"), str(tmp_path), queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results[0] == results[1] == (str(tmp_path / f"{PAYLOAD_SHA}.safetensors"), PAYLOAD_SHA)
    assert len(server.requests_for("/slow.safetensors")) == 1  # the second process waited for the lock
    assert _cache_files(tmp_path) == [f"{PAYLOAD_SHA}.safetensors"]


def test_cache_directory_and_url_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "checkpoints"
    monkeypatch.delenv("ROBENCH_CACHE")
    assert cache_dir().name == "checkpoints" and cache_dir().parent.name == "robench"
    assert check_url("https://example.org/m.pt") is None
    assert check_url("http://127.0.0.1:8000/m.pt") is None and check_url("http://localhost/m.pt") is None
    assert "must use https" in check_url("http://example.org/m.pt")
    assert "must use https" in check_url("ftp://example.org/m.pt")
    assert "absolute URL" in check_url("m.pt")
    with pytest.raises(ValueError, match="must use https"):
        fetch("http://example.org/m.pt", PAYLOAD_SHA, cache=tmp_path)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        fetch("https://example.org/m.pt", PAYLOAD_SHA.upper(), cache=tmp_path)


def test_a_server_that_never_stops_is_cut_off_at_the_size_limit(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/endless.bin"] = (PAYLOAD[:65536], "endless")
    with pytest.raises(DownloadError, match="more than the limit of 3000000 bytes"):
        fetch(server.url("/endless.bin"), PAYLOAD_SHA, cache=tmp_path, retries=0, max_bytes=3_000_000, progress=False)
    assert _cache_files(tmp_path) == []  # nothing of a refused download is kept
    server.routes["/big.bin"] = (PAYLOAD, "ok")  # 1 MiB announced by Content-Length: refused before reading
    with pytest.raises(DownloadError, match="announces 1048576 bytes, more than the limit of 1000"):
        fetch(server.url("/big.bin"), PAYLOAD_SHA, cache=tmp_path, retries=0, max_bytes=1000, progress=False)


def test_a_trickling_server_is_cut_off_at_the_deadline(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/trickle.bin"] = (b"x" * 200, "trickle")  # 10 s at a byte every 50 ms
    started = time.monotonic()
    with pytest.raises(DownloadError, match="ran past its deadline"):
        fetch(server.url("/trickle.bin"), "0" * 64, cache=tmp_path, retries=3, deadline_s=0.5, progress=False)
    assert time.monotonic() - started < 5  # the deadline holds whatever the retries
    assert _cache_files(tmp_path) == []


def test_redirects_only_to_urls_a_card_may_name(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/moved.bin"] = (server.url("/good-again.bin").encode(), "redirect")
    server.routes["/good-again.bin"] = (PAYLOAD, "ok")
    assert sha256_file(fetch(server.url("/moved.bin"), PAYLOAD_SHA, cache=tmp_path, progress=False)) == PAYLOAD_SHA
    server.routes["/relative.bin"] = (b"/good-again.bin", "redirect")  # a path: joined to the URL that answered
    assert fetch(server.url("/relative.bin"), PAYLOAD_SHA, cache=tmp_path / "r", progress=False).read_bytes() == PAYLOAD
    server.routes["/downgrade.bin"] = (b"http://checkpoints.example.org/model.pt", "redirect")
    with pytest.raises(DownloadError, match="refused a redirect .* must use https"):
        fetch(server.url("/downgrade.bin"), "1" * 64, cache=tmp_path / "other", retries=0, progress=False)


def test_a_redirect_loop_is_a_download_error_not_a_traceback(server: LocalServer, tmp_path: Path) -> None:
    """requests' TooManyRedirects escaped as a raw exception (benchmarks/hostile_inputs.py found it)."""
    server.routes["/loop.bin"] = (server.url("/loop.bin").encode(), "redirect")
    with pytest.raises(DownloadError, match="could not download .*redirects"):
        fetch(server.url("/loop.bin"), "1" * 64, cache=tmp_path, retries=3, backoff=0.0, progress=False)
    assert len([path for path, _ in server.log if path == "/loop.bin"]) <= 31  # no retry of a loop


def test_the_progress_bar_counts_the_bytes_only_when_asked(server: LocalServer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    server.routes["/shown.bin"] = (PAYLOAD, "ok")
    fetch(server.url("/shown.bin"), PAYLOAD_SHA, cache=tmp_path / "shown", progress=True)
    shown = capsys.readouterr().err
    # named by the file, the total known (1 MiB, in units of 1,024 bytes), counted in bytes
    assert shown.startswith("\rshown.bin:") and "/1.00M " in shown and "B/s]" in shown
    fetch(server.url("/shown.bin"), PAYLOAD_SHA, cache=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
