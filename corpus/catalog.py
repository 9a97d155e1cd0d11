"""The DuckDB catalog of a build: ``catalog.duckdb`` holds one view per Parquet table under ``tables/``.

Views use absolute paths so the file works from any working directory; ``connect`` re-creates them in memory
from the build dir's current location, so a moved or copied build dir still queries correctly.

>>> rows = query("build/demo", "SELECT split, count(*) AS n FROM clips GROUP BY split")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import duckdb

from corpus.schemas import TABLES_DIR

CATALOG = "catalog.duckdb"


def _views(build_dir: Path) -> list[tuple[str, Path]]:
    tables = build_dir / TABLES_DIR
    return sorted((p.stem, p.resolve()) for p in tables.glob("*.parquet")) if tables.exists() else []


def _create_views(con: duckdb.DuckDBPyConnection, build_dir: Path) -> list[str]:
    names = []
    for name, path in _views(build_dir):
        literal = str(path).replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{literal}')")
        names.append(name)
    return names


def write_catalog(build_dir: str | Path) -> Path:
    """(Re)write ``catalog.duckdb`` with a view per table; atomic (temp file, then rename)."""
    build_dir = Path(build_dir)
    final = build_dir / CATALOG
    tmp = build_dir / f".{CATALOG}.tmp{os.getpid()}"
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        _create_views(con, build_dir)
    finally:
        con.close()
    os.replace(tmp, final)
    return final


def connect(build_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view per table of ``build_dir``."""
    build_dir = Path(build_dir)
    if not (build_dir / TABLES_DIR).exists():
        raise FileNotFoundError(
            f"{build_dir}: not a build dir (no {TABLES_DIR}/ folder); run `surgcorpus build` first"
        )
    con = duckdb.connect()
    _create_views(con, build_dir)
    return con


def query(build_dir: str | Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Run SQL against a build's views; returns (column names, rows)."""
    con = connect(build_dir)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()
    finally:
        con.close()


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
