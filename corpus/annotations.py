"""Native annotations in one shape: a ``segments`` table and a ``frame_labels`` table.

Every source adapter (``corpus/sources/<source>.py``) turns its dataset's own files into these rows, so clip
planning, audits and the catalog never read a native format. Frames are native video frames; ``end_frame`` is
exclusive (the first frame after the segment); seconds are frames divided by the annotation's frame rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from corpus.schemas import to_table, write_table

SEGMENTS = pa.schema(
    [
        ("video_id", pa.string()),
        ("level", pa.string()),  # phase, step, gesture, action, clip, skill...
        ("label", pa.string()),  # the dataset's own label name
        ("label_id", pa.int32()),  # the dataset's own label id (null when it has none)
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),  # exclusive; null for whole-file clip labels
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("text", pa.string()),
    ]
)

FRAME_LABELS = pa.schema(
    [
        ("video_id", pa.string()),
        ("level", pa.string()),
        ("frame", pa.int64()),
        ("time_s", pa.float64()),
        ("label", pa.string()),
        ("label_id", pa.int32()),
    ]
)

ANNOTATED_VIDEOS = pa.schema(
    [
        ("video_id", pa.string()),
        ("native_id", pa.string()),
        ("fps", pa.float64()),
        ("n_frames", pa.int64()),
        ("annotation_file", pa.string()),
    ]
)


@dataclass
class ParsedAnnotations:
    """What an adapter's ``parse(root)`` returns: rows of the three tables, plus the files it read."""

    source: str
    segments: list[dict] = field(default_factory=list)
    frame_labels: list[dict] = field(default_factory=list)
    videos: list[dict] = field(default_factory=list)
    errors: list = field(default_factory=list)  # ErrorRow: items an adapter skipped while parsing the rest

    def video_ids(self) -> list[str]:
        return sorted({v["video_id"] for v in self.videos} | {s["video_id"] for s in self.segments})

    def segments_of(self, level: str | None = None) -> list[dict]:
        return [s for s in self.segments if level is None or s["level"] == level]

    def tables(self) -> dict[str, pa.Table]:
        key = ("video_id", "level")
        return {
            "segments": to_table(self.segments, SEGMENTS, (*key, "start_frame")),
            "frame_labels": to_table(self.frame_labels, FRAME_LABELS, (*key, "frame")),
            "annotated_videos": to_table(self.videos, ANNOTATED_VIDEOS, ("video_id",)),
        }

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``segments.parquet``, ``frame_labels.parquet`` and ``annotated_videos.parquet`` atomically."""
        return [write_table(t, Path(out_dir) / f"{name}.parquet") for name, t in self.tables().items()]


def segment(
    video_id: str,
    level: str,
    label: str,
    label_id: int | None,
    start_frame: int | None,
    end_frame: int | None,
    fps: float | None,
    text: str | None = None,
) -> dict:
    """One ``segments`` row; seconds derive from frames and ``fps`` (null without either)."""

    def sec(f: int | None) -> float | None:
        return None if f is None or not fps else f / fps

    return {
        "video_id": video_id,
        "level": level,
        "label": label,
        "label_id": label_id,
        "start_frame": start_frame,
        "end_frame": end_frame,
        "start_s": sec(start_frame),
        "end_s": sec(end_frame),
        "text": text,
    }


def frame_label(video_id: str, level: str, frame: int, fps: float | None, label: str, label_id: int | None) -> dict:
    return {
        "video_id": video_id,
        "level": level,
        "frame": frame,
        "time_s": frame / fps if fps else None,
        "label": label,
        "label_id": label_id,
    }


def runs(
    video_id: str,
    level: str,
    frames: Sequence[int],
    labels: Sequence[tuple[str, int | None]],
    fps: float | None,
    end_frame: int | None = None,
) -> list[dict]:
    """Contiguous runs of equal labels over sampled frames, as segments.

    A run ends where the next begins; the last ends at ``end_frame`` (when after the last sample) or one sampling
    step after its last frame.
    """
    if not frames:
        return []
    step = min((b - a for a, b in zip(frames, frames[1:], strict=False) if b > a), default=1)
    out: list[dict] = []
    start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or labels[i] != labels[start]:
            last = end_frame if end_frame is not None and end_frame > frames[-1] else frames[-1] + step
            stop = frames[i] if i < len(frames) else last
            name, lid = labels[start]
            out.append(segment(video_id, level, name, lid, frames[start], stop, fps))
            start = i
    return out


def concat(parts: Iterable[ParsedAnnotations], source: str) -> ParsedAnnotations:
    out = ParsedAnnotations(source)
    for p in parts:
        out.segments += p.segments
        out.frame_labels += p.frame_labels
        out.videos += p.videos
    return out
