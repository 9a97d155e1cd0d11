"""JIGSAWS (JHU-ISI): Suturing, Needle_Passing and Knot_Tying trials, gesture transcriptions at 30 fps.

Native files: ``<Task>/transcriptions/<Task>_<trial>.txt``, one ``start end Gxx`` line per gesture (1-based inclusive
frames, CRLF, trailing space); videos ``<Task>/video/<Task>_<trial>_capture{1,2}.avi`` (left and right endoscope).
``<Task>/meta_file_<Task>.txt``: trial, self-proclaimed skill (N/I/E), GRS and its six sub-scores.
"""

from __future__ import annotations

import re
from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.ids import video_id
from corpus.sources._common import as_int, bad, find, lines

SOURCE = "jigsaws"
FPS = 30.0
_GESTURE = re.compile(r"^G([1-9]|1[0-5])$")


def parse_transcription(path: Path) -> list[dict]:
    vid = video_id(SOURCE, path.stem)
    out: list[dict] = []
    for n, text in lines(path):
        parts = text.split()
        if len(parts) != 3:
            raise bad(path, n, f"expected 'start end Gxx', got {text!r}")
        start, end = as_int(path, n, parts[0], "start frame"), as_int(path, n, parts[1], "end frame")
        if not _GESTURE.match(parts[2]):
            raise bad(path, n, f"gesture must be G1..G15 (got {parts[2]!r})")
        if end < start:
            raise bad(path, n, f"end frame {end} before start frame {start}")
        out.append(segment(vid, "gesture", parts[2], int(parts[2][1:]), start, end + 1, FPS))
    if not out:
        raise bad(path, None, "no gesture lines")
    return out


def parse_meta(path: Path) -> list[dict]:
    """Skill rows: one ``skill`` segment per trial (whole video), label N/I/E, text the GRS score."""
    out = []
    for n, text in lines(path):
        parts = text.split()
        if len(parts) < 3 or parts[1] not in ("N", "I", "E"):
            raise bad(path, n, f"expected 'trial skill(N/I/E) GRS ...', got {text!r}")
        out.append(
            segment(video_id(SOURCE, parts[0]), "skill", parts[1], "NIE".index(parts[1]), None, None, FPS, parts[2])
        )
    return out


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    files = find(root, "transcriptions/*.txt", "*/transcriptions/*.txt", "**/transcriptions/*.txt")
    out = ParsedAnnotations(SOURCE)
    for f in files:
        out.segments += parse_transcription(f)
        task_dir = f.parent.parent
        native = f.stem
        out.videos.append(
            {
                "video_id": video_id(SOURCE, native),
                "native_id": native,
                "fps": FPS,
                "n_frames": None,
                "annotation_file": str(f),
                "task_dir": str(task_dir),
            }
        )
    for meta in sorted(root.glob("**/meta_file_*.txt")) if root.is_dir() else []:
        out.segments += parse_meta(meta)
    return out
