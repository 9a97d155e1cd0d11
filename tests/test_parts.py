"""Units write their rows as Parquet parts; the driver merges tables from parts, streaming, in key order."""

from __future__ import annotations

import json
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builders.executors.base import load_done, marker_path
from builders.executors.local import LocalExecutor
from builders.stages.base import Stage, UnitResult
from corpus.parts import merge_parts, write_part

SCHEMA = pa.schema([("video_id", pa.string()), ("t", pa.float64()), ("label", pa.string())])


def _part(path, vid: str, n: int):
    return write_part(path, [{"video_id": vid, "t": i / 10, "label": f"l{i % 3}"} for i in range(n)], SCHEMA)


def test_merge_streams_parts_into_row_groups_in_order(tmp_path):
    sizes = {f"src/v{i:03d}": 700 + 37 * i for i in range(20)}
    parts = [_part(tmp_path / f"{i}.parquet", vid, n) for i, (vid, n) in enumerate(sizes.items())]
    n = merge_parts(parts, tmp_path / "merged.parquet", SCHEMA, row_group_size=4096)
    f = pq.ParquetFile(tmp_path / "merged.parquet")
    assert n == sum(sizes.values()) == f.metadata.num_rows
    groups = [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)]
    assert all(g == 4096 for g in groups[:-1]) and 0 < groups[-1] <= 4096
    table = f.read()
    assert table.equals(pa.concat_tables(pq.read_table(p) for p in parts).cast(SCHEMA))
    # each video's rows are contiguous and lie in at most two row groups (videos are shorter than a row group)
    ids = [set(f.read_row_group(i, columns=["video_id"])["video_id"].to_pylist()) for i in range(f.num_row_groups)]
    for vid in sizes:
        hits = [i for i, present in enumerate(ids) if vid in present]
        assert hits and len(hits) <= 2 and hits == list(range(hits[0], hits[-1] + 1))


def test_merge_refuses_parts_out_of_order_and_writes_nothing(tmp_path):
    a, b = _part(tmp_path / "a.parquet", "src/b", 5), _part(tmp_path / "b.parquet", "src/a", 5)
    with pytest.raises(ValueError, match="merged.parquet.*not sorted by video_id"):
        merge_parts([a, b], tmp_path / "merged.parquet", SCHEMA)
    assert not any(p.name.startswith("merged") for p in tmp_path.iterdir())  # no table, no temp file left
    assert merge_parts([], tmp_path / "empty.parquet", SCHEMA) == 0
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(SCHEMA)


class Counting(Stage):
    """A stage with an output table: rows go to a part in the worker, never back to the driver."""

    name: ClassVar[str] = "counting"
    outputs: ClassVar = {"counts": (SCHEMA, ("t",))}

    def process(self, row: dict) -> UnitResult:
        rows = [{"video_id": row["video_id"], "t": float(t), "label": "x"} for t in reversed(range(row["n"]))]
        return UnitResult(rows=rows)


def test_units_write_parts_and_markers_point_to_them(tmp_path):
    rows = [{"video_id": f"s/v{i}", "n": 3 + i} for i in range(4)]
    with LocalExecutor(2, show_progress=False) as ex:
        out = ex.run(str(tmp_path), Counting(), rows)
        assert out.rows == [] and len(out.parts["counts"]) == 4
        table = out.read(tmp_path, "counts")
        assert table["t"].to_pylist()[:3] == [0.0, 1.0, 2.0]  # sorted within the unit by the stage's keys
        assert out.merge(tmp_path, "counts", tmp_path / "counts.parquet") == sum(r["n"] for r in rows)
        marker = json.loads(marker_path(tmp_path, "counting", "s/v1").read_text())
        assert marker["rows"] == [] and marker["parts"]["counts"] in marker["files"]
        again = ex.run(str(tmp_path), Counting(), rows)
        assert again.skipped == 4 and again.parts == out.parts
        (tmp_path / out.parts["counts"][0]).unlink()  # a lost part: that unit runs again
        assert load_done(str(tmp_path), Counting(), rows[0]) is None
        third = ex.run(str(tmp_path), Counting(), rows)
        assert third.ran == 1 and (tmp_path / out.parts["counts"][0]).exists()
