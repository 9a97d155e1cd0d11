"""OpenSurgery hierarchies (the documented JSON/JSONL ingestion format of ``docs/hierarchy.md``) as pipeline
annotations.

Native files: one JSON object per video (a ``.json`` file with one object or a list, a ``.jsonl`` file, or a folder
of them), read and validated by :mod:`corpus.hierarchy` (``read_records`` + ``validate``), never parsed twice.
Rows of the ``segments`` table, all in seconds (no frame numbers: the format has no frame rate):

- level ``video``: one per video, label = surgery type, text = description (else title), 0 → ``duration_s``;
- level ``operation``: one per valid operation, label and text as written, in time order;
- level ``frame``: one per valid frame, ``start_s == end_s == t_s``, label and ``text`` = the caption.

Frames live in ``segments`` rather than ``frame_labels`` because they carry a caption and a time, not a frame
number. A record, operation or frame that fails validation (end before start, overlap, outside the video...)
becomes an entry of ``errors`` naming the file, line and video; the rest of the file is parsed.
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.errors import ErrorRow
from corpus.hierarchy.importers import read_records
from corpus.hierarchy.validate import Rules, validate

SOURCE = "opensurgery"


def _segment(video_id: str, level: str, label: str | None, label_id: int | None, start_s, end_s, text) -> dict:
    return {
        "video_id": video_id,
        "level": level,
        "label": label,
        "label_id": label_id,
        "start_frame": None,
        "end_frame": None,
        "start_s": start_s,
        "end_s": end_s,
        "text": text,
    }


def parse(root: Path, rules: Rules = Rules()) -> ParsedAnnotations:
    """Parse a hierarchy file or folder; raises ``AnnotationError`` when it is missing or not JSON at all."""
    h = validate(read_records(root), rules)
    out = ParsedAnnotations(SOURCE)
    for v in h.videos:
        vid = v["video_id"]
        native = vid.split("/", 1)[1] if "/" in vid else vid
        where = v.get("_where") or str(root)
        out.videos.append(
            {
                "video_id": vid,
                "native_id": native,
                "fps": None,
                "n_frames": None,
                "annotation_file": where.rsplit(":", 1)[0].rsplit("#", 1)[0],
            }
        )
        out.segments.append(
            _segment(
                vid,
                "video",
                v.get("surgery_type"),
                None,
                0.0,
                v.get("duration_s"),
                v.get("description") or v.get("title"),
            )
        )
    for o in h.operations:
        out.segments.append(
            _segment(o["video_id"], "operation", o.get("label"), None, o["start_s"], o["end_s"], o.get("text"))
        )
    columns = (h.frames.column(c).to_pylist() for c in ("video_id", "label", "t_s", "caption"))
    for vid, label, t_s, caption in zip(*columns, strict=True):  # frame captions are segments: few, not per frame
        out.segments.append(_segment(vid, "frame", label, None, t_s, t_s, caption))
    level_order = {"video": 0, "operation": 1, "frame": 2}
    out.segments.sort(key=lambda s: (s["video_id"], level_order[s["level"]], s["start_s"]))
    out.errors = [
        ErrorRow("annotate", e["video_id"], e["uri"], e["kind"], e["message"], detail=e.get("detail") or "")
        for e in h.errors
    ]
    return out
