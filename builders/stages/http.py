"""Resumable HTTP(S) download into the content-addressed cache (``requests``, streamed).

A partial file survives failures: a later attempt (or a later build) asks for the rest with ``Range: bytes=N-``;
a server that ignores Range (200 instead of 206) makes the download restart from zero. A response shorter than its
``Content-Length`` is a transient failure, retried with exponential backoff like 5xx, 429 and network errors;
other HTTP statuses (404, 403...) fail at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import urllib3

from builders.stages import cas
from builders.stages.cas import Fetched
from corpus.errors import FetchError, HTTPFetchError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")

_session: tuple[int, requests.Session] | None = None


class _Transient(Exception):
    """A failure worth another attempt; carries the error to raise when attempts run out."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(str(error))
        self.error = error


def session() -> requests.Session:
    """One ``requests.Session`` per process (connection reuse; never shared across a fork)."""
    global _session
    if _session is None or _session[0] != os.getpid():
        _session = (os.getpid(), requests.Session())
    return _session[1]


def download(
    url: str,
    cache_dir: Path,
    *,
    expected_sha256: str | None = None,
    expected_bytes: int | None = None,
    retries: int = 4,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
) -> Fetched:
    """Download ``url`` into the cache, resuming a partial file, and verify it; a cache hit makes no request.

    Workers fetching the same URL at once take turns (a lock beside the partial file): the second one finds the
    first one's file, or resumes what it left.
    """
    ext = cas.suffix_of(url)
    if expected_sha256 is not None and (hit := cas.lookup(cache_dir, expected_sha256, ext, expected_bytes)):
        log.debug("%s: cache hit %s", url, hit.path)
        return hit
    part = cas.part_path(cache_dir, url, ext)
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if expected_sha256 is not None and (hit := cas.lookup(cache_dir, expected_sha256, ext, expected_bytes)):
            return hit
        attempts = max(retries, 0) + 1
        for attempt in range(attempts):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                _get_into(url, part, expected_bytes, timeout_s)
                break
            except _Transient as exc:
                log.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, attempts, exc)
                last = exc.error
        else:
            raise type(last)(f"{last} (gave up after {attempts} attempts)", detail=last.detail)
        return cas.commit(
            part, cache_dir, ext, what=url, expected_sha256=expected_sha256, expected_bytes=expected_bytes
        )


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. ``read1`` hands over every byte received before a dropped connection, which
    ``iter_content`` (urllib3 filling a whole block) would discard: the partial file must keep them to resume."""
    raw = resp.raw
    if hasattr(raw, "read1"):  # urllib3 >= 2.3
        while chunk := raw.read1(cas.BLOCK, decode_content=True):
            yield chunk
    else:
        yield from resp.iter_content(64 * 1024)


def _get_into(url: str, part: Path, expected_bytes: int | None, timeout_s: float) -> None:
    """Fetch what ``part`` still lacks (all of it when absent); return once the server sent the whole body."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_bytes is not None and offset > expected_bytes:
        part.unlink()
        offset = 0
    if offset and offset == expected_bytes:
        return  # complete from an earlier attempt; verified by the caller
    headers = {"Accept-Encoding": "identity"}
    received: int | None = None  # bytes of the file on disk once the body starts
    end: int | None = None
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session().get(url, stream=True, timeout=timeout_s, headers=headers) as resp:
            status = resp.status_code
            if status == 416 and offset:
                m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == offset:
                    return  # the partial file already holds the whole resource
                part.unlink()
                raise _Transient(FetchError(f"{url}: server refused to resume at byte {offset} (HTTP 416)"))
            if status not in (200, 206):
                body = next(resp.iter_content(500), b"").decode("utf-8", "replace")
                error = HTTPFetchError(f"HTTP {status} {resp.reason} fetching {url}", detail=body)
                if status in RETRY_STATUS:
                    raise _Transient(error)
                raise error
            if status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    got = resp.headers.get("Content-Range")
                    raise _Transient(FetchError(f"{url}: asked for bytes {offset}-, got Content-Range {got!r}"))
                end = int(m.group(2)) + 1
                mode = "ab"
            else:
                if offset:
                    log.info("%s: server ignored Range (HTTP 200); restarting from zero", url)
                offset = 0
                mode = "wb"
                length = resp.headers.get("Content-Length")
                encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
                end = int(length) if length and length.isdigit() and not encoded else None
            received = offset
            with open(part, mode) as f:
                for chunk in _chunks(resp):
                    f.write(chunk)
                    received += len(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        if received is None:  # before the body: no answer at all
            raise _Transient(FetchError(f"{url}: {type(exc).__name__}: {exc}")) from exc
        raise _Transient(
            FetchError(f"{url}: connection broken after {received} of {end or '?'} bytes", detail=repr(exc))
        ) from exc
    if end is not None and received < end:
        raise _Transient(FetchError(f"{url}: connection closed after {received} of {end} bytes"))
    if status == 206 and m.group(3) != "*" and offset < received < int(m.group(3)):
        # The server sent a smaller range than asked for: ask for the rest (this is progress, not a failure).
        _get_into(url, part, expected_bytes, timeout_s)
