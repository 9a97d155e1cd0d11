"""MultiBypass140 (CAMMA): 140 laparoscopic gastric bypasses from Bern and Strasbourg, phases and steps.

Native files: ``labels/<centre>/labels_by70/<VID>.mp4.json`` = ``{"phases": [...], "steps": [...]}``, each item
``{"start", "end", "label_name", "label_id"}`` in milliseconds. Segments may overlap (``out_of_body`` and adverse
events are annotated over phases). Frames are derived at 25 fps: start rounded down, end rounded up.
"""

from __future__ import annotations

import math
from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.ids import video_id
from corpus.sources._common import bad, find, read_json

SOURCE = "multibypass140"
FPS = 25.0
LEVELS = {"phases": "phase", "steps": "step"}


def parse_file(path: Path, root: Path) -> ParsedAnnotations:
    data = read_json(path)
    if not isinstance(data, dict) or not any(k in data for k in LEVELS):
        raise bad(path, None, "expected a JSON object with 'phases' and/or 'steps' lists")
    vid_name = path.name.removesuffix(".json").removesuffix(".mp4")
    centre = path.parent.parent.name if path.parent.name.startswith("labels_") else path.parent.name
    native = f"{centre}/{vid_name}"
    vid = video_id(SOURCE, native)
    out = ParsedAnnotations(SOURCE)
    for key, level in LEVELS.items():
        items = data.get(key, [])
        if not isinstance(items, list):
            raise bad(path, None, f"'{key}' must be a list")
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict) or not {"start", "end", "label_name", "label_id"} <= item.keys():
                raise bad(path, None, f"{where}: needs start, end, label_name and label_id (got {item!r})")
            start, end = item["start"], item["end"]
            if not isinstance(start, int | float) or not isinstance(end, int | float) or end < start:
                raise bad(
                    path, None, f"{where}: start/end must be milliseconds with start <= end (got {start}, {end})"
                )
            s = segment(vid, level, item["label_name"], int(item["label_id"]), None, None, FPS)
            s.update(
                start_frame=math.floor(start * FPS / 1000),
                end_frame=math.ceil(end * FPS / 1000),
                start_s=start / 1000,
                end_s=end / 1000,
            )
            out.segments.append(s)
    out.videos.append(
        {"video_id": vid, "native_id": native, "fps": FPS, "n_frames": None, "annotation_file": str(path)}
    )
    return out


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    out = ParsedAnnotations(SOURCE)
    for f in find(root, "**/*.mp4.json", "**/BBP*.json", "**/SRV*.json"):
        p = parse_file(f, root)
        out.segments += p.segments
        out.videos += p.videos
    return out
