"""Cataract-1K phase subset (Ghamsarian et al.): 56 cataract surgeries with phase intervals.

Native files: ``case_NNNN/case_NNNN_annotations_phases.csv`` with header ``caseId,comment,frame,endFrame,sec,endSec``
(one row per phase interval; ``comment`` is the phase name, e.g. ``Incision``, ``Viscoelastic``).
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.ids import video_id
from corpus.sources._common import as_float, as_int, bad, find, read_csv

SOURCE = "cataract-1k"


def _name(comment: str) -> str:
    return comment.strip().lower().replace(" ", "_")


def parse(root: Path) -> ParsedAnnotations:
    out = ParsedAnnotations(SOURCE)
    for f in find(Path(root), "**/*_annotations_phases.csv"):
        native = f.name.removesuffix("_annotations_phases.csv")
        vid = video_id(SOURCE, native)
        fps = None
        for n, r in read_csv(f, ",", ("comment", "frame", "endFrame", "sec", "endSec")):
            start, end = as_int(f, n, r["frame"], "frame"), as_int(f, n, r["endframe"], "endFrame")
            s0, s1 = as_float(f, n, r["sec"], "sec"), as_float(f, n, r["endsec"], "endSec")
            if end < start or s1 < s0:
                raise bad(f, n, f"interval ends before it starts ({start}-{end}, {s0}-{s1} s)")
            seg = segment(vid, "phase", _name(r["comment"]), None, start, end, None)
            seg.update(start_s=s0, end_s=s1)
            out.segments.append(seg)
            fps = (end - start) / (s1 - s0) if s1 > s0 else fps
        out.videos.append(
            {"video_id": vid, "native_id": native, "fps": fps, "n_frames": None, "annotation_file": str(f)}
        )
    return out
