"""DuckDB views over the hierarchy tables, written into ``<build>/catalog.duckdb`` beside any pipeline views.

Views: ``hier_videos``, ``operations``, ``frames``, ``errors``, ``hier_shards`` (one per table present) and the joins
``operation_details`` (each operation with its video's surgery type, title and split, its duration and the captions
of the frames inside it) and ``frame_details`` (each frame with its video and operation)::

    SELECT video_id, "index", label, duration_s, captions FROM operation_details
    WHERE surgery_type = 'thyroidectomy' AND duration_s > 60
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from corpus.schemas import table_path

CATALOG = "catalog.duckdb"
TABLE_VIEWS = ("hier_videos", "operations", "frames", "errors", "hier_shards")

OPERATION_DETAILS = """
CREATE OR REPLACE VIEW operation_details AS
SELECT o.video_id, o."index", o.key, o.start_s, o.end_s, o.end_s - o.start_s AS duration_s, o.label, o.text, o.split,
       v.surgery_type, v.title, v.duration_s AS video_duration_s,
       (SELECT count(*) FROM operations o2 WHERE o2.video_id = o.video_id) AS n_operations,
       coalesce((SELECT list(f.caption ORDER BY f.t_s) FROM frames f
                 WHERE f.video_id = o.video_id AND f.op_index = o."index" AND f.caption IS NOT NULL),
                []::VARCHAR[]) AS captions
FROM operations o JOIN hier_videos v USING (video_id)
"""

FRAME_DETAILS = """
CREATE OR REPLACE VIEW frame_details AS
SELECT f.video_id, f.t_s, f.key, f.label, f.caption, f.split, f.op_index,
       v.surgery_type, v.title, o.label AS operation_label, o.text AS operation_text
FROM frames f JOIN hier_videos v USING (video_id)
LEFT JOIN operations o ON o.video_id = f.video_id AND o."index" = f.op_index
"""


def _quote(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def write_catalog(build_dir: str | Path) -> Path:
    """Create or replace the hierarchy views in ``<build_dir>/catalog.duckdb`` (absolute Parquet paths)."""
    build_dir = Path(build_dir)
    db = build_dir / CATALOG
    con = duckdb.connect(str(db))
    try:
        present = set()
        for name in TABLE_VIEWS:
            path = table_path(build_dir, name)
            if path.exists():
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({_quote(path)})")
                present.add(name)
        if {"hier_videos", "operations", "frames"} <= present:
            con.execute(OPERATION_DETAILS)
            con.execute(FRAME_DETAILS)
    finally:
        con.close()
    return db


def query(build_dir: str | Path, sql: str, params: list | None = None) -> list[dict]:
    """Run SQL against the catalog read-only and return rows as dicts."""
    con = duckdb.connect(str(Path(build_dir) / CATALOG), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()
