"""Tables of the OpenSurgery hierarchy (``tables/<name>.parquet`` in a build dir): video → operation → frame.

The video level is ``hier_videos`` so that it does not clash with the pipeline's ``videos`` table of media facts.
Every level carries ``split`` and its WebDataset ``key``; rows are sorted by ``video_id`` then time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.ids import sample_key
from corpus.schemas import table_path, to_table, write_table

HIER_VIDEOS = pa.schema(
    [
        ("video_id", pa.string()),
        ("surgery_type", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("duration_s", pa.float64()),
        ("url", pa.string()),
        ("license", pa.string()),
        ("source", pa.string()),
        ("path", pa.string()),  # local media file, when known
        ("group_id", pa.string()),  # near-duplicate / patient group kept on one side of the split
        ("split", pa.string()),
        ("key", pa.string()),
    ]
)

OPERATIONS = pa.schema(
    [
        ("video_id", pa.string()),
        ("index", pa.int32()),  # 0-based order by start time within the video
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("label", pa.string()),
        ("text", pa.string()),
        ("split", pa.string()),
        ("key", pa.string()),
    ]
)

FRAMES = pa.schema(
    [
        ("video_id", pa.string()),
        ("t_s", pa.float64()),
        ("label", pa.string()),
        ("caption", pa.string()),
        ("op_index", pa.int32()),  # the operation containing t_s, or null
        ("split", pa.string()),
        ("key", pa.string()),
    ]
)

HIER_SHARDS = pa.schema(
    [
        ("level", pa.string()),  # video | operation | frame
        ("split", pa.string()),
        ("key", pa.string()),
        ("video_id", pa.string()),
        ("shard", pa.string()),  # path relative to the build dir
        ("members", pa.list_(pa.string())),
        ("bytes", pa.int64()),
    ]
)

HIER_TABLES: dict[str, pa.Schema] = {
    "hier_videos": HIER_VIDEOS,
    "operations": OPERATIONS,
    "frames": FRAMES,
    "hier_shards": HIER_SHARDS,
}
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "hier_videos": ("video_id",),
    "operations": ("video_id", "start_s"),
    "frames": ("video_id", "t_s"),
    "hier_shards": ("level", "split", "key"),
}
LEVELS = ("video", "operation", "frame")
ERROR_STAGE = "hierarchy"
SHARD_ERROR_STAGE = "hierarchy-shard"

_KEY_OK = re.compile(r"^[A-Za-z0-9_\-]+$")


def video_key(video_id: str) -> str:
    """``<video-key>``: the video id with dots and slashes replaced (a WebDataset key never holds a dot)."""
    key = sample_key(video_id)
    if not _KEY_OK.match(key):
        raise ValueError(f"video id {video_id!r} gives an unusable key {key!r}")
    return key


def operation_key(video_id: str, index: int) -> str:
    """``<video-key>__op-<idx 3 digits>``."""
    return f"{video_key(video_id)}__op-{index:03d}"


def frame_key(video_id: str, t_s: float) -> str:
    """``<video-key>__t-<ms 9 digits>``."""
    return f"{video_key(video_id)}__t-{round(t_s * 1000):09d}"


def write_hier_table(build_dir: str | Path, name: str, rows: list[dict] | pa.Table) -> Path:
    """Write one hierarchy table atomically, sorted by its key (``rows``: dicts, or an Arrow table whose missing
    columns become nulls)."""
    schema = HIER_TABLES[name]
    if isinstance(rows, pa.Table):
        cols = {
            f.name: rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows) for f in schema
        }
        table = pa.table(cols).cast(schema).sort_by([(k, "ascending") for k in SORT_KEYS[name]])
    else:
        table = to_table(rows, schema, SORT_KEYS[name])
    return write_table(table, table_path(build_dir, name))


def read_hier_table(build_dir: str | Path, name: str) -> list[dict]:
    """All rows of a hierarchy table, or ``[]`` when it has not been written."""
    return read_hier_arrow(build_dir, name).to_pylist()


def read_hier_arrow(build_dir: str | Path, name: str) -> pa.Table:
    """A hierarchy table as Arrow (empty, in its schema, when it has not been written)."""
    path = table_path(build_dir, name)
    return pq.read_table(path) if path.exists() else HIER_TABLES[name].empty_table()
