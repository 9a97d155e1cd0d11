"""LDPolypVideo (Ma et al. 2021): colonoscopy, 160 videos with boxes on every frame plus 103 videos labelled whole.

Native files: annotated videos as frame folders, ``<Train|Test>/Annotations/<video>/<frame>.txt`` beside
``.../Images/<video>/<frame>.jpg``; each ``.txt`` holds the number of polyps on its first line and then one
``xmin ymin xmax ymax`` line per polyp (0 polyps: the frame shows none). Unannotated videos are
``<0|1>_<n>.avi`` files: prefix 0 = no polyp in the video, 1 = polyps.

Annotated frames give ``finding`` segments (runs of frames with and without polyps, frames numbered as the
files; no frame rate is given, so seconds are null); the 103 whole videos give one ``video`` segment each.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from corpus.annotations import ParsedAnnotations, concat, frame_table, runs, segment
from corpus.errors import MissingInput
from corpus.ids import video_id
from corpus.sources._common import as_float, as_int, bad, lines

SOURCE = "ldpolypvideo"
LABELS = ("no_polyps", "polyps")
_WHOLE = re.compile(r"^([01])_(\d+)$")


def parse_frame(path: Path) -> int:
    """Number of polyps in one frame's ``.txt`` (checked against its box lines)."""
    rows = lines(path)
    if not rows:
        raise bad(path, 1, "empty file, expected the number of polyps")
    n, first = rows[0]
    k = as_int(path, n, first, "number of polyps")
    if k < 0:
        raise bad(path, n, f"number of polyps must be >= 0 (got {k})")
    boxes = rows[1:]
    if len(boxes) != k:
        raise bad(path, n, f"declares {k} polyp(s) but {len(boxes)} box line(s) follow")
    for m, text in boxes:
        parts = text.split()
        if len(parts) != 4:
            raise bad(path, m, f"expected 'xmin ymin xmax ymax', got {text!r}")
        x0, y0, x1, y1 = (as_float(path, m, p, "box coordinate") for p in parts)
        if x1 < x0 or y1 < y0:
            raise bad(path, m, f"box {text!r} has max before min")
    return k


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """One piece per annotated video (its frame files' polyp counts as columns), then one for the whole videos."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInput(f"{root}: LDPolypVideo folder not found")
    frames: dict[str, dict[int, Path]] = defaultdict(dict)
    folder_of: dict[str, Path] = {}
    for f in sorted(root.glob("**/Annotations/*/*.txt")):
        native = f.parent.name
        if native in folder_of and folder_of[native] != f.parent:
            raise bad(f, None, f"video {native} is annotated in two folders ({folder_of[native]} and {f.parent})")
        folder_of[native] = f.parent
        if not f.stem.isdigit():
            raise bad(f, None, "annotation file name must be the frame number (<frame>.txt)")
        frames[native][int(f.stem)] = f
    whole = [
        (f, m)
        for f in sorted(p for ext in ("avi", "mp4") for p in root.glob(f"**/*.{ext}"))
        if (m := _WHOLE.match(f.stem))
    ]
    if not frames and not whole:
        raise MissingInput(f"{root}: no Annotations/<video>/<frame>.txt files and no <0|1>_<n>.avi videos")
    names = pa.array(LABELS)
    for native in sorted(frames, key=lambda s: (len(s), s)):
        vid = video_id(SOURCE, native)
        order = np.array(sorted(frames[native]), dtype=np.int64)
        ids = pa.array(np.array([parse_frame(frames[native][int(i)]) for i in order]) > 0).cast(pa.int32())
        labels = names.take(ids)
        out = ParsedAnnotations(SOURCE, segments=runs(vid, "finding", order, labels, ids, None))
        out.frame_labels = frame_table(vid, "finding", order, None, labels, ids)
        out.videos.append(
            {
                "video_id": vid,
                "native_id": native,
                "fps": None,
                "n_frames": len(order),
                "annotation_file": str(folder_of[native]),
            }
        )
        yield out
    out = ParsedAnnotations(SOURCE)
    for f, m in whole:
        rel = f.relative_to(root).as_posix()
        k = int(m.group(1))
        vid = video_id(SOURCE, f.stem)
        out.segments.append(segment(vid, "video", LABELS[k], k, None, None, None, rel))
        out.videos.append(
            {
                "video_id": vid,
                "native_id": f.stem,
                "fps": None,
                "n_frames": None,
                "annotation_file": rel,
                "video_file": rel,
            }
        )
    yield out


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
