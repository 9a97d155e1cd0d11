"""Kvasir-Capsule (Simula): capsule-endoscopy videos with labelled findings on frames.

Native file: ``metadata.csv`` (``;``-separated, header ``filename;video_id;frame_number;finding_category;
finding_class;x1;y1;...``), one row per labelled frame. Consecutive frames of one finding form a segment.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.annotations import ParsedAnnotations, frame_table, segment
from corpus.ids import video_id
from corpus.sources._common import bad, find, read_columns

SOURCE = "kvasir-capsule"
FPS = 30.0
REQUIRED = ("video_id", "frame_number", "finding_class")


def parse(root: Path) -> ParsedAnnotations:
    """``metadata.csv`` read whole-column: one frame label per row, runs of consecutive frames as segments."""
    path = find(Path(root), "metadata.csv", "**/metadata.csv")[0]
    with path.open(newline="", encoding="utf-8-sig") as fh:
        head = [c.strip() for c in next(csv.reader(fh, delimiter=";"), [])]
    if not head:
        raise bad(path, 1, "empty file, expected a header line")
    missing = [h for h in REQUIRED if h not in {c.lower() for c in head}]
    if missing:
        raise bad(path, 1, f"header {head} lacks column(s) {missing} (delimiter ';')")
    cols = read_columns(
        path,
        tuple(c.lower() for c in head),
        separators=";",
        collapse=False,
        has_header=lambda first: True,
        malformed="{got} fields, header has {n}",
        ints=("frame_number",),
    )
    frames, frame_bad = cols.ints("frame_number")
    cols.check((frame_bad, cols.not_int("frame_number", "frame_number")))
    native, cls = cols.table.column("video_id"), cols.table.column("finding_class")
    vids = pc.binary_join_element_wise(SOURCE, native, "/")
    out = ParsedAnnotations(SOURCE)
    out.frame_labels = frame_table(vids, "finding", frames, FPS, cls)
    # segments: each (video, class)'s distinct frames, sorted; a gap between frames starts a new segment
    order = pa.table({"v": native, "c": cls, "f": frames}).group_by(["v", "c", "f"]).aggregate([])
    order = order.sort_by([("v", "ascending"), ("c", "ascending"), ("f", "ascending")])
    v, c, f = (order.column(k) for k in ("v", "c", "f"))
    f = f.to_numpy()
    same = pc.and_(pc.equal(v[1:], v[:-1]), pc.equal(c[1:], c[:-1])).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate([[True], ~(same & (f[1:] == f[:-1] + 1))]))
    ends = np.append(starts[1:], len(f)) - 1
    for a, z, name, label in zip(
        starts, ends, v.take(pa.array(starts)).to_pylist(), c.take(pa.array(starts)).to_pylist(), strict=True
    ):
        out.segments.append(segment(video_id(SOURCE, name), "finding", label, None, int(f[a]), int(f[z]) + 1, FPS))
    out.videos = [
        {"video_id": video_id(SOURCE, v), "native_id": v, "fps": FPS, "n_frames": None, "annotation_file": str(path)}
        for v in sorted(pc.unique(native).to_pylist())
    ]
    return out
