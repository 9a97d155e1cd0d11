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
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from corpus.annotations import ParsedAnnotations, concat, frame_table, runs
from corpus.ids import video_id
from corpus.sources._common import bad, find, not_increasing, read_columns

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
    """One ``case_NN.csv``, read whole-column: per-frame labels and their contiguous runs as ``phase`` segments."""
    vid = video_id(SOURCE, path.stem)
    cols = read_columns(
        path,
        ("frame", "phase"),
        separators=",",
        collapse=False,
        has_header=lambda first: not first[:1].isdigit(),
        malformed="expected '<frame>,<phase>', got {text!r}",
        ints=("frame",),
    )
    frames, frame_bad = cols.ints("frame")
    text = cols.table.column("phase")
    names = pa.array(PHASES)
    lid = pc.index_in(text, value_set=names)
    cols.check(
        (frame_bad, cols.not_int("frame", "frame")),
        (
            lid.is_null().to_numpy(zero_copy_only=False),
            lambda k: f"unknown phase {text[k].as_py()!r} (expected one of {', '.join(PHASES)})",
        ),
        not_increasing(frames),
    )
    if not len(frames):
        raise bad(path, None, "no annotation rows")
    ids = lid.cast(pa.int32())
    out = ParsedAnnotations(SOURCE, segments=runs(vid, "phase", frames, text, ids, FPS))
    out.frame_labels = frame_table(vid, "phase", frames, FPS, text, ids)
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    out.videos = [
        {
            "video_id": vid,
            "native_id": path.stem,
            "fps": FPS,
            "n_frames": int(frames[-1]) + 1,
            "annotation_file": str(path),
            "subset": subset_of(rel),
            "video_file": (rel if path.is_relative_to(root) else Path(path.name)).with_suffix(".mp4").as_posix(),
        }
    ]
    return out


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """One piece per ``case_NN.csv``."""
    root = Path(root)
    files = [f for f in find(root, "case_*.csv", "**/case_*.csv") if _CASE.match(f.stem)]
    if not files:
        raise bad(root, None, "no case_NN.csv annotation files")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise bad(f, None, f"{f.stem} is annotated twice (also {seen[f.stem]})")
        seen[f.stem] = f
    base = root if root.is_dir() else root.parent
    for f in files:
        yield parse_case(f, base)


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
