"""Import a hierarchy into a build dir and assign the fixed split; both rewrite the tables and the catalog views.

Writes ``<out>/tables/{hier_videos,operations,frames,errors}.parquet`` and ``<out>/catalog.duckdb``.

>>> report = import_hierarchy("build/opensurgery", "videos.jsonl")  # doctest: +SKIP
>>> split_hierarchy("build/opensurgery", test_fraction=0.3, seed=0)  # doctest: +SKIP
{'train': 280, 'test': 120}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from corpus.build_dir import BuildDir
from corpus.hierarchy.importers import Format, read_any
from corpus.hierarchy.models import Hierarchy
from corpus.hierarchy.schemas import ERROR_STAGE, read_hier_arrow, read_hier_table, write_hier_table
from corpus.hierarchy.validate import Rules, validate
from corpus.splits import stratified_split


@dataclass(frozen=True)
class ImportReport:
    videos: int
    operations: int
    frames: int
    errors: int
    error_kinds: dict[str, int]


def write_hierarchy(out: str | Path, h: Hierarchy) -> ImportReport:
    """Write a validated hierarchy's tables, its error rows and the catalog views."""
    bd = BuildDir(out)
    with bd.writing("hierarchy import"):
        write_hier_table(bd.path, "hier_videos", h.videos)
        write_hier_table(bd.path, "operations", h.operations)
        write_hier_table(bd.path, "frames", h.frames)
        bd.replace_errors([ERROR_STAGE], h.errors)
        bd.refresh_catalog()
    kinds = Counter(e["kind"] for e in h.errors)
    return ImportReport(
        len(h.videos), len(h.operations), h.frames.num_rows, len(h.errors), dict(sorted(kinds.items()))
    )


def import_hierarchy(
    out: str | Path,
    videos: str | Path,
    operations: str | Path | None = None,
    frames: str | Path | None = None,
    *,
    fmt: Format = "auto",
    rules: Rules = Rules(),
    source: str | None = None,
    surgery_type: str | None = None,
) -> ImportReport:
    """Import (any supported format), validate, and write the tables under ``out``; see :func:`read_any`."""
    h = read_any(videos, operations, frames, fmt=fmt, source=source, surgery_type=surgery_type)
    return write_hierarchy(out, validate(h, rules))


def load_hierarchy(build_dir: str | Path) -> Hierarchy:
    """The three levels of a build dir (no error rows); frames as an Arrow table."""
    return Hierarchy(
        videos=read_hier_table(build_dir, "hier_videos"),
        operations=read_hier_table(build_dir, "operations"),
        frames=read_hier_arrow(build_dir, "frames"),
    )


def split_hierarchy(
    build_dir: str | Path, *, test_fraction: float = 0.3, seed: int = 0, groups: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Assign the fixed split (see :mod:`corpus.hierarchy.split`) and write ``split`` on every level.

    Returns the number of videos per split. Videos whose group comes from ``groups`` keep it in ``group_id``.
    """
    bd = BuildDir(build_dir)
    with bd.writing("hierarchy split"):
        h = load_hierarchy(bd.path)
        groups = dict(groups or {})
        split = stratified_split(h.videos, test_fraction=test_fraction, seed=seed, groups=groups)
        videos = [
            {**v, "group_id": groups.get(v["video_id"]) or v.get("group_id"), "split": split[v["video_id"]]}
            for v in h.videos
        ]
        write_hier_table(bd.path, "hier_videos", videos)
        write_hier_table(bd.path, "operations", [{**o, "split": split[o["video_id"]]} for o in h.operations])
        frames = h.frames.drop_columns(["split"])
        ids = pc.unique(frames.column("video_id"))
        splits = pa.array([split.get(v) for v in ids.to_pylist()], pa.string())
        frames = frames.append_column("split", splits.take(pc.index_in(frames.column("video_id"), value_set=ids)))
        write_hier_table(bd.path, "frames", frames)
        bd.refresh_catalog()
    return dict(sorted(Counter(split.values()).items()))
