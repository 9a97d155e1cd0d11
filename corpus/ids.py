"""Stable identifiers: ``video_id = "<source>/<native id>"``, ``clip_id = "<video_id>/<start_ms>"``.

A WebDataset key never contains a dot (the loader takes a member name up to its first dot as the key), so keys are
derived from clip ids with slashes written as ``__`` and other unsafe characters replaced. Both mappings are
injective: an id that the readable form cannot spell back exactly (``a b``, ``a_/b``) gets a short hash of the
whole id appended, so ``a b`` and ``a-b`` never share a key or a folder. :func:`check_unique` turns the remaining
(hash) collisions into a clear error before any work starts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath

from corpus.errors import ManifestError

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


def _tag(text: str) -> str:
    return "-h" + hashlib.sha256(text.encode()).hexdigest()[:10]


def sample_key(cid: ClipId) -> str:
    """WebDataset key for a clip: no dots, no slashes, stable, injective (see the module docstring)."""
    key = _UNSAFE.sub("-", cid).replace("/", "__")
    return key if key.replace("__", "/") == cid else key + _tag(cid)


def safe_relpath(vid: VideoId) -> str:
    """A filesystem-safe relative folder for a video's outputs; distinct ids get distinct folders."""
    rel = _UNSAFE.sub("-", vid)
    if rel == vid and all(part not in ("", "-") for part in vid.split("/")):
        return vid
    return rel.strip("/") + _tag(vid)


def check_unique(ids: Iterable[str], mapping: Callable[[str], str], what: str) -> None:
    """Raise ``ManifestError`` naming the ids when two of them map to the same ``what`` (a key or a folder)."""
    seen: dict[str, str] = {}
    clashes = []
    for i in ids:
        m = mapping(i)
        if m in seen and seen[m] != i:
            clashes.append(f"{seen[m]!r} and {i!r} -> {m!r}")
        seen.setdefault(m, i)
    if clashes:
        raise ManifestError(f"{len(clashes)} id collision(s) in {what}: " + "; ".join(clashes[:5]))
