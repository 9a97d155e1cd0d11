"""Native annotations in one shape: a ``segments`` table and a ``frame_labels`` table.

Every source adapter (``corpus/sources/<source>.py``) turns its dataset's own files into these rows, so clip
planning, audits and the catalog never read a native format. Frames are native video frames; ``end_frame`` is
exclusive (the first frame after the segment); seconds are frames divided by the annotation's frame rate.

Per-frame rows are Arrow columns (:func:`frame_table`), never a Python object per frame: a corpus holds hundreds of
millions of them. Segments are runs of equal labels (:func:`runs`, found on whole columns), so they stay few and
remain dicts. An adapter hands its output over piece by piece (``parse_stream``, one annotation file at a time),
so a source of any size is parsed in bounded memory; ``parse`` gathers the pieces for small uses (audits, clip
planning, tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    frame_labels: pa.Table = field(default_factory=FRAME_LABELS.empty_table)  # FRAME_LABELS columns
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
            "frame_labels": sort_frame_labels(self.frame_labels),
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


def sort_frame_labels(table: pa.Table) -> pa.Table:
    """``table`` in ``FRAME_LABELS`` schema, sorted by (video_id, level, frame); ties keep their order."""
    keys = [("video_id", "ascending"), ("level", "ascending"), ("frame", "ascending")]
    return table.select(FRAME_LABELS.names).cast(FRAME_LABELS).sort_by(keys)


def frame_table(
    video_id: str | pa.Array,
    level: str,
    frames: np.ndarray | pa.Array,
    fps: float | None,
    labels: pa.Array,
    label_ids: np.ndarray | pa.Array | None = None,
) -> pa.Table:
    """``frame_labels`` rows from whole columns: one row per entry of ``frames`` (``video_id``: one id for all rows,
    or a column); ``time_s = frame / fps`` (null without ``fps``); ``label_ids`` None gives nulls."""
    frames = _array(frames).cast(pa.int64())
    n = len(frames)
    video_id = _array(video_id) if not isinstance(video_id, str) else pa.repeat(pa.scalar(video_id, pa.string()), n)
    time_s = pc.divide(frames.cast(pa.float64()), float(fps)) if fps else pa.nulls(n, pa.float64())
    if label_ids is None:
        ids = pa.nulls(n, pa.int32())
    else:
        ids = _array(label_ids).cast(pa.int32())
    level_col = pa.repeat(pa.scalar(level, pa.string()), n)
    columns = [video_id, level_col, frames, time_s, _array(labels).cast(pa.string()), ids]
    return pa.Table.from_arrays(columns, schema=FRAME_LABELS)


def _array(values: np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(values)


def _changes(values: pa.Array) -> np.ndarray:
    """``out[i]``: ``values[i + 1]`` differs from ``values[i]`` (a null equals only a null)."""
    a, b = values[1:], values[:-1]
    differ = pc.not_equal(a, b)
    if values.null_count:
        differ = pc.if_else(pc.is_null(differ), pc.not_equal(pc.is_null(a), pc.is_null(b)), differ)
    return differ.to_numpy(zero_copy_only=False)


def runs(
    video_id: str,
    level: str,
    frames: np.ndarray | pa.Array,
    labels: pa.Array,
    label_ids: pa.Array | None,
    fps: float | None,
    end_frame: int | None = None,
) -> list[dict]:
    """Contiguous runs of equal (label, label id) over sampled frames (whole columns), as segments.

    A run ends where the next begins; the last ends at ``end_frame`` (when after the last sample) or one sampling
    step after its last frame (the smallest positive step between samples; 1 for a single sample).
    """
    frames = np.asarray(frames, dtype=np.int64)
    if not len(frames):
        return []
    labels = _array(labels)
    ids = pa.nulls(len(frames), pa.int32()) if label_ids is None else _array(label_ids)
    steps = np.diff(frames)
    steps = steps[steps > 0]
    step = int(steps.min()) if steps.size else 1
    change = np.flatnonzero(_changes(labels) | _changes(ids)) + 1
    starts = np.concatenate([[0], change])
    last = end_frame if end_frame is not None and end_frame > frames[-1] else int(frames[-1]) + step
    stops = [*(int(f) for f in frames[change]), last]
    names = labels.take(pa.array(starts)).to_pylist()
    lids = ids.take(pa.array(starts)).to_pylist()
    return [
        segment(video_id, level, name, lid, int(frames[a]), stop, fps)
        for a, stop, name, lid in zip(starts, stops, names, lids, strict=True)
    ]


def concat(parts: Iterable[ParsedAnnotations], source: str) -> ParsedAnnotations:
    """One ``ParsedAnnotations`` from pieces (frame labels as one Arrow table, its chunks not copied)."""
    out = ParsedAnnotations(source)
    tables = [out.frame_labels]
    for p in parts:
        out.segments += p.segments
        tables.append(p.frame_labels)
        out.videos += p.videos
        out.errors += p.errors
    out.frame_labels = pa.concat_tables(tables)
    return out
