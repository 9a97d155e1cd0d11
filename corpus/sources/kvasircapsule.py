"""Kvasir-Capsule (Simula): capsule-endoscopy videos with labelled findings on frames.

Native file: ``metadata.csv`` (``;``-separated, header ``filename;video_id;frame_number;finding_category;
finding_class;x1;y1;...``), one row per labelled frame. Consecutive frames of one finding form a segment.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from corpus.annotations import ParsedAnnotations, frame_label, segment
from corpus.ids import video_id
from corpus.sources._common import as_int, find, read_csv

SOURCE = "kvasir-capsule"
FPS = 30.0


def parse(root: Path) -> ParsedAnnotations:
    path = find(Path(root), "metadata.csv", "**/metadata.csv")[0]
    frames: dict[tuple[str, str], list[int]] = defaultdict(list)
    out = ParsedAnnotations(SOURCE)
    for n, r in read_csv(path, ";", ("video_id", "frame_number", "finding_class")):
        f = as_int(path, n, r["frame_number"], "frame_number")
        frames[(r["video_id"], r["finding_class"])].append(f)
        out.frame_labels.append(
            frame_label(video_id(SOURCE, r["video_id"]), "finding", f, FPS, r["finding_class"], None)
        )
    for (vid, cls), fs in sorted(frames.items()):
        fs = sorted(set(fs))
        start = fs[0]
        for a, b in zip(fs, fs[1:] + [None], strict=True):
            if b is None or b != a + 1:
                out.segments.append(segment(video_id(SOURCE, vid), "finding", cls, None, start, a + 1, FPS))
                start = b
    out.videos = [
        {"video_id": video_id(SOURCE, v), "native_id": v, "fps": FPS, "n_frames": None, "annotation_file": str(path)}
        for v in sorted({v for v, _ in frames})
    ]
    return out
