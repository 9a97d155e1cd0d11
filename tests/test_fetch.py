"""The fetch stage against real files and a real HTTP server on loopback (Range, truncation, 5xx, bad bytes, Hub)."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builders.stages.cas import cache_path, part_path
from builders.stages.fetch import Fetched, FetchStage, fetch_uri, resolve_uri
from corpus.errors import ChecksumMismatch, FetchError, HTTPFetchError, ManifestError, MissingInput
from corpus.schemas import FETCH, to_table

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FAST = {"retries": 3, "backoff_s": 0.01, "timeout_s": 10.0}


@dataclass
class Behaviour:
    """What the loopback server serves and how it misbehaves; it records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    truncate: int = 0  # truncate this many next GET responses to half their length
    fail: int = 0  # answer this many next GETs with 500
    ignore_range: bool = False
    corrupt: bool = False  # serve bytes that differ from the file's
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (method, path, headers)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self) -> list[dict[str, str]]:
        return [h for m, _, h in self.seen if m == "GET"]


def _handler(state: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            with state.lock:
                state.seen.append((self.command, self.path, dict(self.headers)))
                fail = not head and state.fail > 0
                truncate = not head and not fail and state.truncate > 0
                state.fail -= fail
                state.truncate -= truncate
            path, hub = self.path, None
            if m := re.match(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
                hub, path = m.group(3), f"/{m.group(1) or ''}{m.group(2)}/{m.group(4)}"
            body = state.files.get(path)
            if fail:
                return self._reply(500, b"transient failure", head)
            if body is None:
                return self._reply(404, b"not found", head, {"X-Error-Code": "EntryNotFound"} if hub else {})
            if state.corrupt:
                body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
            extra = {"Accept-Ranges": "bytes"}
            if hub is not None:
                extra |= {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            status, start = 200, 0
            rng = re.match(r"^bytes=(\d+)-$", self.headers.get("Range", ""))
            if rng and not state.ignore_range:
                start = int(rng.group(1))
                if start >= len(body):
                    return self._reply(416, b"", head, {"Content-Range": f"bytes */{len(body)}"})
                status = 206
                extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            chunk = body[start:]
            self._reply(status, chunk, head, extra, send=len(chunk) // 2 if truncate else len(chunk))

        def _reply(self, status: int, body: bytes, head: bool, headers=None, send: int | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body[: len(body) if send is None else send])
            self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    state = Behaviour(files={"/videos/a.bin": PAYLOAD})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def _no_partials(cache: Path) -> bool:
    return not list(cache.glob("tmp/*.part"))


# --- HTTP -------------------------------------------------------------------------------------------------------


def test_http_download_lands_at_content_address(server, tmp_path):
    base, state = server
    got = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    assert got == Fetched(path=str(cache_path(tmp_path, SHA, ".bin")), sha256=SHA, bytes=len(PAYLOAD))
    assert got.path == str(tmp_path / "sha256" / SHA[:2] / f"{SHA}.bin")
    assert Path(got.path).read_bytes() == PAYLOAD
    assert len(state.gets()) == 1 and "Range" not in state.gets()[0]
    assert _no_partials(tmp_path)


def test_truncated_response_is_resumed_with_range(server, tmp_path):
    base, state = server
    state.truncate = 1
    got = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    gets = state.gets()
    assert len(gets) == 2
    assert "Range" not in gets[0]
    assert gets[1]["Range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert Path(got.path).read_bytes() == PAYLOAD and got.sha256 == SHA


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    base, state = server
    state.truncate, state.ignore_range = 1, True
    got = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    assert state.gets()[1]["Range"] == f"bytes={len(PAYLOAD) // 2}-"  # asked to resume, got the whole body
    assert Path(got.path).read_bytes() == PAYLOAD


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    base, state = server
    url = f"{base}/videos/a.bin"
    state.truncate = 5  # every attempt of the first run is cut short
    with pytest.raises(FetchError, match="connection (broken|closed) after 150000 of 300000 bytes"):
        fetch_uri(url, root=None, cache_dir=tmp_path, retries=0, backoff_s=0.01)
    assert not (tmp_path / "sha256").exists()
    state.truncate = 0
    got = fetch_uri(url, root=None, cache_dir=tmp_path, **FAST)
    assert state.gets()[-1]["Range"] == f"bytes={len(PAYLOAD) // 2}-"
    assert got.sha256 == SHA and Path(got.path).read_bytes() == PAYLOAD


def test_complete_partial_file_is_verified_after_416(server, tmp_path):
    base, state = server
    url = f"{base}/videos/a.bin"
    part = part_path(tmp_path, url, ".bin")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)  # an earlier run got every byte but stopped before verifying
    got = fetch_uri(url, root=None, cache_dir=tmp_path, **FAST)
    assert [h["Range"] for h in state.gets()] == [f"bytes={len(PAYLOAD)}-"]  # answered 416 bytes */300000
    assert got.sha256 == SHA and not part.exists()


def test_concurrent_fetches_of_one_url_download_once(server, tmp_path):
    base, state = server
    results: list[Fetched] = []

    def fetch() -> None:
        results.append(fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST))

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(state.gets()) == 1 and Path(results[0].path).read_bytes() == PAYLOAD


def test_wrong_expected_checksum_raises_and_caches_nothing(server, tmp_path):
    base, _ = server
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch, match=f"sha256 {SHA}, expected {wrong}") as info:
        fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=wrong, **FAST)
    assert "/videos/a.bin" in str(info.value) and not info.value.retryable
    assert not cache_path(tmp_path, wrong, ".bin").exists()
    assert not cache_path(tmp_path, SHA, ".bin").exists()
    assert _no_partials(tmp_path)


def test_corrupt_bytes_never_reach_the_cache(server, tmp_path):
    base, state = server
    state.files["/mirror/a.bin"] = PAYLOAD
    state.corrupt = True
    with pytest.raises(ChecksumMismatch, match=f"/mirror/a.bin: sha256 [0-9a-f]{{64}}, expected {SHA}"):
        fetch_uri(f"{base}/mirror/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    assert not cache_path(tmp_path, SHA, ".bin").exists() and _no_partials(tmp_path)

    state.corrupt = False
    good = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    state.corrupt = True
    bad = fetch_uri(f"{base}/mirror/a.bin", root=None, cache_dir=tmp_path, **FAST)  # unpinned: stored by its hash
    assert bad.sha256 != SHA and bad.path != good.path
    assert Path(good.path).read_bytes() == PAYLOAD


def test_404_raises_http_error_without_retries(server, tmp_path):
    base, state = server
    url = f"{base}/videos/missing.bin"
    with pytest.raises(HTTPFetchError, match="HTTP 404") as info:
        fetch_uri(url, root=None, cache_dir=tmp_path, **FAST)
    assert url in str(info.value) and info.value.retryable
    assert len(state.gets()) == 1


def test_transient_500_is_retried(server, tmp_path):
    base, state = server
    state.fail = 2
    got = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, **FAST)
    assert got.sha256 == SHA and len(state.gets()) == 3


def test_persistent_500_gives_up_after_retries(server, tmp_path):
    base, state = server
    state.fail = 100
    with pytest.raises(HTTPFetchError, match=r"HTTP 500 .* \(gave up after 3 attempts\)"):
        fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, retries=2, backoff_s=0.01)
    assert len(state.gets()) == 3


def test_network_error_raises_fetch_error(tmp_path):
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as httpd:
        port = httpd.server_address[1]  # bound then closed: nothing listens there
    with pytest.raises(FetchError, match="ConnectionError") as info:
        fetch_uri(f"http://127.0.0.1:{port}/a.bin", root=None, cache_dir=tmp_path, retries=1, backoff_s=0.01)
    assert info.value.retryable and not isinstance(info.value, HTTPFetchError)


def test_known_checksum_is_a_cache_hit_without_request(server, tmp_path):
    base, state = server
    first = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    state.seen.clear()
    again = fetch_uri(f"{base}/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST)
    assert again == first and state.seen == []


def test_relative_uri_against_http_root(server, tmp_path):
    base, state = server
    got = fetch_uri("videos/a.bin", root=f"{base}/", cache_dir=tmp_path, **FAST)
    assert got.sha256 == SHA
    assert [p for _, p, _ in state.seen] == ["/videos/a.bin"]
    assert resolve_uri("a.bin", "https://host/data") == "https://host/data/a.bin"


# --- local files ------------------------------------------------------------------------------------------------


def test_local_paths_are_used_in_place(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    video = src / "sub" / "a.bin"
    video.write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    expected = Fetched(path=str(video), sha256=SHA, bytes=len(PAYLOAD))
    assert fetch_uri("sub/a.bin", root=str(src), cache_dir=cache, expected_sha256=SHA) == expected
    assert fetch_uri(str(video), root=None, cache_dir=cache) == expected
    assert fetch_uri(video.as_uri(), root=None, cache_dir=cache, expected_bytes=len(PAYLOAD)) == expected
    assert fetch_uri("sub/a.bin", root=src.as_uri(), cache_dir=cache) == expected
    assert not cache.exists()  # nothing copied


def test_missing_local_file_names_the_path(tmp_path):
    with pytest.raises(MissingInput, match=re.escape(str(tmp_path / "nope.mp4"))):
        fetch_uri("nope.mp4", root=str(tmp_path), cache_dir=tmp_path / "cache")
    with pytest.raises(MissingInput, match="no such file"):
        fetch_uri((tmp_path / "gone.mp4").as_uri(), root=None, cache_dir=tmp_path / "cache")


def test_local_checksum_mismatch(tmp_path):
    video = tmp_path / "a.bin"
    video.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumMismatch, match=f"{re.escape(str(video))}: sha256 {SHA}"):
        fetch_uri(str(video), root=None, cache_dir=tmp_path, expected_sha256="f" * 64)
    with pytest.raises(ChecksumMismatch, match="size 300000 bytes, expected 5"):
        fetch_uri(str(video), root=None, cache_dir=tmp_path, expected_bytes=5)


def test_unsupported_scheme(tmp_path):
    with pytest.raises(ManifestError, match="unsupported URI scheme 's3'"):
        fetch_uri("s3://bucket/a.mp4", root=None, cache_dir=tmp_path)


# --- the stage --------------------------------------------------------------------------------------------------


def _row(uri: str, root: str | None, **kw) -> dict:
    return {
        "video_id": "src/a",
        "source": "src",
        "domain": "laparoscopy",
        "native_id": "a",
        "uri": uri,
        "root": root,
        "expected_sha256": None,
        "expected_bytes": None,
    } | kw


def test_stage_rows_errors_and_fingerprints(server, tmp_path):
    base, _ = server
    video = tmp_path / "a.bin"
    video.write_bytes(PAYLOAD)
    stage = FetchStage(str(tmp_path / "cache"), retries=1, backoff_s=0.01, timeout_s=10.0)
    assert stage.name == "fetch"
    stage.setup()

    row = _row("a.bin", str(tmp_path))
    result = stage.process(row)
    assert result.errors == [] and result.cacheable
    expected = {k: row[k] for k in ("video_id", "source", "domain", "native_id", "uri")}
    expected |= {"path": str(video), "sha256": SHA, "bytes": len(PAYLOAD)}
    assert to_table(result.rows, FETCH).to_pylist() == [expected]

    fp = stage.fingerprint(row)
    assert stage.fingerprint(row) == fp
    os.utime(video, ns=(1, 1))
    assert stage.fingerprint(row) != fp  # a touched file is re-hashed

    missing = stage.process(_row("gone.bin", str(tmp_path)))
    assert missing.rows == [] and missing.cacheable  # bad data: recorded once, not retried
    [err] = missing.errors
    assert (err.stage, err.kind, err.video_id, err.uri) == ("fetch", "missing_file", "src/a", "gone.bin")
    assert str(tmp_path / "gone.bin") in err.message

    http_404 = stage.process(_row("videos/missing.bin", base))
    assert http_404.errors[0].kind == "http_error" and not http_404.cacheable  # may go away: retried next build

    remote = _row("videos/a.bin", base, expected_sha256=SHA)
    assert stage.fingerprint(remote) != stage.fingerprint(remote | {"expected_sha256": "0" * 64})
    assert stage.process(remote).rows[0]["path"] == str(cache_path(tmp_path / "cache", SHA, ".bin"))


# --- Hugging Face Hub -------------------------------------------------------------------------------------------


@pytest.fixture
def hub(server, monkeypatch):
    """The loopback server as the Hub: ``/[datasets/]<owner>/<repo>/resolve/<rev>/<path>`` with Hub headers."""
    from huggingface_hub import constants

    base, state = server
    state.files["/datasets/owner/repo/videos/a.bin"] = PAYLOAD
    state.files["/owner/model/weights/a.bin"] = PAYLOAD
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import
    monkeypatch.setenv("HF_TOKEN", "")  # never send a real token to the stand-in
    return state


def test_hf_dataset_file_through_hf_endpoint(hub, tmp_path):
    got = fetch_uri(
        "hf://datasets/owner/repo/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA, **FAST
    )
    assert got == Fetched(path=str(cache_path(tmp_path, SHA, ".bin")), sha256=SHA, bytes=len(PAYLOAD))
    assert Path(got.path).read_bytes() == PAYLOAD
    assert any(p == "/datasets/owner/repo/resolve/main/videos/a.bin" for m, p, _ in hub.seen if m == "GET")
    assert list((tmp_path / "hf").glob("datasets--owner--repo/snapshots/*/videos/a.bin"))
    hub.seen.clear()
    assert (
        fetch_uri("hf://datasets/owner/repo/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256=SHA) == got
    )
    assert hub.seen == []


def test_hf_model_revision_and_relative_uri(hub, tmp_path):
    got = fetch_uri("weights/a.bin@v1", root="hf://owner/model", cache_dir=tmp_path, **FAST)
    assert got.sha256 == SHA
    got = fetch_uri("a.bin", root="hf://owner/model@v2/weights", cache_dir=tmp_path, **FAST)
    assert got.sha256 == SHA
    revisions = [p.split("/")[4] for m, p, _ in hub.seen if m == "HEAD"]
    assert revisions == ["v1", "v2"]


def test_hf_missing_file_and_bad_checksum(hub, tmp_path):
    with pytest.raises(HTTPFetchError, match="HTTP 404 fetching hf://datasets/owner/repo/videos/nope.bin"):
        fetch_uri("hf://datasets/owner/repo/videos/nope.bin", root=None, cache_dir=tmp_path, **FAST)
    with pytest.raises(ChecksumMismatch, match="expected " + "e" * 64):
        fetch_uri("hf://datasets/owner/repo/videos/a.bin", root=None, cache_dir=tmp_path, expected_sha256="e" * 64)
    assert not (tmp_path / "sha256").exists()
    with pytest.raises(ManifestError, match="names no file"):
        fetch_uri("hf://datasets/owner/repo", root=None, cache_dir=tmp_path)
