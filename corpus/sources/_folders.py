"""Clip-level datasets whose class is the folder a video file sits in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.ids import native_id_from_path, video_id
from corpus.sources._common import bad, find

VIDEO_EXT = ("mp4", "avi", "mkv", "mov", "webm")


def parse_folders(
    root: Path, source: str, label_of: Callable[[Path], str | None], depth: int = 1
) -> ParsedAnnotations:
    """One ``clip`` segment per video file; ``label_of(relative path)`` names its class (None: not a clip)."""
    root = Path(root)
    out = ParsedAnnotations(source)
    for f in find(root, *(f"**/*.{e}" for e in VIDEO_EXT)):
        rel = f.relative_to(root)
        if len(rel.parts) <= depth:
            raise bad(f, None, f"video is not inside a class folder ({depth} level(s) under {root})")
        label = label_of(rel)
        if label is None:
            continue
        native = native_id_from_path(rel.as_posix())
        out.segments.append(segment(video_id(source, native), "clip", label, None, None, None, None, rel.as_posix()))
        out.videos.append(
            {
                "video_id": video_id(source, native),
                "native_id": native,
                "fps": None,
                "n_frames": None,
                "annotation_file": None,
            }
        )
    return out
