"""One build dir, many commands: the object every command uses to read and write a build's tables, its errors,
its catalog and its lock.

A build dir (``build/<corpus>/``) is shared by ``build``, ``embed``, ``leakage``, ``balance``, the ``hierarchy`` and
``benchmark`` commands. Each command owns its tables and the error rows of its stages; it replaces only those, and
refreshes the catalog (views over every table present), so no command ever drops another's data::

    bd = BuildDir("build/demo/corpus")
    with bd.writing("embed"):                         # advisory lock: a second writer fails at once
        bd.write_rows("embeddings", rows)
        bd.replace_errors(["embed"], error_rows)     # other stages' rows stay
        bd.refresh_catalog()

Files: ``tables/*.parquet``, ``catalog.duckdb``, ``build.lock`` (provenance: manifest hash, tools, inputs),
``.surgcorpus.lock`` (the writer lock: holder pid, host and command while held).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from corpus.atomic import write_text_atomic
from corpus.catalog import write_catalog
from corpus.errors import ErrorRow, SurgcorpusError
from corpus.schemas import ERRORS, SCHEMAS, TABLES_DIR, table_path, to_table, write_table

LOCK_FILE = ".surgcorpus.lock"
PROVENANCE_FILE = "build.lock"
ERROR_SORT = ("stage", "video_id", "clip_id", "kind", "message")


class BuildDirLocked(SurgcorpusError):
    """Another process is writing to this build dir."""

    kind = "locked"


# Locks this process holds, by lock-file path: re-entrant within a process (build -> embed in one call chain).
_HELD: dict[str, tuple[int, int]] = {}


class BuildDir:
    """A build directory: its tables (Parquet), errors (by stage), catalog (DuckDB views) and writer lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"BuildDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------------------------------------- tables

    @property
    def tables_dir(self) -> Path:
        return self.path / TABLES_DIR

    def table_path(self, name: str) -> Path:
        return table_path(self.path, name)

    def has(self, name: str) -> bool:
        return self.table_path(name).exists()

    def table_names(self) -> list[str]:
        """Every table present (``tables/<name>.parquet``), sorted."""
        return sorted(p.stem for p in self.tables_dir.glob("*.parquet")) if self.tables_dir.exists() else []

    def read_table(self, name: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """The table, or None when it has not been written yet."""
        path = self.table_path(name)
        return pq.read_table(path, columns=list(columns) if columns else None) if path.exists() else None

    def read_rows(self, name: str) -> list[dict]:
        """All rows of a table as dicts, or ``[]`` when it has not been written yet."""
        table = self.read_table(name)
        return table.to_pylist() if table is not None else []

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write a table atomically (temp name, then rename)."""
        return write_table(table, self.table_path(name))

    def write_rows(
        self, name: str, rows: Iterable[dict], sort_by: Sequence[str] = (), schema: pa.Schema | None = None
    ) -> Path:
        """Write rows with the table's registered schema (or ``schema``), sorted by ``sort_by``."""
        schema = schema if schema is not None else SCHEMAS[name]
        return self.write_table(name, to_table(rows, schema, sort_by))

    # ---------------------------------------------------------------------------------------------- errors

    def errors(self, stages: Iterable[str] | None = None) -> list[dict]:
        """Error rows, all or those of ``stages``."""
        rows = self.read_rows("errors")
        if stages is None:
            return rows
        wanted = set(stages)
        return [r for r in rows if r["stage"] in wanted]

    def replace_errors(
        self,
        stages: Iterable[str],
        rows: Iterable[ErrorRow | dict],
        *,
        only: Callable[[dict], bool] | None = None,
    ) -> Path:
        """Replace the error rows of ``stages`` by ``rows``, keeping every other stage's rows.

        ``only`` narrows what is replaced within those stages (e.g. the clips an embed run attempted): old rows of
        the stages for which it returns False are kept.
        """
        stages = set(stages)
        new = [r.to_dict() if isinstance(r, ErrorRow) else dict(r) for r in rows]
        for r in new:
            if r["stage"] not in stages:
                raise ValueError(f"error row of stage {r['stage']!r} written as one of {sorted(stages)}")
        kept = [r for r in self.read_rows("errors") if r["stage"] not in stages or (only is not None and not only(r))]
        return self.write_table("errors", to_table(kept + new, ERRORS, ERROR_SORT))

    # ---------------------------------------------------------------------------------------------- catalog

    def refresh_catalog(self) -> Path:
        """(Re)write ``catalog.duckdb``: a view per table present, plus the joins whose tables are all present."""
        return write_catalog(self.path)

    # ---------------------------------------------------------------------------------------------- state

    def write_provenance(self, record: dict) -> Path:
        """``build.lock``: manifest hash, tool versions and input checksums of the last complete build."""
        return write_text_atomic(self.path / PROVENANCE_FILE, json.dumps(record, indent=1, sort_keys=True))

    def provenance(self) -> dict | None:
        try:
            return json.loads((self.path / PROVENANCE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # ---------------------------------------------------------------------------------------------- lock

    def lock_holder(self) -> dict | None:
        """Who holds the writer lock (pid, host, command, since), or None when nobody does."""
        path = self.path / LOCK_FILE
        if not path.exists():
            return None
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @contextmanager
    def writing(self, command: str) -> Iterator[BuildDir]:
        """Hold the build dir's advisory writer lock for the block; fail at once when another process holds it.

        The lock is an ``flock`` on ``.surgcorpus.lock`` (released by the kernel when the holder dies, so a killed
        build never leaves a stale lock); it is re-entrant within one process.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK_FILE
        key = str(path)
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            try:
                yield self
            finally:
                fd, depth = _HELD[key]
                _HELD[key] = (fd, depth - 1)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path) or {}
            raise BuildDirLocked(
                f"{self.path} is being written by another process: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({holder.get('command', '?')}, since {holder.get('since', '?')}); "
                "wait for it to finish or stop it, then re-run"
            ) from None
        os.ftruncate(fd, 0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.write(fd, json.dumps(info).encode())
        _HELD[key] = (fd, 1)
        try:
            yield self
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def writes_build_dir(command: str) -> Callable:
    """Decorator for a library entry point whose first argument is a build dir: hold the dir's writer lock while
    it runs, and refresh the catalog when it returns, so every table it wrote is queryable at once."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(build_dir, *args, **kwargs):
            bd = BuildDir(build_dir)
            with bd.writing(command):
                result = fn(build_dir, *args, **kwargs)
                bd.refresh_catalog()
                return result

        return wrapper

    return decorate


def _read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None
