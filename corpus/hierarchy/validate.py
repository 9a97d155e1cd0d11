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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.hierarchy.models import Hierarchy
from corpus.hierarchy.schemas import operation_key, video_key


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

    out.frames = _valid_frames(h.frames, videos, out.operations, rules, bad)
    return out


def _valid_frames(frames: pa.Table, videos: dict[str, dict], operations: list[dict], rules: Rules, bad) -> pa.Table:
    """The frames that pass, with ``op_index`` and ``key`` (``FRAMES`` columns but ``split``), checked column-wise.

    A frame fails at its first failed check, in this order: unknown video, outside the video, label outside the
    vocabulary, same key as an earlier frame (the earlier one stays). Error rows follow the frames' order.
    """
    n = frames.num_rows
    known = pa.array(list(videos), pa.string())
    vidx = pc.index_in(frames.column("video_id"), value_set=known)
    unknown = vidx.is_null().to_numpy(zero_copy_only=False)
    vi = vidx.fill_null(len(videos)).to_numpy()  # unknown videos point past the end, at a placeholder
    durations = np.array([np.nan if v.get("duration_s") is None else v["duration_s"] for v in videos.values()] + [0])
    duration = durations[vi]
    t = frames.column("t_s").to_numpy()
    outside = ~unknown & ((t < 0) | (~np.isnan(duration) & (t > duration + rules.tolerance_s)))
    label = frames.column("label")
    off_vocab = np.zeros(n, bool)
    if rules.frame_labels is not None:
        listed = pc.is_in(label, value_set=pa.array(list(rules.frame_labels), pa.string()))
        off_vocab = label.is_valid().to_numpy(zero_copy_only=False) & ~listed.to_numpy(zero_copy_only=False)
    off_vocab &= ~unknown & ~outside
    candidate = ~(unknown | outside | off_vocab)
    video_keys = pa.array([v["key"] for v in videos.values()] + [""], pa.string())
    ms = pa.array(np.round(np.where(candidate, t, 0) * 1000).astype(np.int64)).cast(pa.string())
    keys = pc.binary_join_element_wise(video_keys.take(pa.array(vi)), pc.utf8_lpad(ms, 9, "0"), "__t-")
    maybe = pc.if_else(pa.array(candidate), keys, pa.scalar(None, pa.string()))
    codes = pc.dictionary_encode(maybe).indices.fill_null(-1).to_numpy()
    first_of = np.full(codes.max(initial=-1) + 1, -1)
    rows = np.flatnonzero(candidate)
    first_of[codes[rows][::-1]] = rows[::-1]  # the earliest frame of each key
    duplicate = candidate & (first_of[codes] != np.arange(n))
    where = frames.column("_where")
    for i in np.flatnonzero(unknown | outside | off_vocab | duplicate):
        row = {"video_id": frames.column("video_id")[i].as_py(), "_where": where[i].as_py()}
        if unknown[i]:
            bad("unknown_video", row, f"frame of unknown video {row['video_id']!r}")
        elif outside[i]:
            shown = "unknown" if np.isnan(duration[i]) else f"{duration[i]:g} s"
            bad("outside_video", row, f"frame at {t[i]:g} s outside the video (duration {shown})")
        elif off_vocab[i]:
            bad("unknown_label", row, f"frame label {label[i].as_py()!r} is not in the frame label vocabulary")
        else:
            earlier = where[int(first_of[codes[i]])].as_py()
            bad("duplicate_frame", row, f"a frame at {t[i]:g} s is already defined at {earlier}")
    kept = candidate & ~duplicate
    op_index = np.full(n, -1)
    starts: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for op in operations:  # in index order within each video
        starts[op["video_id"]].append((op["start_s"], op["end_s"], op["index"]))
    for v, vid in enumerate(videos):
        mine = np.flatnonzero(kept & (vi == v))
        if not len(mine) or not starts[vid]:
            continue
        lo, hi, idx = (np.array(c) for c in zip(*starts[vid], strict=True))
        inside = (lo[None, :] <= t[mine, None]) & (t[mine, None] < hi[None, :])
        op_index[mine] = np.where(inside.any(axis=1), idx[inside.argmax(axis=1)], -1)
    take = pa.array(np.flatnonzero(kept))
    out = frames.drop_columns(["_where"]).take(take)
    ops = pa.array(op_index, pa.int32()).take(take)
    out = out.append_column("op_index", pc.if_else(pc.equal(ops, -1), pa.scalar(None, pa.int32()), ops))
    return out.append_column("key", keys.take(take))
