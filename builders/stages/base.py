"""What a stage is: a named, picklable object with a pure ``process(row)`` over one unit of work.

The executor owns everything around it (skip finished units, record errors, write markers, progress), so the
local executor (and a future Ray executor) run the same stage code unchanged.

A stage declares:

- ``name``: used for ``_state/<name>/`` markers, logs and the ``stage`` column of errors;
- ``requires``: the columns it reads from an input row (checked before any unit starts);
- ``setup()``: checks binaries/libraries once per worker, raising ``ToolMissing`` with how to fix it;
- ``unit_id(row)``: a stable id (never a position in a list);
- ``fingerprint(row)``: a hash of everything the unit's output depends on; a changed fingerprint redoes the unit;
- ``cost(row)``: relative work, for scheduling (longest first);
- ``process(row) -> UnitResult``: output rows, files written (for resume checks) and error rows;
- ``outputs``: the tables its rows go to; the executor then writes each unit's rows as a Parquet part in the worker
  (``corpus.parts``) and the driver merges tables from parts, never holding the rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from corpus.errors import ErrorRow


@dataclass
class UnitResult:
    """What one unit produced: rows for the stage table, files it wrote (relative to the build dir), errors."""

    rows: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    cacheable: bool = True  # False when an error may go away on retry (network): no done marker is written
    parts: dict[str, str] = field(default_factory=dict)  # table -> the Parquet part holding this unit's rows of it


class Stage:
    """Base class of per-unit stages; subclasses implement ``process`` (and usually ``fingerprint``)."""

    name: ClassVar[str] = "stage"
    requires: ClassVar[tuple[str, ...]] = ("video_id",)
    # Tables this stage's rows go to (name -> schema, sort keys within a unit). With outputs, the executor writes
    # each unit's rows as Parquet parts (``corpus.parts``) in the worker, and the driver never receives them.
    outputs: ClassVar[dict[str, tuple[pa.Schema, tuple[str, ...]]]] = {}

    def route(self, row: dict) -> str:
        """The output table a row belongs to (stages with several outputs override this)."""
        return next(iter(self.outputs))

    def setup(self) -> None:
        """Check tools once per worker process."""

    def unit_id(self, row: dict) -> str:
        return row["video_id"]

    def fingerprint(self, row: dict) -> str:
        return stable_hash(row)

    def cost(self, row: dict) -> float:
        """Relative work of a unit; the executor starts the costliest first so no core idles at the end."""
        return 1.0

    def process(self, row: dict) -> UnitResult:
        raise NotImplementedError


def stable_hash(*parts: Any) -> str:
    """Short sha256 of JSON-serialisable parts (sorted keys), for fingerprints."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
