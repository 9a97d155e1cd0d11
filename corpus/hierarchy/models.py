"""The documented ingestion format (one JSON object per video; a JSON file, a JSONL file or a folder of them).

A record is parsed level by level, so one malformed operation or frame becomes an error row and the rest of its
video still imports. See ``docs/hierarchy.md`` for a complete example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_HMS = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def parse_time(value: Any) -> float:
    """Seconds from a number, a numeric string or ``[HH:]MM:SS[.fff]``; raises ``ValueError`` otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    m = _HMS.match(text)
    if m:
        h, mnt, s = m.groups()
        return int(h or 0) * 3600 + int(mnt) * 60 + float(s)
    return float(text)


def humanize(label: str) -> str:
    """``s1_cavity_exploration`` → ``cavity exploration``: a label made readable as fallback text."""
    text = re.sub(r"^s\d+_", "", label).replace("_", " ").replace("-", " ")
    return re.sub(r"\s+", " ", text).strip()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _time(value: Any) -> Any:
    return parse_time(value) if value is not None else value


class OperationRecord(_Record):
    start_s: float
    end_s: float
    label: str | None = None
    text: str | None = None

    _times = field_validator("start_s", "end_s", mode="before")(_time)


class FrameRecord(_Record):
    t_s: float
    label: str | None = None
    caption: str | None = None

    _times = field_validator("t_s", mode="before")(_time)


class VideoRecord(_Record):
    """One video with its operations and frames (the JSON/JSONL ingestion format)."""

    video_id: str = Field(min_length=1)
    surgery_type: str | None = None
    title: str | None = None
    description: str | None = None
    duration_s: float | None = Field(default=None, gt=0)
    url: str | None = None
    license: str | None = None
    source: str | None = None
    path: str | None = None
    group: str | None = None
    operations: list[dict[str, Any]] = []
    frames: list[dict[str, Any]] = []

    _times = field_validator("duration_s", mode="before")(_time)


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: problem (got value)``, one per ``;``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})"[:300])
    return "; ".join(parts)


# Frames as importers give them (before validation): ``_where`` names the file and line (or item) of each.
FRAME_ROWS = pa.schema(
    [
        ("video_id", pa.string()),
        ("t_s", pa.float64()),
        ("label", pa.string()),
        ("caption", pa.string()),
        ("_where", pa.string()),
    ]
)


class FrameRows:
    """Frame rows gathered column by column while importing (never a dict per frame); ``table()`` gives them in
    ``FRAME_ROWS``."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in FRAME_ROWS.names}

    def add(self, video_id: str, t_s: float, label: str | None, caption: str | None, where: str) -> None:
        for name, value in zip(FRAME_ROWS.names, (video_id, t_s, label, caption, where), strict=True):
            self.columns[name].append(value)

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=FRAME_ROWS)


@dataclass
class Hierarchy:
    """Rows of the three levels plus error rows: videos and operations as plain dicts in table schema, frames as an
    Arrow table (``FRAME_ROWS`` as imported; ``corpus.hierarchy.schemas.FRAMES`` columns once validated or loaded).

    Imported rows carry ``_where`` (``file:line`` or ``file#item``) so validation can name where a bad row came from.
    """

    videos: list[dict] = field(default_factory=list)
    operations: list[dict] = field(default_factory=list)
    frames: pa.Table = field(default_factory=FRAME_ROWS.empty_table)
    errors: list[dict] = field(default_factory=list)

    def extend(self, other: Hierarchy) -> Hierarchy:
        self.videos += other.videos
        self.operations += other.operations
        self.frames = pa.concat_tables([self.frames, other.frames])
        self.errors += other.errors
        return self

    def error(self, kind: str, message: str, *, video_id: str | None, uri: str | None, detail: str = "") -> None:
        from corpus.hierarchy.schemas import ERROR_STAGE

        self.errors.append(
            {
                "stage": ERROR_STAGE,
                "video_id": video_id,
                "uri": uri,
                "kind": kind,
                "message": message,
                "detail": detail,
            }
        )
