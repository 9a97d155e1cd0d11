"""Table schemas of a build dir (``tables/<name>.parquet``), and atomic Parquet I/O.

Rows are plain dicts; each table has one pyarrow schema here, so every writer and reader agrees on columns and
types. Tables are written sorted by their key (``video_id`` first, then time) so one video's rows are contiguous.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.atomic import temp_sibling

TABLES_DIR = "tables"

SOURCES = pa.schema(
    [
        ("source", pa.string()),
        ("domain", pa.string()),
        ("license", pa.string()),
        ("access", pa.string()),
        ("root", pa.string()),
        ("homepage", pa.string()),
        ("n_videos", pa.int64()),
    ]
)

# What fetch resolves: one row per planned video.
FETCH = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("native_id", pa.string()),
        ("uri", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
    ]
)

PROBE = pa.schema(
    [
        ("video_id", pa.string()),
        ("codec", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("duration_s", pa.float64()),
        ("rotation", pa.int32()),
        ("has_audio", pa.bool_()),
        ("n_frames", pa.int64()),  # decoded frames once the clip pass has counted them (frames_counted)
        ("n_frames_header", pa.int64()),  # what the container header claims
        ("frames_counted", pa.bool_()),
        ("has_b_frames", pa.int32()),  # decoder reorder depth: > 0 when the stream has B-frames
    ]
)

VIDEOS = pa.schema(
    list(FETCH)
    + [f for f in PROBE if f.name != "video_id"]
    + [
        ("split", pa.string()),
        ("split_reason", pa.string()),
        ("dup_of", pa.string()),
        ("dup_kind", pa.string()),
        ("n_clips", pa.int64()),
    ]
)

CLIPS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("split", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("n_frames", pa.int32()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("phash", pa.list_(pa.uint64())),
        ("max_timestamp_error_s", pa.float64()),  # largest |source frame time - output frame time| in the clip
        ("dup_of", pa.string()),
        ("dup_kind", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
    ]
)

# What the clip pass measured per video (one row per video; not a build table: merged into ``videos``).
CLIP_FACTS = pa.schema(
    [
        ("video_id", pa.string()),
        ("n_frames", pa.int64()),
        ("frames_counted", pa.bool_()),
        ("duration_s", pa.float64()),
    ]
)

DEDUP = pa.schema(
    [
        ("level", pa.string()),  # video | clip
        ("cluster_id", pa.string()),  # the representative's id
        ("member_id", pa.string()),
        ("video_id", pa.string()),
        ("is_representative", pa.bool_()),
        ("kind", pa.string()),  # exact | near | unique-representative
        ("distance", pa.float64()),
        ("offset_s", pa.float64()),
    ]
)

ERRORS = pa.schema(
    [
        ("stage", pa.string()),
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("kind", pa.string()),
        ("message", pa.string()),
        ("clip_id", pa.string()),
        ("detail", pa.string()),
    ]
)

SHARDS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("member", pa.string()),
        ("offset", pa.int64()),
        ("bytes", pa.int64()),
    ]
)

# Listed videos a build does not plan (before any download): planned in another source, or held out of
# pretraining as a benchmark val/test video (see ``corpus.overlap``).
PLANNED_OUT = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("reason", pa.string()),  # overlap | held_out
        ("kept_in", pa.string()),
        ("kept_video_id", pa.string()),
        ("key", pa.string()),  # the identity key they share: youtube:<id>, url:<url> or sha256:<hex>
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "fetch": FETCH,
    "probe": PROBE,
    "videos": VIDEOS,
    "clips": CLIPS,
    "dedup": DEDUP,
    "errors": ERRORS,
    "shards": SHARDS,
    "planned_out": PLANNED_OUT,
}


def table_path(build_dir: str | Path, name: str) -> Path:
    return Path(build_dir) / TABLES_DIR / f"{name}.parquet"


def to_table(rows: Iterable[dict], schema: pa.Schema, sort_by: Sequence[str] = ()) -> pa.Table:
    """Rows (dicts) to a table with exactly ``schema``'s columns; missing keys become nulls."""
    rows = list(rows)
    if sort_by:
        rows.sort(key=lambda r: tuple((r.get(k) is None, r.get(k) if r.get(k) is not None else 0) for k in sort_by))
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(cols, schema=schema)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write Parquet atomically (temp name in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    pq.write_table(table, tmp, compression="zstd", row_group_size=128 * 1024)
    os.replace(tmp, path)
    return path


def write_rows(build_dir: str | Path, name: str, rows: Iterable[dict], sort_by: Sequence[str] = ()) -> Path:
    return write_table(to_table(rows, SCHEMAS[name], sort_by), table_path(build_dir, name))


def read_rows(build_dir: str | Path, name: str) -> list[dict]:
    """All rows of a table, or ``[]`` when the table has not been written yet."""
    path = table_path(build_dir, name)
    return pq.read_table(path).to_pylist() if path.exists() else []
