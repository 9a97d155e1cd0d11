"""YouTube videos (``youtube://<id>`` or a YouTube URL) fetched with yt-dlp into the content-addressed cache.

yt-dlp is optional and imported late: without it, or without network, every such video is a ``FetchError`` (kind
``fetch``, retried by a later build, never cached as done) whose message says what to do, and the build goes on.
A downloaded file is verified against the expected checksum/size when the manifest pins them and moved to
``<cache>/sha256/<aa>/<sha256><ext>``; ``<cache>/youtube/<id>.json`` remembers which content address an id got, so
a later build does not download it again even without a pinned checksum.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from builders.stages import cas
from builders.stages.cas import Fetched
from corpus.atomic import temp_sibling
from corpus.errors import FetchError, ManifestError
from corpus.video_lists import YOUTUBE_ID, youtube_id_of, youtube_url

log = logging.getLogger(__name__)

NOT_INSTALLED = "yt-dlp not installed: pip install yt-dlp"
# a single-file H.264 MP4 when YouTube has one (no merging), else the best single file
FORMAT = "b[ext=mp4][vcodec^=avc1]/bv*[ext=mp4][vcodec^=avc1]/b[ext=mp4]/b"


def is_youtube(uri: str) -> bool:
    return youtube_id_of(uri) is not None


def available() -> bool:
    """Whether the ``yt_dlp`` module can be imported here."""
    return importlib.util.find_spec("yt_dlp") is not None


def _index_path(cache_dir: Path, video_id: str) -> Path:
    return Path(cache_dir) / "youtube" / f"{video_id}.json"


def _cached(cache_dir: Path, video_id: str, expected_sha256: str | None, expected_bytes: int | None) -> Fetched | None:
    if expected_sha256 is not None:
        for ext in (".mp4", ".webm", ".mkv"):
            if hit := cas.lookup(cache_dir, expected_sha256, ext, expected_bytes):
                return hit
    try:
        known = json.loads(_index_path(cache_dir, video_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if expected_sha256 is not None and known["sha256"] != expected_sha256:
        return None
    return cas.lookup(cache_dir, known["sha256"], known["ext"], expected_bytes)


def download(
    uri: str,
    cache_dir: Path,
    *,
    expected_sha256: str | None = None,
    expected_bytes: int | None = None,
    retries: int = 4,
    timeout_s: float = 60.0,
) -> Fetched:
    """Fetch one YouTube video; raises ``FetchError`` (yt-dlp missing, network, unavailable video)."""
    video_id = youtube_id_of(uri)
    if video_id is None or not YOUTUBE_ID.match(video_id):
        raise ManifestError(f"{uri}: not a YouTube video (expected youtube://<11-character id> or a watch URL)")
    cache_dir = Path(cache_dir)
    if hit := _cached(cache_dir, video_id, expected_sha256, expected_bytes):
        return hit
    if not available():
        raise FetchError(f"{uri}: {NOT_INSTALLED}")
    import yt_dlp

    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"yt-{video_id}-", dir=cache_dir / "tmp"))
    opts = {
        "format": FORMAT,
        "outtmpl": str(tmp / "%(id)s.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "retries": retries,
        "socket_timeout": timeout_s,
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.extract_info(youtube_url(video_id), download=True)
        files = sorted(p for p in tmp.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl")))
        if not files:
            raise FetchError(f"{uri}: yt-dlp finished without writing a file")
        ext = cas.suffix_of(files[0].name) or ".mp4"
        got = cas.commit(
            files[0], cache_dir, ext, what=uri, expected_sha256=expected_sha256, expected_bytes=expected_bytes
        )
    except yt_dlp.utils.DownloadError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FetchError(f"{uri}: yt-dlp: {first}", detail=str(exc)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    index = _index_path(cache_dir, video_id)
    index.parent.mkdir(parents=True, exist_ok=True)
    part = temp_sibling(index)
    part.write_text(json.dumps({"sha256": got.sha256, "bytes": got.bytes, "ext": ext}))
    os.replace(part, index)
    log.info("%s: downloaded %d bytes", uri, got.bytes)
    return got
