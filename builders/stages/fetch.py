"""The fetch stage: make every video of the plan a verified local file.

URIs, absolute or relative to the source root (a local folder, an ``http(s)://`` base URL or an ``hf://`` repo):

- a plain path or ``file://`` URI: used in place (never copied); sha256 and size are computed;
- ``http(s)://``: streamed into the content-addressed cache with Range resume and retries (``builders.stages.http``);
- ``hf://[datasets/]<owner>/<repo>[@revision]/<path>`` (or ``.../<path>@revision``): ``hf_hub_download`` into
  ``<cache>/hf`` (honouring ``HF_ENDPOINT`` at call time), then linked to its content address;
- ``youtube://<id>`` or a YouTube URL (watch, ``youtu.be``, shorts; sources with ``access: youtube``): yt-dlp
  (``builders.stages.youtube``), only when it is installed; otherwise a ``fetch`` error row saying so. A YouTube
  page is never a video file, so such URLs are never fetched as plain HTTP.

Downloads land in ``<cache>/sha256/<aa>/<sha256><ext>``; with a known checksum a cached file is used without a request.
A checksum or size mismatch raises ``ChecksumMismatch`` and leaves no file under the expected name.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

from builders.stages import cas
from builders.stages.base import Stage, UnitResult, stable_hash
from builders.stages.cas import Fetched
from corpus.errors import (
    ErrorRow,
    FetchError,
    HTTPFetchError,
    ManifestError,
    MissingInput,
    SurgcorpusError,
    ToolMissing,
)
from corpus.schemas import FETCH

__all__ = ["Fetched", "FetchStage", "fetch_uri", "resolve_uri"]

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def resolve_uri(uri: str, root: str | None) -> str:
    """An absolute URI or local path for ``uri``, relative ones taken against ``root`` (folder or base URL)."""
    if _SCHEME.match(uri) or Path(uri).is_absolute():
        return uri
    if root is None:
        return os.path.abspath(uri)
    scheme = _scheme(root)
    if scheme in ("http", "https"):
        return urljoin(root if root.endswith("/") else root + "/", uri)
    if scheme == "file":
        return str(Path(_file_path(root)) / uri)
    if scheme:
        return f"{root.rstrip('/')}/{uri.lstrip('/')}"
    return str(Path(root) / uri)


def fetch_uri(
    uri: str,
    *,
    root: str | None,
    cache_dir: Path,
    expected_sha256: str | None = None,
    expected_bytes: int | None = None,
    retries: int = 4,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
) -> Fetched:
    """Fetch one video (see the module docstring); raises ``SurgcorpusError`` subclasses on failure."""
    target = resolve_uri(uri, root)
    cache_dir = Path(cache_dir)
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None
    scheme = _scheme(target)
    if scheme in ("", "file"):
        path = _file_path(target) if scheme else target
        return _fetch_local(path, expected_sha256, expected_bytes)
    if scheme in ("youtube", "http", "https"):
        # imported here, not at module level: requests (about 20 MiB and 0.1 s in every process) serves only remote
        # sources, and the build's driver and workers import this module
        from builders.stages import http, youtube

        if scheme == "youtube" or youtube.is_youtube(target):
            return youtube.download(
                target,
                cache_dir,
                expected_sha256=expected_sha256,
                expected_bytes=expected_bytes,
                retries=retries,
                timeout_s=timeout_s,
            )
        return http.download(
            target,
            cache_dir,
            expected_sha256=expected_sha256,
            expected_bytes=expected_bytes,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
    if scheme == "hf":
        return _fetch_hf(target, cache_dir, expected_sha256, expected_bytes, retries, backoff_s, timeout_s)
    raise ManifestError(
        f"{uri}: unsupported URI scheme {scheme!r} (use a path, file://, http(s)://, hf:// or youtube://)"
    )


def _scheme(uri: str) -> str:
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else ""


def _file_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ManifestError(f"{uri}: file:// URIs must name a local path (host {parts.netloc!r} is not supported)")
    return url2pathname(parts.path)


def _fetch_local(path: str, expected_sha256: str | None, expected_bytes: int | None) -> Fetched:
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise MissingInput(f"{p}: {'is a directory, not a video file' if p.is_dir() else 'no such file'}")
    try:
        sha256, size = cas.sha256_file(p)
    except OSError as exc:
        raise FetchError(f"{p}: cannot read: {exc}") from exc
    cas.check(str(p), sha256, size, expected_sha256, expected_bytes)
    return Fetched(path=str(p), sha256=sha256, bytes=size)


def _local_path(target: str) -> str | None:
    """The local path a resolved URI names, or None for a remote one."""
    scheme = _scheme(target)
    if scheme == "":
        return str(Path(target).expanduser().absolute())
    if scheme == "file":
        return str(Path(_file_path(target)).absolute())
    return None


# --- Hugging Face Hub -------------------------------------------------------------------------------------------


def _parse_hf(uri: str) -> tuple[str, str, str, str | None]:
    """``(repo_type, repo_id, filename, revision)`` of an ``hf://`` file URI."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    try:
        ref = parse_hf_uri(uri)
    except HfUriError as exc:
        raise ManifestError(f"{uri}: {exc}") from None
    if ref.type not in ("model", "dataset"):
        raise ManifestError(f"{uri}: only model and dataset repos can be fetched (got a {ref.type})")
    path, revision = ref.path_in_repo, ref.revision
    head, sep, tail = path.rpartition("@")
    if revision is None and sep and head and tail and "/" not in tail:
        path, revision = head, tail  # hf://datasets/<owner>/<repo>/<path>@<revision>
    if not path or path.endswith("/"):
        raise ManifestError(f"{uri}: names no file inside the repo (expected hf://[datasets/]<owner>/<repo>/<path>)")
    return ref.type, ref.id, path, revision


def _fetch_hf(
    uri: str,
    cache_dir: Path,
    expected_sha256: str | None,
    expected_bytes: int | None,
    retries: int,
    backoff_s: float,
    timeout_s: float,
) -> Fetched:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ToolMissing("hf:// URIs need huggingface_hub: pip install huggingface_hub") from None
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    from builders.stages import http

    repo_type, repo_id, filename, revision = _parse_hf(uri)
    ext = cas.suffix_of(filename)
    if expected_sha256 is not None and (hit := cas.lookup(cache_dir, expected_sha256, ext, expected_bytes)):
        return hit
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at import
    attempts = retries + 1
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            local = hf_hub_download(
                repo_id,
                filename,
                repo_type=repo_type,
                revision=revision,
                cache_dir=cache_dir / "hf",
                endpoint=endpoint,
                etag_timeout=timeout_s,
                tqdm_class=_no_progress_class(),
            )
            break
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            error: FetchError = HTTPFetchError(
                f"HTTP {status} fetching {uri}: {str(exc).splitlines()[0]}", detail=str(exc)
            )
            if status not in http.RETRY_STATUS:
                raise error from None
        except (OSError, _httpx_error()) as exc:
            error = FetchError(f"{uri}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if constants.is_offline_mode():
                raise FetchError(f"{error} (HF_HUB_OFFLINE is set and the file is not cached)") from None
        log.warning("%s: attempt %d/%d failed: %s", uri, attempt + 1, attempts, error)
    else:
        raise type(error)(f"{error} (gave up after {attempts} attempts)", detail=error.detail)
    sha256, size = cas.sha256_file(local)
    cas.check(uri, sha256, size, expected_sha256, expected_bytes, detail=f"Hub cache file {local}")
    return cas.adopt(Path(local), cache_dir, ext, sha256, size)


def _httpx_error() -> type[Exception]:
    """huggingface_hub's HTTP client's base error (``httpx2`` or ``httpx``, whichever this version uses)."""
    for name in ("httpx2", "httpx"):
        try:
            return __import__(name).HTTPError
        except (ImportError, AttributeError):
            continue
    return OSError


@functools.cache
def _no_progress_class() -> type:
    from tqdm.auto import tqdm  # a dependency of huggingface_hub

    class NoProgress(tqdm):
        """The executor shows progress; huggingface_hub's own bars stay off."""

        def __init__(self, *args, **kwargs) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return NoProgress


# --- the stage --------------------------------------------------------------------------------------------------


class FetchStage(Stage):
    """Fetch each planned video; rows of the ``fetch`` table (``corpus.schemas.FETCH``)."""

    name: ClassVar[str] = "fetch"
    requires: ClassVar[tuple[str, ...]] = (
        "video_id",
        "source",
        "domain",
        "native_id",
        "uri",
        "root",
        "expected_sha256",
        "expected_bytes",
    )
    outputs: ClassVar = {"fetch": (FETCH, ())}

    def __init__(self, cache_dir: str, *, retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 60.0) -> None:
        self.cache_dir = cache_dir
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s

    def fingerprint(self, row: dict) -> str:
        """Local: (path, size, mtime_ns), so unchanged files are not re-hashed; remote: the URI and checksum."""
        expected = (row.get("expected_sha256"), row.get("expected_bytes"))
        try:
            target = resolve_uri(row["uri"], row.get("root"))
            path = _local_path(target)
        except ManifestError:
            return stable_hash("invalid", row["uri"], row.get("root"))
        if path is None:
            return stable_hash("remote", target, *expected)
        try:
            st = os.stat(path)
        except OSError:
            return stable_hash("missing", path, *expected)
        return stable_hash("local", path, st.st_size, st.st_mtime_ns, *expected)

    def process(self, row: dict) -> UnitResult:
        try:
            got = fetch_uri(
                row["uri"],
                root=row.get("root"),
                cache_dir=Path(self.cache_dir),
                expected_sha256=row.get("expected_sha256"),
                expected_bytes=row.get("expected_bytes"),
                retries=self.retries,
                backoff_s=self.backoff_s,
                timeout_s=self.timeout_s,
            )
        except SurgcorpusError as exc:
            error = ErrorRow.from_exception("fetch", exc, video_id=row["video_id"], uri=row["uri"])
            return UnitResult(errors=[error], cacheable=not exc.retryable)
        out = {k: row[k] for k in ("video_id", "source", "domain", "native_id", "uri")}
        return UnitResult(rows=[{**out, "path": got.path, "sha256": got.sha256, "bytes": got.bytes}])
