"""Running one unit of a stage: skip it if done, run it, record errors, mark it done (the marker is written last).

State lives under ``<build>/_state/<stage>/<unit hash>.json``: the unit id, its fingerprint, the rows it produced
(or, for stages with ``outputs``, the Parquet parts holding them: ``corpus.parts``), the files it wrote with their
sizes, and its error rows. A unit is done only when its marker exists, the
fingerprint matches and every recorded file is still there with the recorded size. A unit that raised an
unexpected exception (a bug) is never marked done; its exception propagates.

Failures are cached as done only when a re-run would repeat them (a corrupt file stays corrupt). A unit whose error
is transient (network, out of memory, disk full, a decoder killed from outside: ``corpus.errors.TRANSIENT_KINDS``)
gets no marker and runs again next time; ``Executor.retry_errors`` (``--retry-errors``) re-runs exactly the units
whose marker recorded an error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from builders.stages.base import Stage, UnitResult
from corpus.atomic import write_text_atomic
from corpus.errors import TRANSIENT_KINDS, ErrorRow, transient_error

STATE_DIR = "_state"


@dataclass
class StageOutput:
    """All rows and errors of a stage run, in unit-id order; ``ran``/``skipped`` count units."""

    rows: list[dict] = field(default_factory=list)  # stages without ``outputs``
    errors: list[ErrorRow] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    retried: int = 0  # units re-run because their marker recorded an error (``retry_errors``)
    parts: dict[str, list[str]] = field(default_factory=dict)  # table -> parts (relative paths), in unit-id order
    schemas: dict[str, pa.Schema] = field(default_factory=dict)  # table -> its schema (the stage's ``outputs``)

    def merge(self, build_dir: str | Path, table: str, dest: str | Path, sorted_by: str | None = "video_id") -> int:
        """Merge ``table``'s parts, in unit order, into ``dest`` (streaming); returns the number of rows."""
        from corpus.parts import merge_parts

        parts = [Path(build_dir) / p for p in self.parts.get(table, [])]
        return merge_parts(parts, dest, self.schemas[table], sorted_by)

    def read(self, build_dir: str | Path, table: str) -> pa.Table:
        """``table``'s parts as one in-memory table (for per-video tables: a few rows per unit)."""
        schema = self.schemas[table]
        got = [pq.read_table(Path(build_dir) / p).select(schema.names).cast(schema) for p in self.parts.get(table, [])]
        return pa.concat_tables(got) if got else schema.empty_table()


def marker_path(build_dir: str | Path, stage: str, unit_id: str) -> Path:
    digest = hashlib.sha256(unit_id.encode()).hexdigest()[:24]
    return Path(build_dir) / STATE_DIR / stage / f"{digest}.json"


def load_done(build_dir: str | Path, stage: Stage, row: dict, retry_errors: bool = False) -> UnitResult | None:
    """The recorded result of a finished unit, or None when it must (re)run (``retry_errors``: also when it
    recorded an error)."""
    path = marker_path(build_dir, stage.name, stage.unit_id(row))
    try:
        marker = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if marker.get("fingerprint") != stage.fingerprint(row):
        return None
    if retry_errors and marker.get("errors"):
        return None
    for rel, size in marker.get("files", {}).items():
        p = Path(build_dir) / rel
        if not p.exists() or (p.is_file() and p.stat().st_size != size):
            return None
    return UnitResult(
        rows=marker["rows"],
        files=list(marker.get("files", {})),
        errors=[ErrorRow(**e) for e in marker["errors"]],
        parts=marker.get("parts", {}),
    )


def _file_size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def mark_done(build_dir: str | Path, stage: Stage, row: dict, result: UnitResult) -> None:
    path = marker_path(build_dir, stage.name, stage.unit_id(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {}
    for rel in result.files:
        p = Path(build_dir) / rel
        files[rel] = p.stat().st_size if p.is_file() else -1
    marker = {
        "unit": stage.unit_id(row),
        "fingerprint": stage.fingerprint(row),
        "rows": result.rows,
        "files": {k: v for k, v in files.items() if v >= 0},
        "errors": [e.to_dict() for e in result.errors],
        "parts": result.parts,
    }
    write_text_atomic(path, json.dumps(marker, default=str))


def write_unit_parts(build_dir: str, stage: Stage, row: dict, result: UnitResult) -> None:
    """Write the unit's rows as one Parquet part per output table (sorted by the table's keys), record them in
    ``result.parts`` and ``result.files``, and drop the rows from the result: they never travel to the driver.
    A table the unit no longer has rows for loses its old part."""
    from corpus.parts import part_relpath, write_part
    from corpus.schemas import to_table

    by_table: dict[str, list[dict]] = {}
    for r in result.rows:
        by_table.setdefault(stage.route(r), []).append(r)
    for table, (schema, sort_by) in stage.outputs.items():
        rel = part_relpath(stage.name, table, stage.unit_id(row))
        if table in by_table:
            write_part(Path(build_dir) / rel, to_table(by_table[table], schema, sort_by), schema)
            result.parts[table] = rel
            result.files.append(rel)
        else:
            (Path(build_dir) / rel).unlink(missing_ok=True)
    result.rows = []


def run_unit(build_dir: str, stage: Stage, row: dict, interrupted: Callable[[], bool] = lambda: False) -> UnitResult:
    """Run one unit in the current process and mark it done, unless its errors may go away on retry or the build
    was interrupted while it ran (an ffmpeg killed by Ctrl-C fails like a bad file, and must not be cached as one).

    Out of memory and a full disk inside the unit become a transient error row (the build goes on, the unit runs
    again next time); any other exception is a bug and propagates.
    """
    try:
        result = stage.process(row)
    except (MemoryError, OSError) as exc:
        err = transient_error(exc)
        if err is None:
            raise
        result = UnitResult(errors=[ErrorRow.from_exception(stage.name, err, video_id=row.get("video_id"), uri=None)])
    if stage.outputs:
        write_unit_parts(build_dir, stage, row, result)
    if any(e.kind in TRANSIENT_KINDS for e in result.errors):
        result.cacheable = False
    if result.cacheable and not interrupted():
        mark_done(build_dir, stage, row, result)
    return result


class Executor:
    """Schedules units; subclasses decide where they run. ``run`` returns results in unit-id order.

    ``retry_errors``: re-run the units whose marker recorded an error (the rest stay skipped).
    """

    retry_errors: bool = False

    def run(
        self,
        build_dir: str,
        stage: Stage,
        rows: Iterable[dict],
        on_progress: Callable[[int], None] | None = None,
    ) -> StageOutput:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers; the executor may be used again afterwards."""


def pending_units(build_dir: str, stage: Stage, rows: list[dict], retry_errors: bool) -> tuple[list, dict, int]:
    """Split ``rows`` into (units to run, results of finished units by unit id, how many of those to run are
    retries of recorded failures)."""
    todo, results, retried = [], {}, 0
    for row in rows:
        done = load_done(build_dir, stage, row)
        if done is not None and retry_errors and done.errors:
            retried += 1
            done = None
        if done is None:
            todo.append(row)
        else:
            results[stage.unit_id(row)] = done
    return todo, results, retried


def gather(stage: Stage, rows: list[dict], results: dict[str, UnitResult], out: StageOutput) -> StageOutput:
    """Fill ``out`` with every unit's rows (or parts) and errors, in unit-id order (``rows`` sorted by unit id)."""
    out.schemas = {table: schema for table, (schema, _) in stage.outputs.items()}
    for row in rows:
        res = results[stage.unit_id(row)]
        out.rows.extend(res.rows)
        out.errors.extend(res.errors)
        for table, part in res.parts.items():
            out.parts.setdefault(table, []).append(part)
    return out


def check_columns(stage: Stage, rows: list[dict]) -> None:
    """Fail before any unit starts when input rows lack a column the stage reads."""
    if not rows:
        return
    missing = [c for c in stage.requires if c not in rows[0]]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs columns {missing} that its input rows lack")
