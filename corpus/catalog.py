"""The DuckDB catalog of a build: ``catalog.duckdb`` holds one view per Parquet table under ``tables/`` (whichever
command wrote it: build, embed, balance, leakage, hierarchy, benchmark), plus the joins of :data:`JOINS` whose
tables are all present (the hierarchy's ``operation_details`` and ``frame_details``).

Views use absolute paths so the file works from any working directory; ``connect`` re-creates them in memory
from the build dir's current location, so a moved or copied build dir still queries correctly. Creating a view
reads its Parquet file's footer (about 1 ms for a small table, more for a table of millions of rows and thousands
of row groups), so ``query`` creates only the views its SQL names (all of them for SQL that lists the catalog:
``SHOW``, ``information_schema``, ``duckdb_*``), and its connection caches Parquet metadata, so that the view and
the query read a footer once.

>>> rows = query("build/demo", "SELECT split, count(*) AS n FROM clips GROUP BY split")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import duckdb

from corpus.atomic import temp_sibling

CATALOG = "catalog.duckdb"
TABLES_DIR = "tables"  # corpus.schemas.TABLES_DIR, not imported: it loads pyarrow (0.3-1 s of each `surgcorpus query`)

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

# Derived views: (tables they need, SQL). ``operation_details`` gives each operation of a hierarchy with its video's
# surgery type, title and split, its duration and the captions of the frames inside it; ``frame_details`` each
# frame with its video and operation.
JOINS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"hier_videos", "operations", "frames"}), OPERATION_DETAILS),
    (frozenset({"hier_videos", "operations", "frames"}), FRAME_DETAILS),
)


def _views(build_dir: Path) -> list[tuple[str, Path]]:
    tables = build_dir / TABLES_DIR
    return sorted((p.stem, p.resolve()) for p in tables.glob("*.parquet")) if tables.exists() else []


def _create_views(con: duckdb.DuckDBPyConnection, build_dir: Path, only: set[str] | None = None) -> list[str]:
    """A view per table (``only``: of these tables), and the joins whose tables are all there."""
    names = []
    for name, path in _views(build_dir):
        if only is not None and name not in only:
            continue
        literal = str(path).replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{literal}')")
        names.append(name)
    for needs, sql in JOINS:
        if needs <= set(names):
            con.execute(sql)
    return names


_LISTS_CATALOG = re.compile(r"\b(show|information_schema|duckdb_\w+|pragma|sqlite_master|pg_catalog)\b", re.I)
_JOIN_NAME = re.compile(r"VIEW (\w+) AS")


def tables_named(sql: str, build_dir: str | Path) -> set[str] | None:
    """The tables whose views ``sql`` may use: every table (or join) whose name is a word of it, with a join's
    tables; None (all of them) when it names none or lists the catalog itself."""
    if _LISTS_CATALOG.search(sql):
        return None
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    named = {name for name, _ in _views(Path(build_dir)) if name.lower() in words}
    for needs, join in JOINS:
        if _JOIN_NAME.search(join).group(1) in words:
            named |= needs
    return named or None


def write_catalog(build_dir: str | Path) -> Path:
    """(Re)write ``catalog.duckdb`` with a view per table; atomic (temp file, then rename)."""
    build_dir = Path(build_dir)
    final = build_dir / CATALOG
    tmp = temp_sibling(final)
    con = duckdb.connect(str(tmp))
    try:
        _create_views(con, build_dir)
    finally:
        con.close()
    os.replace(tmp, final)
    Path(f"{tmp}.wal").unlink(missing_ok=True)
    return final


def connect(build_dir: str | Path, tables: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view per table of ``build_dir`` (``tables``: only of these)."""
    build_dir = Path(build_dir)
    if not (build_dir / TABLES_DIR).exists():
        raise FileNotFoundError(
            f"{build_dir}: not a build dir (no {TABLES_DIR}/ folder); run `surgcorpus build` first"
        )
    con = duckdb.connect()
    con.execute("SET parquet_metadata_cache = true")  # a view and its query read the footer once
    _create_views(con, build_dir, None if tables is None else set(tables))
    return con


def query(build_dir: str | Path, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """Run SQL against a build's views (those it names, see :func:`tables_named`); returns (column names, rows)."""
    con = connect(build_dir, tables_named(sql, build_dir))
    try:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()
    finally:
        con.close()


def query_dicts(build_dir: str | Path, sql: str, params: list | None = None) -> list[dict]:
    """Like :func:`query`, rows as dicts."""
    cols, rows = query(build_dir, sql, params)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def format_rows(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """Render query results as csv or json (the table format is rendered by the CLI with rich)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(columns)
        w.writerows(rows)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1)
    raise ValueError(f"unknown format {fmt!r} (use table, csv or json)")
