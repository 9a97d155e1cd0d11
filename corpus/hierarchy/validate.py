"""Validation of an imported hierarchy: bad rows become error rows naming the video and row; the rest imports.

Checks: duplicate or unusable video ids; operations and frames of unknown videos; segments with ``end <= start``;
segments or frames outside ``[0, duration]`` (when the duration is known); overlapping operations (unless allowed);
labels outside a given vocabulary. Surviving operations get ``index`` (0-based, by start time), frames the
``op_index`` of the operation that contains them, and every row its WebDataset ``key``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from corpus.hierarchy.models import Hierarchy
from corpus.hierarchy.schemas import frame_key, operation_key, video_key


@dataclass(frozen=True)
class Rules:
    """What validation enforces."""

    labels: Collection[str] | None = None  # operation label vocabulary (None: any label)
    frame_labels: Collection[str] | None = None  # frame label vocabulary (None: any label)
    allow_overlap: bool = False  # operations may overlap (e.g. ActivityNet Captions)
    tolerance_s: float = 0.5  # how far past the video's end a segment may reach


def _uri(where: str) -> str:
    return where.split(": ", 1)[0].rsplit(":", 1)[0].rsplit("#", 1)[0]


def validate(h: Hierarchy, rules: Rules = Rules()) -> Hierarchy:
    """Return the valid rows of ``h`` (with ``index``, ``op_index`` and ``key`` filled) and all errors."""
    out = Hierarchy(errors=list(h.errors))

    def bad(kind: str, row: dict, problem: str) -> None:
        where = row.get("_where", "?")
        out.error(kind, f"{where}: {problem}", video_id=row.get("video_id"), uri=_uri(where))

    videos: dict[str, dict] = {}
    for v in h.videos:
        vid = v["video_id"]
        if vid in videos:
            bad("duplicate_video", v, f"video {vid} already defined at {videos[vid].get('_where')}")
            continue
        try:
            key = video_key(vid)
        except ValueError as exc:
            bad("bad_video_id", v, str(exc))
            continue
        videos[vid] = {**v, "key": key}
    out.videos = list(videos.values())

    def in_video(row: dict, start: float, end: float, what: str) -> bool:
        duration = videos[row["video_id"]].get("duration_s")
        if start < 0 or (duration is not None and end > duration + rules.tolerance_s):
            shown = f"{duration:g} s" if duration is not None else "unknown"
            bad("outside_video", row, f"{what} outside the video (duration {shown})")
            return False
        return True

    by_video: dict[str, list[dict]] = defaultdict(list)
    for op in h.operations:
        start, end = op["start_s"], op["end_s"]
        if op["video_id"] not in videos:
            bad("unknown_video", op, f"operation of unknown video {op['video_id']!r}")
        elif end <= start:
            bad("end_before_start", op, f"end_s {end:g} <= start_s {start:g}")
        elif not in_video(op, start, end, f"operation {start:g}-{end:g} s"):
            pass
        elif rules.labels is not None and op.get("label") not in rules.labels:
            bad("unknown_label", op, f"label {op.get('label')!r} is not in the label vocabulary")
        else:
            by_video[op["video_id"]].append(op)
    for vid, ops in by_video.items():
        ops.sort(key=lambda o: (o["start_s"], o["end_s"]))
        kept: list[dict] = []
        for op in ops:
            if kept and not rules.allow_overlap and op["start_s"] < kept[-1]["end_s"] - 1e-6:
                prev = kept[-1]
                bad(
                    "overlap",
                    op,
                    f"operation {op['start_s']:g}-{op['end_s']:g} s overlaps "
                    f"{prev['start_s']:g}-{prev['end_s']:g} s ({prev.get('_where')})",
                )
                continue
            kept.append(op)
        for i, op in enumerate(kept):
            out.operations.append({**op, "index": i, "key": operation_key(vid, i)})

    seen: dict[str, dict] = {}
    ops_of: dict[str, list[dict]] = defaultdict(list)
    for op in out.operations:
        ops_of[op["video_id"]].append(op)
    for fr in h.frames:
        if fr["video_id"] not in videos:
            bad("unknown_video", fr, f"frame of unknown video {fr['video_id']!r}")
            continue
        if not in_video(fr, fr["t_s"], fr["t_s"], f"frame at {fr['t_s']:g} s"):
            continue
        if rules.frame_labels is not None and fr.get("label") is not None and fr["label"] not in rules.frame_labels:
            bad("unknown_label", fr, f"frame label {fr['label']!r} is not in the frame label vocabulary")
            continue
        key = frame_key(fr["video_id"], fr["t_s"])
        if key in seen:
            bad("duplicate_frame", fr, f"a frame at {fr['t_s']:g} s is already defined at {seen[key].get('_where')}")
            continue
        op_index = next((o["index"] for o in ops_of[fr["video_id"]] if o["start_s"] <= fr["t_s"] < o["end_s"]), None)
        seen[key] = row = {**fr, "op_index": op_index, "key": key}
        out.frames.append(row)
    return out
