"""The catalog's query path creates the views a statement names (each view reads its file's footer), and every
view for statements that list the catalog."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.catalog import query, tables_named


@pytest.fixture()
def build(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    pq.write_table(pa.table({"video_id": ["a", "b"], "n": [1, 2]}), tables / "videos.parquet")
    pq.write_table(pa.table({"video_id": ["a"], "t_s": [0.5]}), tables / "frames.parquet")
    (tables / "clips.parquet").write_bytes(b"not parquet")  # a view over it fails to bind
    return tmp_path


def test_a_query_binds_only_the_tables_it_names(build):
    assert query(build, "SELECT sum(n) AS total FROM videos") == (["total"], [(3,)])
    assert query(build, "SELECT v.n FROM videos v JOIN frames f USING (video_id)") == (["n"], [(1,)])
    with pytest.raises(duckdb.Error, match="clips"):
        query(build, "SELECT * FROM clips")
    with pytest.raises(duckdb.Error, match="clips"):  # listing the catalog creates every view
        query(build, "SHOW TABLES")


def test_tables_named(build):
    assert tables_named("select count(*) from VIDEOS where n > 1", build) == {"videos"}
    assert tables_named("SELECT * FROM frame_details", build) == {"hier_videos", "operations", "frames"}
    assert tables_named("SELECT 42", build) is None
    assert tables_named("SELECT table_name FROM information_schema.tables", build) is None


def test_the_query_command_loads_neither_pyarrow_nor_numpy():
    """`surgcorpus query` starts a fresh process each time: pyarrow and numpy would cost it 0.3-1 s."""
    import subprocess
    import sys

    from corpus import catalog, schemas

    assert catalog.TABLES_DIR == schemas.TABLES_DIR
    code = "import sys, cli.main, corpus.catalog; print(sorted({'pyarrow', 'numpy'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
