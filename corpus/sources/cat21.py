"""Cataract-21 (ITEC Klagenfurt, Primus et al. 2018): 21 cataract surgeries at 25 fps, a phase label on every frame.

Native files: one ``case_NN.csv`` beside each ``case_NN.mp4``, one ``<frame>,<phase>`` row per frame (frame 0
first; an optional ``Frame,Phase`` header), phase names in German as released: ``not_initialized``, ``Incision``,
``Viscoelasticum``, ``Rhexis``, ``Hydrodissektion``, ``Phako``, ``Irrigation-Aspiration``, ``Kapselpolishing``,
``Linsenimplantation``, ``Visco-Absaugung``, ``Tonisieren``, ``Antibiotikum``. The release's ``training`` (cases
1-17) and ``validation`` (cases 18-21) subsets are the folders the files sit in; flat files get the subset of
their case number.
"""

from __future__ import annotations

import re
from pathlib import Path

from corpus.annotations import ParsedAnnotations, frame_label, runs
from corpus.ids import video_id
from corpus.sources._common import as_int, bad, find, lines

SOURCE = "cat-21"
FPS = 25.0
PHASES = (
    "not_initialized",
    "Incision",
    "Viscoelasticum",
    "Rhexis",
    "Hydrodissektion",
    "Phako",
    "Irrigation-Aspiration",
    "Kapselpolishing",
    "Linsenimplantation",
    "Visco-Absaugung",
    "Tonisieren",
    "Antibiotikum",
)
SUBSETS = ("training", "validation", "test")
_CASE = re.compile(r"^case_(\d+)$")


def subset_of(path: Path) -> str:
    """``training``/``validation`` from the enclosing folder, else from the case number (1-17 training)."""
    for part in reversed(path.parent.parts):
        if part.lower() in SUBSETS:
            return part.lower()
    return "training" if int(_CASE.match(path.stem).group(1)) <= 17 else "validation"


def parse_case(path: Path, root: Path) -> ParsedAnnotations:
    """One ``case_NN.csv``: per-frame labels and their contiguous runs as ``phase`` segments."""
    vid = video_id(SOURCE, path.stem)
    rows = lines(path)
    if rows and not rows[0][1][:1].isdigit():
        rows = rows[1:]  # header
    frames: list[int] = []
    labels: list[tuple[str, int]] = []
    for n, text in rows:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise bad(path, n, f"expected '<frame>,<phase>', got {text!r}")
        frame = as_int(path, n, parts[0], "frame")
        if parts[1] not in PHASES:
            raise bad(path, n, f"unknown phase {parts[1]!r} (expected one of {', '.join(PHASES)})")
        if frames and frame <= frames[-1]:
            raise bad(path, n, f"frame {frame} does not increase (previous {frames[-1]})")
        frames.append(frame)
        labels.append((parts[1], PHASES.index(parts[1])))
    if not frames:
        raise bad(path, None, "no annotation rows")
    out = ParsedAnnotations(SOURCE, segments=runs(vid, "phase", frames, labels, FPS))
    out.frame_labels = [frame_label(vid, "phase", f, FPS, a, b) for f, (a, b) in zip(frames, labels, strict=True)]
    out.videos = [
        {
            "video_id": vid,
            "native_id": path.stem,
            "fps": FPS,
            "n_frames": frames[-1] + 1,
            "annotation_file": str(path),
            "subset": subset_of(path.relative_to(root) if path.is_relative_to(root) else path),
            "video_file": (path.relative_to(root) if path.is_relative_to(root) else Path(path.name))
            .with_suffix(".mp4")
            .as_posix(),
        }
    ]
    return out


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    files = [f for f in find(root, "case_*.csv", "**/case_*.csv") if _CASE.match(f.stem)]
    if not files:
        raise bad(root, None, "no case_NN.csv annotation files")
    out = ParsedAnnotations(SOURCE)
    seen: dict[str, Path] = {}
    base = root if root.is_dir() else root.parent
    for f in files:
        if f.stem in seen:
            raise bad(f, None, f"{f.stem} is annotated twice (also {seen[f.stem]})")
        seen[f.stem] = f
        part = parse_case(f, base)
        out.segments += part.segments
        out.frame_labels += part.frame_labels
        out.videos += part.videos
    return out
