"""Shared parser for 'frame, label id' files (one row per sampled frame, optional header)."""

from __future__ import annotations

import re
from pathlib import Path

from corpus.annotations import ParsedAnnotations, frame_label, runs
from corpus.sources._common import as_int, bad, lines


def parse_numeric(
    path: Path, vid: str, level: str, names: dict[int, str], fps: float, source: str
) -> ParsedAnnotations:
    rows = lines(path)
    if rows and not rows[0][1][:1].isdigit():
        rows = rows[1:]
    frames: list[int] = []
    labels: list[tuple[str, int]] = []
    for n, text in rows:
        parts = [p for p in re.split(r"[\s,;]+", text) if p]
        if len(parts) != 2:
            raise bad(path, n, f"expected 'frame, label id', got {text!r}")
        frame, lid = as_int(path, n, parts[0], "frame"), as_int(path, n, parts[1], "label id")
        if lid not in names:
            raise bad(path, n, f"label id {lid} not one of {sorted(names)}")
        if frames and frame <= frames[-1]:
            raise bad(path, n, f"frame {frame} does not increase (previous {frames[-1]})")
        frames.append(frame)
        labels.append((names[lid], lid))
    if not frames:
        raise bad(path, None, "no annotation rows")
    out = ParsedAnnotations(source, segments=runs(vid, level, frames, labels, fps))
    out.frame_labels = [frame_label(vid, level, f, fps, a, b) for f, (a, b) in zip(frames, labels, strict=True)]
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
