"""Small helpers shared by the source adapters: reading text tables and naming the bad line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from corpus.errors import AnnotationError, MissingInput


def bad(path: Path, line: int | None, problem: str) -> AnnotationError:
    """An ``AnnotationError`` whose message starts with ``file:line:``."""
    where = f"{path}:{line}" if line is not None else str(path)
    return AnnotationError(f"{where}: {problem}")


def lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF, trailing spaces and a BOM removed."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def as_int(path: Path, line: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad(path, line, f"{what} must be an integer (got {value!r})") from None


def as_float(path: Path, line: int, value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise bad(path, line, f"{what} must be a number (got {value!r})") from None


def read_csv(path: Path, delimiter: str = ",", header: tuple[str, ...] | None = None) -> list[tuple[int, dict]]:
    """Rows of a delimited file with a header, as ``(line number, {column: value})``.

    With ``header``, the file's header must contain those columns (compared case-insensitively).
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            cols = [c.strip() for c in next(reader)]
        except StopIteration:
            raise bad(path, 1, "empty file, expected a header line") from None
        if header is not None:
            have = {c.lower() for c in cols}
            missing = [h for h in header if h.lower() not in have]
            if missing:
                raise bad(path, 1, f"header {cols} lacks column(s) {missing} (delimiter {delimiter!r})")
        out = []
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(cols):
                raise bad(path, reader.line_num, f"{len(row)} fields, header has {len(cols)}")
            out.append((reader.line_num, {c.lower(): v.strip() for c, v in zip(cols, row, strict=True)}))
        return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise bad(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None


def find(root: Path, *patterns: str) -> list[Path]:
    """Files under ``root`` matching any glob (``root`` itself may be one file); none found is an error."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise MissingInput(f"{root}: annotation folder not found")
    found = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file()})
    if not found:
        raise MissingInput(f"{root}: no annotation files matching {' or '.join(patterns)}")
    return found
