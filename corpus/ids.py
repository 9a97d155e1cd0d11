"""Stable identifiers: ``video_id = "<source>/<native id>"``, ``clip_id = "<video_id>/<start_ms>"``.

A WebDataset key never contains a dot (the loader takes a member name up to its first dot as the key), so keys are
derived from clip ids with dots and slashes replaced.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

VideoId = str
ClipId = str
Seconds = float

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")


def native_id_from_path(relpath: str) -> str:
    """Native id of a video found by a glob: its path relative to the source root, without the extension."""
    p = PurePosixPath(relpath)
    return str(p.with_suffix("")) if p.suffix else str(p)


def video_id(source: str, native_id: str) -> VideoId:
    return f"{source}/{native_id}"


def clip_id(vid: VideoId, start_ms: int) -> ClipId:
    return f"{vid}/{start_ms:09d}"


def sample_key(cid: ClipId) -> str:
    """WebDataset key for a clip: no dots, no slashes, stable."""
    return _UNSAFE.sub("-", cid).replace("/", "__")


def safe_relpath(vid: VideoId) -> str:
    """A filesystem-safe relative folder for a video's outputs."""
    return _UNSAFE.sub("-", vid)
