"""Cholec80 (CAMMA): 80 cholecystectomies at 25 fps, phase and tool presence annotations.

Native files (``phase_annotations/videoNN-phase.txt``): header ``Frame<TAB>Phase``, one row per frame, phase names
(``Preparation``, ``CalotTriangleDissection``...). The common derived form (e.g. TMRNet's ``gt-phase``) has no header,
numeric ids 0-6 and one row per second (every 25th frame). ``tool_annotations/videoNN-tool.txt``: header
``Frame Grasper Bipolar Hook Scissors Clipper Irrigator SpecimenBag``, 0/1 per tool, one row per second.
"""

from __future__ import annotations

import re
from pathlib import Path

from corpus.annotations import ParsedAnnotations, concat, frame_label, runs
from corpus.ids import video_id
from corpus.sources._common import as_int, bad, find, lines

SOURCE = "cholec80"
FPS = 25.0
PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
_NAME = re.compile(r"^(video\d+)-(phase|tool)\.txt$")


def parse_phase_file(path: Path, source: str = SOURCE, phases: tuple[str, ...] = PHASES) -> ParsedAnnotations:
    """One phase file (named or numeric labels, with or without header)."""
    native = _NAME.match(path.name)
    vid = video_id(source, native.group(1) if native else path.stem)
    rows = lines(path)
    if rows and rows[0][1].split()[0].lower() == "frame":
        rows = rows[1:]
    frames: list[int] = []
    labels: list[tuple[str, int]] = []
    for n, text in rows:
        parts = text.split()
        if len(parts) != 2:
            raise bad(path, n, f"expected 'frame<TAB>phase', got {text!r}")
        frame = as_int(path, n, parts[0], "frame")
        if frames and frame <= frames[-1]:
            raise bad(path, n, f"frame {frame} does not increase (previous {frames[-1]})")
        label = parts[1]
        if label.isdigit():
            lid = int(label)
            if lid >= len(phases):
                raise bad(path, n, f"phase id {lid} out of range 0-{len(phases) - 1}")
            label = phases[lid]
        elif label in phases:
            lid = phases.index(label)
        else:
            raise bad(path, n, f"unknown phase {label!r} (expected one of {', '.join(phases)})")
        frames.append(frame)
        labels.append((label, lid))
    if not frames:
        raise bad(path, None, "no annotation rows")
    out = ParsedAnnotations(source, segments=runs(vid, "phase", frames, labels, FPS))
    out.frame_labels = [
        frame_label(vid, "phase", f, FPS, lab, lid) for f, (lab, lid) in zip(frames, labels, strict=True)
    ]
    out.videos = [
        {
            "video_id": vid,
            "native_id": vid.split("/", 1)[1],
            "fps": FPS,
            "n_frames": None,
            "annotation_file": str(path),
        }
    ]
    return out


def parse_tool_file(path: Path, source: str = SOURCE) -> ParsedAnnotations:
    """One tool-presence file: a ``tool`` frame label per present tool."""
    native = _NAME.match(path.name)
    vid = video_id(source, native.group(1) if native else path.stem)
    rows = lines(path)
    if not rows or rows[0][1].split()[0].lower() != "frame":
        raise bad(path, 1, f"expected header 'Frame {' '.join(TOOLS)}'")
    names = rows[0][1].split()[1:]
    out = ParsedAnnotations(source)
    for n, text in rows[1:]:
        parts = text.split()
        if len(parts) != len(names) + 1 or any(p not in ("0", "1") for p in parts[1:]):
            raise bad(path, n, f"expected a frame and {len(names)} 0/1 flags, got {text!r}")
        frame = as_int(path, n, parts[0], "frame")
        out.frame_labels += [
            frame_label(vid, "tool", frame, FPS, name, i)
            for i, (name, flag) in enumerate(zip(names, parts[1:], strict=True))
            if flag == "1"
        ]
    return out


def parse(root: Path) -> ParsedAnnotations:
    """All ``videoNN-phase.txt`` (and ``videoNN-tool.txt``) files under ``root``."""
    root = Path(root)
    files = find(root, "video*-phase.txt", "*/video*-phase.txt", "**/phase_annotations/video*-phase.txt")
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise bad(f, None, f"same video annotated twice (also {seen[f.name]}); point the root at one folder")
        seen[f.name] = f
    parts = [parse_phase_file(f) for f in files]
    tools = sorted(root.glob("**/video*-tool.txt")) if root.is_dir() else []
    parts += [parse_tool_file(f) for f in tools]
    return concat(parts, SOURCE)
