"""Tables assembled from parts, so no process ever holds a whole table.

Each unit of work (a video's clips, a source's annotations, a shard's index) writes its rows as one small Parquet
file, a *part*, under ``<build>/_parts/<stage>/<table>/``. The driver then builds ``tables/<name>.parquet`` by
streaming the parts in key order into one file, coalescing them into row groups of ``row_group_size`` rows: memory
stays at about one row group whatever the corpus size, and one video's rows land in one or two row groups.

Parts are written atomically (temp name in the same folder, then ``os.replace``), so a killed unit leaves no
half part behind and a retried unit cannot corrupt another attempt's part.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus.atomic import temp_sibling

PARTS_DIR = "_parts"
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"


def part_relpath(stage: str, table: str, unit_id: str) -> str:
    """Where a unit's part of ``table`` lives, relative to the build dir (stable: a hash of the unit id)."""
    digest = hashlib.sha256(unit_id.encode()).hexdigest()[:24]
    return f"{PARTS_DIR}/{stage}/{table}/{digest}.parquet"


class PartWriter:
    """Stream tables, record batches or row dicts into one Parquet file with ``schema``, atomically.

    >>> with PartWriter(path, schema) as w:  # doctest: +SKIP
    ...     w.write(batch)
    """

    def __init__(self, path: str | Path, schema: pa.Schema, row_group_size: int = ROW_GROUP_ROWS) -> None:
        self.path = Path(path)
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_sibling(self.path)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression=COMPRESSION)

    def write(self, data: pa.Table | pa.RecordBatch | Sequence[dict]) -> None:
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            data = pa.Table.from_pylist(list(data), schema=self.schema)
        if data.num_rows:
            self._writer.write_table(data.select(self.schema.names).cast(self.schema), self.row_group_size)
            self.rows += data.num_rows

    def close(self) -> Path:
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_part(path: str | Path, data: pa.Table | Sequence[dict], schema: pa.Schema) -> Path:
    """Write one part in one go (atomically)."""
    with PartWriter(path, schema) as w:
        w.write(data)
    return Path(path)


def _batches(parts: Iterable[str | Path], schema: pa.Schema) -> Iterable[pa.RecordBatch]:
    for part in parts:
        f = pq.ParquetFile(part)
        for i in range(f.num_row_groups):
            t = f.read_row_group(i)
            yield from t.select(schema.names).cast(schema).to_batches()


def merge_parts(
    parts: Iterable[str | Path],
    dest: str | Path,
    schema: pa.Schema,
    sorted_by: str | None = "video_id",
    row_group_size: int = ROW_GROUP_ROWS,
) -> int:
    """Concatenate ``parts`` (in the order given) into ``dest``, atomically; returns the number of rows.

    The parts must already be in table order; with ``sorted_by`` the merge checks that the column never decreases
    across the whole stream and raises ``ValueError`` naming the part where it does (a caller's ordering bug, never
    a silently unsorted table). Peak memory is about one row group.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    last: object = None
    pending: list[pa.RecordBatch] = []
    n_pending = n = 0
    with PartWriter(dest, schema, row_group_size) as w:
        for batch in _batches(parts, schema):
            if not batch.num_rows:
                continue
            if sorted_by is not None:
                col = batch.column(sorted_by)
                if (last is not None and col[0].as_py() < last) or (
                    batch.num_rows > 1 and not pc.all(pc.greater_equal(col[1:], col[:-1])).as_py()
                ):
                    raise ValueError(f"merging {dest.name}: parts are not sorted by {sorted_by} (at {col[0]})")
                last = col[-1].as_py()
            pending.append(batch)
            n_pending += batch.num_rows
            if n_pending >= row_group_size:  # write whole row groups, carry the rest
                table = pa.Table.from_batches(pending, schema)
                full = n_pending - n_pending % row_group_size
                w.write(table.slice(0, full))
                n += full
                pending, n_pending = table.slice(full).to_batches(), n_pending - full
        if pending:
            w.write(pa.Table.from_batches(pending, schema))
            n += n_pending
        if n == 0:
            w.write(schema.empty_table())
    return n
