"""Shared parser for 'frame, label id' files (one row per sampled frame, optional header), read whole-column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from corpus.annotations import ParsedAnnotations, frame_table, runs
from corpus.sources._common import bad, not_increasing, read_columns


def parse_numeric(
    path: Path, vid: str, level: str, names: dict[int, str], fps: float, source: str
) -> ParsedAnnotations:
    cols = read_columns(
        path,
        ("frame", "label_id"),
        separators=",;",
        has_header=lambda first: not first[:1].isdigit(),
        malformed="expected 'frame, label id', got {text!r}",
        ints=("frame", "label_id"),
    )
    frames, frame_bad = cols.ints("frame")
    lids, lid_bad = cols.ints("label_id")
    known = np.array(sorted(names))
    cols.check(
        (frame_bad, cols.not_int("frame", "frame")),
        (lid_bad, cols.not_int("label_id", "label id")),
        (~lid_bad & ~np.isin(lids, known), lambda k: f"label id {lids[k]} not one of {sorted(names)}"),
        not_increasing(frames),
    )
    if not len(frames):
        raise bad(path, None, "no annotation rows")
    ids = pa.array(lids, pa.int32())
    labels = pa.array([names[int(i)] for i in known]).take(pa.array(np.searchsorted(known, lids)))
    out = ParsedAnnotations(source, segments=runs(vid, level, frames, labels, ids, fps))
    out.frame_labels = frame_table(vid, level, frames, fps, labels, ids)
    out.videos = [
        {
            "video_id": vid,
            "native_id": vid.split("/", 1)[1],
            "fps": fps,
            "n_frames": None,
            "annotation_file": str(path),
        }
    ]
    return out
