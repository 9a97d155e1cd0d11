"""The videos of a source whose ``videos`` is a video list (``{list: labels.json, format: lemon, where: {...}}``).

The list is parsed by ``corpus.video_lists.read_video_list`` (CSV, JSONL, JSON list; LEMON's ``labels.json``);
this module checks the declared ``format`` against the file and applies the ``where`` filter.

>>> spec = VideoListSpec(list="../shared/data/real/visurg-ai__LEMON/labels.json", format="lemon")  # doctest: +SKIP
>>> len(listed_videos(spec).videos)  # doctest: +SKIP
4194
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from corpus.errors import AnnotationError
from corpus.manifest import VideoListSpec
from corpus.video_lists import ListedVideo, VideoList, read_video_list

SUFFIXES = {"lemon": ".json", "json": ".json", "jsonl": ".jsonl", "csv": ".csv"}
_ATTRS = {f.name for f in fields(ListedVideo)}


def _value(video: ListedVideo, key: str) -> Any:
    return getattr(video, key) if key in _ATTRS else video.extra.get(key)


def listed_videos(spec: VideoListSpec) -> VideoList:
    """The videos of ``spec.list`` that pass ``spec.where``; bad rows stay as error rows of the list.

    Raises ``AnnotationError`` when the list is missing, unreadable, or not in the declared format.
    """
    path = Path(spec.list)
    want = SUFFIXES.get(spec.format)
    if want and path.suffix.lower() != want:
        raise AnnotationError(f"{path}: declared format {spec.format!r} expects a {want} file")
    vl = read_video_list(path)
    if spec.format == "lemon" and vl.videos and not any(v.youtube_id for v in vl.videos):
        raise AnnotationError(f"{path}: declared format 'lemon' but no row has a youtubeId")
    if spec.where:
        vl = VideoList(
            videos=[v for v in vl.videos if all(_value(v, k) == want for k, want in spec.where.items())],
            errors=vl.errors,
        )
    return vl
