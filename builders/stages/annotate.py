"""annotate: parse each source's native annotations (``annotations: {adapter, path}``) into the unified tables.

One unit per source with annotations (``unit_id`` = the source name). Its fingerprint covers the adapter, every
file under the annotation path (path, size, mtime_ns) and the source's planned videos, so a finished source is
skipped on the next build and a changed annotation file re-parses that source only.

The adapter (``corpus.sources.ADAPTERS``) names videos by its own native ids (a JIGSAWS trial, a Cholec80
``videoNN``); a build names them by file path. An annotation applies to every video of the source whose file
stem equals the annotated native id or extends it with ``_``/``-`` (a trial's two camera views share its
gestures). Rows are copied per matching video with the build's ``video_id``; ``annotation_id`` keeps the
adapter's id.

Rows never exist as Python objects per frame, and a source of any size parses in bounded memory: the adapter's
pieces (one annotation file each) are spooled to a Parquet file, one row group per annotated video; once every
annotated id is known (only then can videos be matched), each build video's rows are read back by row group, in
``video_id`` order, and streamed into the unit's parts ``_parts/annotate/{segments,frame_labels}/<hash>.parquet``
(``corpus.parts``), sorted by (video_id, level, start_frame | frame). The driver merges the parts.

Errors (an unknown adapter, a missing or malformed annotation file, a video no annotation applies to) become error
rows; nothing else stops.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from builders.stages.base import Stage, UnitResult, stable_hash
from corpus.annotations import FRAME_LABELS, SEGMENTS, ParsedAnnotations
from corpus.errors import ErrorRow, SurgcorpusError
from corpus.manifest import Source
from corpus.parts import PARTS_DIR, ROW_GROUP_ROWS, PartWriter, part_relpath
from corpus.schemas import to_table

log = logging.getLogger(__name__)

STAGE = "annotate"
SEGMENTS_OUT = pa.schema([*SEGMENTS, ("annotation_id", pa.string()), ("source", pa.string())])
FRAME_LABELS_OUT = pa.schema([*FRAME_LABELS, ("annotation_id", pa.string()), ("source", pa.string())])
# table -> (adapter schema, output schema, time column of the sort key)
TABLES: dict[str, tuple[pa.Schema, pa.Schema, str]] = {
    "segments": (SEGMENTS, SEGMENTS_OUT, "start_frame"),
    "frame_labels": (FRAME_LABELS, FRAME_LABELS_OUT, "frame"),
}
PARSER_VERSION = 2  # bump when a parser's output changes, so finished sources are parsed again
_SPOOL_GROUP_ROWS = 256 * 1024


def annotate_units(sources: Iterable[Source], plan: list[dict]) -> list[dict]:
    """One unit per source with annotations: its adapter, annotation path and planned videos
    (``[video_id, native_id, uri]``)."""
    videos: dict[str, list[list[str]]] = defaultdict(list)
    for r in plan:
        videos[r["source"]].append([r["video_id"], r["native_id"], r["uri"]])
    units = []
    for src in sources:
        if src.annotations is None:
            continue
        path = Path(src.annotations.path)
        path = path if path.is_absolute() else Path(src.root) / path
        units.append(
            {"source": src.name, "adapter": src.annotations.adapter, "path": str(path), "videos": videos[src.name]}
        )
    return units


def _listing(path: Path, skip: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``path`` (or of ``path`` itself), minus ``skip``'s."""
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    out = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if Path(folder, d).resolve() != skip)
        for name in sorted(files):
            st = os.stat(os.path.join(folder, name))
            out.append((os.path.relpath(os.path.join(folder, name), path), st.st_size, st.st_mtime_ns))
    return out


def _matcher(native_ids: Iterable[str]):
    """A function from a video's native id to the annotated native id that applies to it (or None)."""
    by_stem = {PurePosixPath(n).name: n for n in native_ids}
    pattern = re.compile(r"^(.*?)(?:[_-][^_-]*)?$")

    def match(video_native: str) -> str | None:
        stem = PurePosixPath(video_native).name
        while stem:
            if stem in by_stem:
                return by_stem[stem]
            shorter = pattern.match(stem).group(1)  # drop the last _suffix / -suffix
            if shorter == stem:
                return None
            stem = shorter
        return None

    return match


class _Spool:
    """The adapter's rows on disk, one row group per (piece, annotated video), so that one video's rows can be read
    back without reading the others."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writers = {
            t: pq.ParquetWriter(folder / f"{t}.parquet", s, compression="none") for t, (s, _, _) in TABLES.items()
        }
        self.groups: dict[str, dict[str, list[int]]] = {t: defaultdict(list) for t in TABLES}
        self.n_groups = dict.fromkeys(TABLES, 0)
        self.annotated: set[str] = set()  # ids of the adapter's videos and segments (what the matcher sees)
        self.errors: list[ErrorRow] = []

    def add(self, piece: ParsedAnnotations) -> None:
        self.annotated.update(v["video_id"] for v in piece.videos)
        self.annotated.update(s["video_id"] for s in piece.segments)
        self.errors += piece.errors
        segments = to_table(piece.segments, SEGMENTS)
        for name, table in (("segments", segments), ("frame_labels", piece.frame_labels)):
            self._write(name, table)

    def _write(self, name: str, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if pc.count_distinct(table.column("video_id")).as_py() > 1:  # several videos: group them, keep row order
            table = table.take(pc.sort_indices(table, [("video_id", "ascending")]))  # stable
        ids = table.column("video_id").combine_chunks()
        ends = [i + 1 for i in pc.indices_nonzero(pc.not_equal(ids[1:], ids[:-1])).to_pylist()]
        for start, stop in zip([0, *ends], [*ends, table.num_rows], strict=True):
            aid = ids[start].as_py()
            for a in range(start, stop, _SPOOL_GROUP_ROWS):
                chunk = table.slice(a, min(stop, a + _SPOOL_GROUP_ROWS) - a)
                self.writers[name].write_table(chunk, row_group_size=_SPOOL_GROUP_ROWS)
                self.groups[name][aid].append(self.n_groups[name])
                self.n_groups[name] += 1

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def write_parts(self, build_dir: Path, rels: dict[str, str], pairs: list[tuple[str, str]], source: str) -> dict:
        """Each build video's rows (``pairs``: (build video id, annotation id), sorted), into the parts."""
        counts = {}
        for name, (_, schema, time_col) in TABLES.items():
            spool = pq.ParquetFile(self.folder / f"{name}.parquet")
            keys = [("level", "ascending"), (time_col, "ascending")]
            pending: list[pa.Table] = []
            n_pending = 0
            cached: tuple[str, pa.Table] | None = None
            with PartWriter(build_dir / rels[name], schema) as part:
                for vid, aid in pairs:
                    groups = self.groups[name].get(aid)
                    if not groups:
                        continue
                    if cached is None or cached[0] != aid:  # a trial's camera views share their rows
                        cached = (aid, spool.read_row_groups(groups).sort_by(keys))
                    rows = cached[1]
                    n = rows.num_rows
                    rows = rows.set_column(0, "video_id", pa.repeat(pa.scalar(vid, pa.string()), n))
                    rows = rows.append_column("annotation_id", pa.repeat(pa.scalar(aid, pa.string()), n))
                    pending.append(rows.append_column("source", pa.repeat(pa.scalar(source, pa.string()), n)))
                    n_pending += n
                    if n_pending >= ROW_GROUP_ROWS:  # few, full row groups, whatever the videos' sizes
                        part.write(pa.concat_tables(pending))
                        pending, n_pending = [], 0
                if pending:
                    part.write(pa.concat_tables(pending))
                counts[name] = part.rows
        return counts


class AnnotateStage(Stage):
    """Parse one source's annotations into its ``segments`` and ``frame_labels`` parts (see the module docstring).

    The unit writes its parts itself (it declares no ``outputs``: its rows never exist as dicts) and returns them
    in ``UnitResult.parts``, so the executor records them in the marker and hands them to the driver.
    """

    name = STAGE
    requires = ("source", "adapter", "path", "videos")

    def __init__(self, build_dir: str) -> None:
        self.build_dir = build_dir

    def unit_id(self, row: dict) -> str:
        return row["source"]

    def fingerprint(self, row: dict) -> str:
        path = Path(row["path"])
        files = _listing(path, Path(self.build_dir).resolve()) if path.exists() else "missing"
        return stable_hash(PARSER_VERSION, row["adapter"], row["path"], files, [v[:2] for v in row["videos"]])

    def cost(self, row: dict) -> float:
        return float(len(row["videos"]) + 1)

    def process(self, row: dict) -> UnitResult:
        from corpus.sources import ADAPTERS, stream

        source, path = row["source"], Path(row["path"])
        build_dir = Path(self.build_dir)
        rels = {t: part_relpath(STAGE, t, source) for t in TABLES}
        for rel in rels.values():  # a failed parse leaves no part of an earlier, different input behind
            (build_dir / rel).unlink(missing_ok=True)
        adapter = ADAPTERS.get(row["adapter"])
        if adapter is None:
            known = ", ".join(sorted(ADAPTERS))
            message = f"source {source!r}: unknown annotation adapter {row['adapter']!r} (known: {known})"
            return UnitResult(errors=[ErrorRow(STAGE, None, str(path), "annotation", message)])
        spool_root = build_dir / PARTS_DIR / STAGE
        spool_root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".spool-", dir=spool_root))  # a random name: retries never collide
        try:
            spool = _Spool(folder)
            try:
                for piece in stream(adapter, path):
                    spool.add(piece)
            except SurgcorpusError as exc:
                return UnitResult(errors=[ErrorRow.from_exception(STAGE, exc, video_id=None, uri=str(path))])
            finally:
                spool.close()
            errors = [replace(e, stage=STAGE) for e in spool.errors]  # rows the adapter skipped; the rest applies
            pairs, missing = _match(spool.annotated, row, path)
            counts = spool.write_parts(build_dir, rels, pairs, source)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        log.info("%s: %s", source, ", ".join(f"{counts[t]} {t} rows" for t in TABLES))
        return UnitResult(parts=rels, files=list(rels.values()), errors=errors + missing)


def _match(annotated: set[str], row: dict, path: Path) -> tuple[list[tuple[str, str]], list[ErrorRow]]:
    """(build video id, annotation id) for every planned video an annotation applies to, sorted; an error row for
    each video none applies to."""
    native_of = {aid: aid.split("/", 1)[1] if "/" in aid else aid for aid in sorted(annotated)}
    match = _matcher(native_of.values())
    annotated_by_native = {n: a for a, n in native_of.items()}
    pairs, missing = [], []
    for vid, native, uri in row["videos"]:
        hit = match(native)
        if hit is None:
            message = f"{uri}: no annotation in {path} (adapter {row['adapter']}) for this video"
            missing.append(ErrorRow(STAGE, vid, uri, "missing_annotation", message))
        else:
            pairs.append((vid, annotated_by_native[hit]))
    return sorted(pairs), missing
