"""Small helpers shared by the source adapters: reading text tables and naming the bad line.

Big per-frame files are read whole-column with :func:`read_columns` (one ``pyarrow.csv`` read per file); the
checks run on the columns, and only when one fails is the file read again line by line, to name the line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

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


_SPACES = re.compile(rb"\t+")
_LINE_ENDS = re.compile(rb"^[ \t]+|[ \t]+$", re.M)
_INT = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass
class Columns:
    """A text table read whole-column: ``table`` holds one string column per field (data rows only, blank lines
    left out); ``line(k)`` gives the number and text of data row ``k`` in the file, for error messages."""

    path: Path
    table: pa.Table
    header: bool
    fields: Callable[[str], list[str]]  # how a line splits into fields (to name a malformed line)

    @cached_property
    def _lines(self) -> list[tuple[int, str]]:
        rows = lines(self.path)
        return rows[1:] if self.header else rows

    def line(self, k: int) -> tuple[int, str]:
        return self._lines[k]

    def check(self, *problems: tuple[np.ndarray, Callable[[int], str]]) -> None:
        """Raise for the earliest data row flagged by any ``(mask, message(row))`` (the first listed wins a tie),
        naming its line; do nothing when no mask flags a row."""
        best: tuple[int, Callable[[int], str]] | None = None
        for mask, message in problems:
            hits = np.flatnonzero(mask)
            if hits.size and (best is None or hits[0] < best[0]):
                best = (int(hits[0]), message)
        if best is not None:
            k, message = best
            raise bad(self.path, self.line(k)[0], message(k))

    def ints(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Column ``name`` as int64 (0 where it is not an integer) and the mask of rows where it is not."""
        col = self.table.column(name)
        if pa.types.is_integer(col.type):  # read_columns converted it while parsing: every value is an integer
            return col.to_numpy(), np.zeros(len(col), bool)
        ok = pc.match_substring_regex(col, _INT.pattern)
        digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(pc.if_else(ok, col, "0")), r"^\+", "")
        return pc.cast(digits, pa.int64()).to_numpy(), ~ok.to_numpy(zero_copy_only=False)

    def not_int(self, name: str, what: str) -> Callable[[int], str]:
        """The message for a value of ``name`` that is not an integer."""
        return lambda k: f"{what} must be an integer (got {self.table.column(name)[k].as_py()!r})"


def not_increasing(frames: np.ndarray, what: str = "frame") -> tuple[np.ndarray, Callable[[int], str]]:
    """A problem for :meth:`Columns.check`: rows whose frame does not exceed the previous row's."""
    mask = np.concatenate([[False], np.diff(frames) <= 0])
    return mask, lambda k: f"{what} {frames[k]} does not increase (previous {frames[k - 1]})"


def read_columns(
    path: Path,
    names: tuple[str, ...],
    *,
    separators: str = " \t",
    collapse: bool = True,
    has_header: Callable[[str], bool] = lambda first: False,
    malformed: str = "expected {n} fields",
    ints: tuple[str, ...] = (),
) -> Columns:
    """A delimited text file as string columns ``names``, read in one ``pyarrow.csv`` pass.

    With ``collapse``, fields are split at any run of ``separators`` or whitespace (``a  b`` is two fields), else
    at each occurrence of the one ``separators`` character, with surrounding whitespace trimmed. CRLF, a BOM and
    blank lines are allowed; ``has_header(first non-blank line)`` says whether that line is a header to skip. A
    line with another number of fields raises naming it (``malformed``, formatted with ``n``, ``got`` and
    ``text``). Columns named in ``ints`` are converted to int64 while parsing when every value is a plain integer
    (else they stay strings for :meth:`Columns.ints` to check).
    """
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(path, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = raw.removeprefix(b"\xef\xbb\xbf")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if collapse:  # every separator and whitespace becomes a tab; runs of tabs become one below
        separators += " \t"
        others = separators.replace("\t", "")
        if any(c.encode() in data for c in others):
            data = data.translate(bytes.maketrans(others.encode(), b"\t" * len(others)))
        delimiter = "\t"
    elif len(separators) == 1:
        delimiter = separators
    else:
        raise ValueError(f"without collapse, give one separator (got {separators!r})")
    if data:  # byte masks: two-byte substring searches cost more than the whole CSV parse
        buf = np.frombuffer(data, np.uint8)
        tab, nl = buf == 9, buf == 10
        if collapse and (tab[1:] & tab[:-1]).any():
            data = _SPACES.sub(b"\t", data)
            buf = np.frombuffer(data, np.uint8)
            tab, nl = buf == 9, buf == 10
        ws = tab | (buf == 32)
        if ws[0] or ws[-1] or (nl[:-1] & ws[1:]).any() or (ws[:-1] & nl[1:]).any():
            data = _LINE_ENDS.sub(b"", data)
    body = pa.py_buffer(data)
    start = len(data) - len(data.lstrip(b"\n"))
    end = data.find(b"\n", start)
    first = data[start : end if end >= 0 else len(data)].decode()
    header = start < len(data) and has_header(first)
    if header:
        start = end + 1 if end >= 0 else len(data)
    pattern = re.compile("[" + re.escape(separators) + "]" + ("+" if collapse else ""))
    if collapse:
        split_line: Callable[[str], list[str]] = lambda text: [p for p in pattern.split(text) if p]  # noqa: E731
    else:
        split_line = lambda text: [p.strip() for p in pattern.split(text)]  # noqa: E731
    invalid: list[str] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append(row.text)
        return "skip"

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        invalid.clear()
        return pa_csv.read_csv(
            pa.BufferReader(body.slice(start)),
            read_options=pa_csv.ReadOptions(column_names=list(names), use_threads=False, block_size=1 << 24),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False, invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types={**dict.fromkeys(names, pa.string()), **types},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        table = read(dict.fromkeys(ints, pa.int64()))
    except pa.ArrowInvalid:  # a value that is not a plain integer: read strings, and let the checks name it
        table = read({})
    cols = Columns(path, table, header, split_line)
    if invalid:
        for n, text in cols._lines:
            if len(split_line(text)) != len(names):
                raise bad(path, n, malformed.format(n=len(names), got=len(split_line(text)), text=text))
        raise bad(path, None, f"malformed line {invalid[0]!r}")  # the line scan above always finds it
    if not collapse:
        cols.table = pa.table(
            {
                c: pc.utf8_trim_whitespace(col) if pa.types.is_string(col.type) else col
                for c, col in zip(names, cols.table.columns, strict=True)
            }
        )
    return cols
