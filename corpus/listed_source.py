"""The videos of a source whose ``videos`` is a video list (``{list: labels.json, format: lemon, where: {...}}``).

The list is parsed by ``corpus.video_lists.read_video_list`` (CSV, JSONL, JSON list; LEMON's ``labels.json``,
SurgAtlas' JSON object, OphNet's id-only CSV); this module checks the declared ``format`` against the file and the
file against its pinned ``sha256`` (a mismatch is an error row; the list is still read), places the videos of an
id-only list under the source root (``uri: "{id}.mp4"``) and applies the ``where`` filter.

>>> spec = VideoListSpec(list="../shared/data/real/visurg-ai__LEMON/labels.json", format="lemon")  # doctest: +SKIP
>>> len(listed_videos(spec).videos)  # doctest: +SKIP
4194
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path
from typing import Any

from corpus.errors import AnnotationError, ErrorRow
from corpus.manifest import VideoListSpec
from corpus.video_lists import STAGE, ListedVideo, VideoList, read_video_list

SUFFIXES = {
    "lemon": ".json",
    "json": ".json",
    "jsonl": ".jsonl",
    "csv": ".csv",
    "surgatlas": ".json",
    "ophnet": ".csv",
}
_ATTRS = {f.name for f in fields(ListedVideo)}


def _value(video: ListedVideo, key: str) -> Any:
    return getattr(video, key) if key in _ATTRS else video.extra.get(key)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _id_uri(spec: VideoListSpec, root: str) -> str | None:
    if spec.uri is None or "://" in spec.uri or Path(spec.uri).is_absolute():
        return spec.uri
    return str(Path(root) / spec.uri) if "://" not in root else root.rstrip("/") + "/" + spec.uri


def listed_videos(spec: VideoListSpec, root: str = ".") -> VideoList:
    """The videos of ``spec.list`` that pass ``spec.where``; bad rows stay as error rows of the list.

    Raises ``AnnotationError`` when the list is missing, unreadable, or not in the declared format.
    """
    path = Path(spec.list)
    want = SUFFIXES.get(spec.format)
    if want and path.suffix.lower() != want:
        raise AnnotationError(f"{path}: declared format {spec.format!r} expects a {want} file")
    if spec.format == "ophnet" and spec.uri is None:
        raise AnnotationError(f"{path}: an id-only list (format 'ophnet') needs 'uri', e.g. '{{id}}.mp4'")
    vl = read_video_list(path, spec.format, _id_uri(spec, root))
    if spec.sha256 is not None and (digest := _sha256(path)) != spec.sha256:
        vl.errors.append(
            ErrorRow(STAGE, None, str(path), "checksum_mismatch", f"{path}: sha256 {digest} != pinned {spec.sha256}")
        )
    if spec.format == "lemon" and vl.videos and not any(v.youtube_id for v in vl.videos):
        raise AnnotationError(f"{path}: declared format 'lemon' but no row has a youtubeId")
    if spec.where:
        vl = VideoList(
            videos=[v for v in vl.videos if all(_value(v, k) == want for k, want in spec.where.items())],
            errors=vl.errors,
        )
    return vl
