"""Cholec80 (CAMMA): 80 cholecystectomies at 25 fps, phase and tool presence annotations.

Native files (``phase_annotations/videoNN-phase.txt``): header ``Frame<TAB>Phase``, one row per frame, phase names
(``Preparation``, ``CalotTriangleDissection``...). The common derived form (e.g. TMRNet's ``gt-phase``) has no header,
numeric ids 0-6 and one row per second (every 25th frame). ``tool_annotations/videoNN-tool.txt``: header
``Frame Grasper Bipolar Hook Scissors Clipper Irrigator SpecimenBag``, 0/1 per tool, one row per second.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.annotations import ParsedAnnotations, concat, frame_table, runs
from corpus.ids import video_id
from corpus.sources._common import bad, find, not_increasing, read_columns

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


def _frame_header(first: str) -> bool:
    return first.split()[0].lower() == "frame"


def _native(path: Path) -> str:
    m = _NAME.match(path.name)
    return m.group(1) if m else path.stem


def parse_phase_file(
    path: Path, source: str = SOURCE, phases: tuple[str, ...] = PHASES, native: str | None = None
) -> ParsedAnnotations:
    """One phase file (named or numeric labels, with or without header), parsed whole-column."""
    native = native or _native(path)
    vid = video_id(source, native)
    cols = read_columns(
        path,
        ("frame", "phase"),
        has_header=_frame_header,
        malformed="expected 'frame<TAB>phase', got {text!r}",
        ints=("frame",),
    )
    if not cols.table.num_rows:
        raise bad(path, None, "no annotation rows")
    frames, frame_bad = cols.ints("frame")
    text = cols.table.column("phase")
    names = pa.array(phases)
    # one lookup for both spellings: a phase name, or its id written as a plain number
    found = pc.index_in(text, value_set=pa.array([*phases, *map(str, range(len(phases)))]))
    if found.null_count == 0 and not frame_bad.any():
        cols.check(not_increasing(frames))
        lid = pc.remainder(found, len(phases)).to_numpy()
    else:
        digit = pc.utf8_is_digit(text).to_numpy(zero_copy_only=False)
        by_name = pc.index_in(text, value_set=names).fill_null(-1).to_numpy()
        by_id = pc.cast(pc.if_else(digit, pc.utf8_slice_codeunits(text, 0, 18), "-1"), pa.int64()).to_numpy()
        lid = np.where(digit, by_id, by_name)
        cols.check(
            (frame_bad, cols.not_int("frame", "frame")),
            not_increasing(frames),
            (digit & (by_id >= len(phases)), lambda k: f"phase id {text[k].as_py()} out of range 0-{len(phases) - 1}"),
            (
                ~digit & (by_name < 0),
                lambda k: f"unknown phase {text[k].as_py()!r} (expected one of {', '.join(phases)})",
            ),
        )
    ids = pa.array(lid, pa.int32())
    labels = names.take(ids)
    out = ParsedAnnotations(source, segments=runs(vid, "phase", frames, labels, ids, FPS))
    out.frame_labels = frame_table(vid, "phase", frames, FPS, labels, ids)
    out.videos = [{"video_id": vid, "native_id": native, "fps": FPS, "n_frames": None, "annotation_file": str(path)}]
    return out


def parse_tool_file(path: Path, source: str = SOURCE) -> ParsedAnnotations:
    """One tool-presence file: a ``tool`` frame label per present tool (frame order, then tool column order)."""
    vid = video_id(source, _native(path))
    head = _first_line(path)
    if not head or not _frame_header(head):
        raise bad(path, 1, f"expected header 'Frame {' '.join(TOOLS)}'")
    names = head.split()[1:]
    cols = read_columns(
        path,
        ("frame", *names),
        has_header=_frame_header,
        malformed=f"expected a frame and {len(names)} 0/1 flags, got {{text!r}}",
    )
    frames, frame_bad = cols.ints("frame")
    flags = [cols.table.column(c) for c in names]
    not_flag = np.zeros(cols.table.num_rows, bool)
    for col in flags:
        not_flag |= ~pc.is_in(col, value_set=pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
    cols.check(
        (not_flag, lambda k: f"expected a frame and {len(names)} 0/1 flags, got {cols.line(k)[1]!r}"),
        (frame_bad, cols.not_int("frame", "frame")),
    )
    present = np.column_stack([pc.equal(c, "1").to_numpy(zero_copy_only=False) for c in flags])
    rows, tools = np.nonzero(present)  # row-major: frame order, then tool order
    ids = pa.array(tools, pa.int32())
    out = ParsedAnnotations(source)
    out.frame_labels = frame_table(vid, "tool", frames[rows], FPS, pa.array(names).take(ids), ids)
    return out


def _first_line(path: Path) -> str:
    """The first non-blank line of ``path``, stripped ("" when there is none)."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return next((line.strip() for line in fh if line.strip()), "")


def _files(root: Path) -> tuple[list[Path], list[Path]]:
    files = find(root, "video*-phase.txt", "*/video*-phase.txt", "**/phase_annotations/video*-phase.txt")
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise bad(f, None, f"same video annotated twice (also {seen[f.name]}); point the root at one folder")
        seen[f.name] = f
    tools = sorted(root.glob("**/video*-tool.txt")) if root.is_dir() else []
    return files, tools


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """``videoNN-phase.txt`` (then ``videoNN-tool.txt``) files under ``root``, one piece per file."""
    phases, tools = _files(Path(root))
    for f in phases:
        yield parse_phase_file(f)
    for f in tools:
        yield parse_tool_file(f)


def parse(root: Path) -> ParsedAnnotations:
    """All ``videoNN-phase.txt`` (and ``videoNN-tool.txt``) files under ``root``."""
    return concat(parse_stream(root), SOURCE)
