"""Verified checkpoint downloads into the user cache.

``fetch(url, sha256)`` returns the path of a cached file whose full sha256 was checked just now:

* the cache lives under ``$ROBENCH_CACHE/checkpoints`` or the platform's user cache directory
  (``platformdirs.user_cache_dir("robench")/checkpoints``), never the working directory; files are
  named by their hash, so two cards sharing a checkpoint share one file;
* the body is streamed into ``<hash>.part`` in the cache directory with a progress bar; a dropped
  connection is resumed with an HTTP ``Range`` request, and failed attempts are retried with
  exponential backoff;
* the finished file's sha256 is compared with the expected one before it is moved into place with
  an atomic rename; a mismatch (an HTML error page, a truncated or tampered file) raises
  :class:`ChecksumError` naming the expected and actual hashes and the URL, and leaves nothing behind;
* every cache hit is hashed again; a corrupted cached file is deleted and downloaded anew;
* a file lock per checkpoint makes concurrent loaders (processes or threads) wait for one download.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urljoin, urlparse

import requests
import urllib3
from filelock import FileLock
from tqdm.auto import tqdm

__all__ = [
    "DownloadError", "ChecksumError", "cache_dir", "fetch", "sha256_file", "sha256_bytes",
    "check_url", "SHA256_PATTERN", "DEFAULT_MAX_BYTES", "DEFAULT_DEADLINE_S",
]

log = logging.getLogger(__name__)

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
#: network read size: small, so that little is lost when a connection drops mid-chunk
_NET_CHUNK = 1 << 16
#: HTTP statuses worth another attempt; any other 4xx fails at once
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
#: the largest checkpoint :func:`fetch` accepts by default (the field's largest ImageNet checkpoints are
#: about 1 GB): a server that streams without end is cut off here
DEFAULT_MAX_BYTES = 4 << 30
#: the longest a whole download (all attempts) may take by default: a server sending a byte a second
#: never trips the per-read timeout, so the download as a whole has a deadline
DEFAULT_DEADLINE_S = 2 * 3600.0


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded (HTTP error, connection failures after all retries)."""


class _LimitExceeded(DownloadError):
    """The server sent more than the size limit allows, or the download ran past its deadline."""


class ChecksumError(DownloadError):
    """The bytes' sha256 is not the expected one."""

    def __init__(self, expected: str, actual: str, source: str, hint: str = "") -> None:
        self.expected, self.actual, self.source = expected, actual, source
        message = f"sha256 mismatch for {source}: expected {expected}, got {actual}; the file was refused"
        super().__init__(message + (f" ({hint})" if hint else ""))


def cache_dir() -> Path:
    """``$ROBENCH_CACHE/checkpoints`` when set, else ``<user cache dir>/robench/checkpoints``."""
    root = os.environ.get("ROBENCH_CACHE")
    if root:
        return Path(root).expanduser() / "checkpoints"
    import platformdirs

    return Path(platformdirs.user_cache_dir("robench")) / "checkpoints"


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Full lowercase hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str | None:
    """Why ``url`` is not an acceptable checkpoint URL, else None.

    Checkpoints come over https; plain http is accepted only from a loopback host (local mirrors, tests).
    """
    try:
        parts = urlparse(url)
        host = parts.hostname
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if not host:
        return f"{url!r} is not an absolute URL with a host; expected https://host/path"
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return None
    return f"{url!r} must use https (plain http only for a loopback host); got scheme {parts.scheme!r}"


def _looks_like_html(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in head


class _Incomplete(Exception):
    """An attempt that ended early (dropped connection, retryable HTTP status); the next one resumes."""


class _CheckedRedirects(requests.Session):
    """A session that follows a redirect only to a URL :func:`check_url` accepts (https, or http on a
    loopback host): an https checkpoint URL must not be served from a plain-http host."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is not None:
            absolute = urljoin(resp.url, target)
            problem = check_url(absolute)
            if problem:
                raise DownloadError(f"refused a redirect from {resp.url}: {problem}")
        return target


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    deadline: float  # time.monotonic() value


def _stream_once(session: requests.Session, url: str, part: Path, timeout: float, progress: bool | None,
                 limits: _Limits) -> None:
    """One GET into ``part``, resuming from its current size with a Range request."""
    offset = part.stat().st_size if part.exists() else 0
    # identity encoding: byte offsets and Content-Length then refer to the file itself
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with session.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True) as response:
        if response.status_code == 416 and offset:
            # the partial file is as long as (or longer than) the resource: start over
            part.unlink()
            raise _Incomplete("the server refused to resume (416); restarting from the beginning")
        if response.status_code >= 400:
            if response.status_code in _RETRY_STATUSES:
                raise _Incomplete(f"HTTP {response.status_code} {response.reason}")
            raise DownloadError(f"HTTP {response.status_code} {response.reason} for {url}")
        resumed = offset > 0 and response.status_code == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()  # the server answered another range than asked: start over
            raise _Incomplete(f"unexpected Content-Range {response.headers.get('Content-Range')!r}; restarting")
        mode = "ab" if resumed else "wb"
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        if total is not None and total > limits.max_bytes:
            raise _LimitExceeded(f"{url} announces {total} bytes, more than the limit of {limits.max_bytes}")
        with open(part, mode) as fh, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=Path(urlparse(url).path).name or "checkpoint", leave=False,
            disable=None if progress is None else not progress,
        ) as bar:
            written = _copy_body(response, fh, bar, start, limits, url)
        if total is not None and start + written < total:
            raise _Incomplete(f"connection closed after {start + written} of {total} bytes")


def _arriving_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: each chunk is what one read of the socket gave (at most _NET_CHUNK), so
    the limits are checked while a slow server trickles, not only once a whole chunk has come."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2
        yield from response.iter_content(chunk_size=_NET_CHUNK)
        return
    while chunk := raw.read1(_NET_CHUNK):
        yield chunk


def _copy_body(response: requests.Response, fh: BinaryIO, bar: tqdm, start: int, limits: _Limits, url: str) -> int:
    written = 0
    try:
        for chunk in _arriving_chunks(response):
            if start + written + len(chunk) > limits.max_bytes:
                raise _LimitExceeded(f"{url} sent more than the limit of {limits.max_bytes} bytes; refused")
            if time.monotonic() > limits.deadline:
                raise _LimitExceeded(f"the download of {url} ran past its deadline ({start + written} bytes received)")
            fh.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError) as exc:
        fh.flush()
        raise _Incomplete(f"connection dropped after {written} bytes of this attempt: {exc}") from exc
    return written


def _download(url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool | None,
              limits: _Limits) -> None:
    """Fill ``part`` with the complete body of ``url``, resuming and retrying as needed."""
    last: Exception | None = None
    with _CheckedRedirects() as session:
        for attempt in range(retries + 1):
            if attempt:
                delay = backoff * 2 ** (attempt - 1)
                log.warning("download of %s interrupted (%s); attempt %d of %d in %.1f s",
                            url, last, attempt + 1, retries + 1, delay)
                if time.monotonic() + delay > limits.deadline:
                    break
                time.sleep(delay)
            try:
                _stream_once(session, url, part, timeout, progress, limits)
                return
            except (_Incomplete, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                last = exc
            except requests.exceptions.RequestException as exc:  # a redirect loop, an invalid URL: no retry helps
                raise DownloadError(f"could not download {url}: {exc}") from None
    raise DownloadError(f"could not download {url} after {retries + 1} attempts: {last}")


def _cache_name(sha256: str, suffix: str) -> str:
    if suffix and not re.fullmatch(r"\.[A-Za-z0-9_]{1,16}", suffix):
        raise ValueError(f"suffix must look like '.safetensors', got {suffix!r}")
    return sha256 + suffix


def fetch(
    url: str,
    sha256: str,
    *,
    suffix: str = "",
    cache: str | os.PathLike | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Path:
    """Download ``url`` into the cache (or reuse the cached copy) and return its verified path.

    ``suffix`` ('.safetensors', '.pt') is appended to the cached file's name; ``progress`` None shows
    a progress bar only on a terminal. ``retries`` further attempts follow a failed one after
    ``backoff``, 2x``backoff``, 4x``backoff``... seconds, each resuming where the last one stopped.
    ``timeout`` bounds each wait for the server (connecting, or the next bytes: a stalled server);
    ``max_bytes`` the file's size and ``deadline_s`` the whole download, all attempts together.
    Redirects are followed only to https URLs (or http on a loopback host).
    Raises :class:`ChecksumError` when the bytes do not hash to ``sha256`` (nothing is kept) and
    :class:`DownloadError` when the download itself fails (after the last retry the partial file is
    kept, and the next call resumes from it) or breaks a limit (then it is removed).
    """
    if not isinstance(sha256, str) or not SHA256_PATTERN.fullmatch(sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha256!r}")
    problem = check_url(url)
    if problem:
        raise ValueError(problem)
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries and backoff must be non-negative, got {retries} and {backoff}")
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _cache_name(sha256, suffix)
    part = target.with_name(target.name + ".part")
    with FileLock(str(target) + ".lock"):
        if target.exists():
            actual = sha256_file(target)
            if actual == sha256:
                return target
            log.warning("cached %s is corrupted (sha256 %s, expected %s); downloading it again", target, actual, sha256)
            target.unlink()
        try:
            _download(url, part, retries, backoff, timeout, progress, _Limits(max_bytes, time.monotonic() + deadline_s))
        except _LimitExceeded:
            part.unlink(missing_ok=True)  # nothing of a refused download is kept
            raise
        actual = sha256_file(part)
        if actual != sha256:
            hint = ("the server sent an HTML or XML page, not a checkpoint" if _looks_like_html(part)
                    else f"received {part.stat().st_size} bytes: a truncated, tampered or different file")
            part.unlink()
            raise ChecksumError(sha256, actual, url, hint)
        os.replace(part, target)
    return target
