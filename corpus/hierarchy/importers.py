"""Importers into the hierarchy: the documented JSON/JSONL format, plain CSVs, ActivityNet JSON, SurgVLP-style
narration CSVs and MultiBypass140 phase/step JSON.

Each returns a :class:`Hierarchy` of unvalidated rows (every row knows the file and line it came from). A malformed
row becomes an error row; a file that cannot be read at all raises :class:`AnnotationError` naming it.

>>> h = read_csvs(videos="videos.csv", operations="operations.csv")  # doctest: +SKIP
>>> h = validate(h)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from corpus.errors import AnnotationError
from corpus.hierarchy.models import (
    FrameRecord,
    FrameRows,
    Hierarchy,
    OperationRecord,
    VideoRecord,
    humanize,
    parse_time,
    validation_message,
)

Format = Literal["auto", "records", "csv", "activitynet", "narration", "multibypass"]
MULTIBYPASS_EVENTS = frozenset({"out_of_body", "severe_index"})


def _resolve(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not files:
            raise AnnotationError(f"{path}: no {'/'.join(suffixes)} files in this folder")
        return files
    if not path.is_file():
        raise AnnotationError(f"{path}: file not found")
    return [path]


# -- the documented JSON / JSONL format --------------------------------------------------------------------------


def _record_rows(h: Hierarchy, frames: FrameRows, obj: Any, where: str, base: Path) -> None:
    uri = where.rsplit(":", 1)[0].rsplit("#", 1)[0]
    vid = obj.get("video_id") if isinstance(obj, dict) else None
    try:
        rec = VideoRecord.model_validate(obj)
    except ValidationError as exc:
        h.error("bad_record", f"{where}: video {vid}: {validation_message(exc)}", video_id=vid, uri=uri)
        return
    h.videos.append(
        {
            **rec.model_dump(exclude={"operations", "frames", "group", "path"}),
            "group_id": rec.group,
            "path": _resolve(rec.path, base),
            "_where": where,
        }
    )
    for i, op in enumerate(rec.operations):
        at = f"{where}: video {rec.video_id}: operations[{i}]"
        try:
            o = OperationRecord.model_validate(op)
        except ValidationError as exc:
            h.error("bad_row", f"{at}: {validation_message(exc)}", video_id=rec.video_id, uri=uri)
            continue
        h.operations.append({"video_id": rec.video_id, **o.model_dump(), "_where": at})
    for i, fr in enumerate(rec.frames):
        at = f"{where}: video {rec.video_id}: frames[{i}]"
        try:
            f = FrameRecord.model_validate(fr)
        except ValidationError as exc:
            h.error("bad_row", f"{at}: {validation_message(exc)}", video_id=rec.video_id, uri=uri)
            continue
        frames.add(rec.video_id, f.t_s, f.label, f.caption, at)


def read_records(path: str | Path) -> Hierarchy:
    """The documented format: a ``.json`` file (one video object or a list of them), a ``.jsonl`` file (one video
    per line) or a folder of such files. Relative media ``path`` values resolve against the file's folder."""
    h, frames = Hierarchy(), FrameRows()
    for file in _files(Path(path), (".json", ".jsonl")):
        if file.suffix == ".jsonl":
            for lineno, line in enumerate(file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    h.error("bad_record", f"{file}:{lineno}: not valid JSON: {exc.msg}", video_id=None, uri=str(file))
                    continue
                _record_rows(h, frames, obj, f"{file}:{lineno}", file.parent)
        else:
            data = _load_json(file)
            items = data if isinstance(data, list) else [data]
            for i, obj in enumerate(items):
                _record_rows(h, frames, obj, f"{file}#{i}" if isinstance(data, list) else str(file), file.parent)
    h.frames = frames.table()
    return h


# -- plain CSVs --------------------------------------------------------------------------------------------------


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a CSV with a header; raises naming the file when a required column is missing."""
    if not path.is_file():
        raise AnnotationError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise AnnotationError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}


def _opt(row: dict[str, str], name: str) -> str | None:
    value = row.get(name)
    return value if value not in (None, "") else None


def read_csvs(
    videos: str | Path | None = None, operations: str | Path | None = None, frames: str | Path | None = None
) -> Hierarchy:
    """Plain CSVs with headers.

    - videos: ``video_id,title,url,duration_s[,surgery_type,description,license,source,path,group]``
    - operations: ``video_id,start_s,end_s,label[,text]``
    - frames: ``video_id,t_s[,label,caption]``

    Times are seconds or ``[HH:]MM:SS[.fff]``; a row with an unreadable number becomes an error row.
    """
    h = Hierarchy()
    if videos is not None:
        path = Path(videos)
        for line, row in _csv_rows(path, ("video_id", "title", "url", "duration_s")):
            where = f"{path}:{line}"
            try:
                duration = parse_time(row["duration_s"]) if _opt(row, "duration_s") else None
            except ValueError as exc:
                h.error(
                    "bad_row",
                    f"{where}: video {row['video_id']}: duration_s: {exc}",
                    video_id=row["video_id"],
                    uri=str(path),
                )
                continue
            h.videos.append(
                {
                    "video_id": row["video_id"],
                    "title": _opt(row, "title"),
                    "url": _opt(row, "url"),
                    "duration_s": duration,
                    "surgery_type": _opt(row, "surgery_type"),
                    "description": _opt(row, "description"),
                    "license": _opt(row, "license"),
                    "source": _opt(row, "source"),
                    "path": _resolve(_opt(row, "path"), path.parent),
                    "group_id": _opt(row, "group") or _opt(row, "group_id"),
                    "_where": where,
                }
            )
    if operations is not None:
        path = Path(operations)
        for line, row in _csv_rows(path, ("video_id", "start_s", "end_s", "label")):
            where = f"{path}:{line}: video {row['video_id']}"
            try:
                start, end = parse_time(row["start_s"]), parse_time(row["end_s"])
            except ValueError as exc:
                h.error("bad_row", f"{where}: start_s/end_s: {exc}", video_id=row["video_id"], uri=str(path))
                continue
            h.operations.append(
                {
                    "video_id": row["video_id"],
                    "start_s": start,
                    "end_s": end,
                    "label": _opt(row, "label"),
                    "text": _opt(row, "text"),
                    "_where": where,
                }
            )
    if frames is not None:
        path, rows = Path(frames), FrameRows()
        for line, row in _csv_rows(path, ("video_id", "t_s")):
            where = f"{path}:{line}: video {row['video_id']}"
            try:
                t = parse_time(row["t_s"])
            except ValueError as exc:
                h.error("bad_row", f"{where}: t_s: {exc}", video_id=row["video_id"], uri=str(path))
                continue
            rows.add(row["video_id"], t, _opt(row, "label"), _opt(row, "caption"), where)
        h.frames = rows.table()
    return h


# -- ActivityNet JSON --------------------------------------------------------------------------------------------


def read_activitynet(path: str | Path, *, source: str | None = None, surgery_type: str | None = None) -> Hierarchy:
    """ActivityNet v1.3 (``{"database": {id: {duration, url, annotations: [{segment, label}]}}}``) or ActivityNet
    Captions (``{id: {duration, timestamps, sentences}}``). Segments become operations; captions their text.
    Video ids become ``<source>/<id>`` when ``source`` is given."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: ActivityNet JSON must be an object (got {type(data).__name__})")
    db = data.get("database", data)
    h = Hierarchy()
    for native, entry in db.items():
        vid = f"{source}/{native}" if source else native
        where = f"{path}: video {vid}"
        if not isinstance(entry, dict):
            h.error("bad_record", f"{where}: entry must be an object", video_id=vid, uri=str(path))
            continue
        try:
            duration = parse_time(entry["duration"]) if entry.get("duration") is not None else None
        except ValueError as exc:
            h.error("bad_record", f"{where}: duration: {exc}", video_id=vid, uri=str(path))
            continue
        h.videos.append(
            {
                "video_id": vid,
                "duration_s": duration,
                "url": entry.get("url"),
                "surgery_type": surgery_type,
                "source": source,
                "title": entry.get("title"),
                "description": entry.get("description"),
                "_where": where,
            }
        )
        if "annotations" in entry:
            segments = [
                (a.get("segment"), a.get("label"), a.get("text") or a.get("sentence")) for a in entry["annotations"]
            ]
            name = "annotations"
        else:
            sentences = entry.get("sentences") or []
            segments = [
                (ts, None, sentences[i] if i < len(sentences) else None)
                for i, ts in enumerate(entry.get("timestamps") or [])
            ]
            name = "timestamps"
        for i, (seg, label, text) in enumerate(segments):
            at = f"{where}: {name}[{i}]"
            try:
                start, end = (parse_time(seg[0]), parse_time(seg[1]))
            except (TypeError, IndexError, ValueError, KeyError) as exc:
                h.error(
                    "bad_row", f"{at}: segment must be [start, end] (got {seg!r}: {exc})", video_id=vid, uri=str(path)
                )
                continue
            h.operations.append(
                {"video_id": vid, "start_s": start, "end_s": end, "label": label, "text": text, "_where": at}
            )
    return h


# -- SurgVLP / PeskaVLP narration CSVs ---------------------------------------------------------------------------


def read_narrations(
    path: str | Path, *, source: str = "narration", level: Literal["frames", "operations"] = "frames"
) -> Hierarchy:
    """Narration CSVs, one per video (``start,end,text``; header optional): the video id is ``<source>/<file stem>``.

    Narration sentences are short, freely overlapping ASR chunks, so by default each becomes a frame caption at the
    chunk's midpoint (``label`` empty); ``level="operations"`` imports them as operations with ``text`` instead.
    """
    h, frames = Hierarchy(), FrameRows()
    for file in _files(Path(path), (".csv",)):
        vid = f"{source}/{file.stem}"
        h.videos.append({"video_id": vid, "source": source, "_where": str(file)})
        with file.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
        if rows and [c.strip().lower() for c in rows[0][:3]] == ["start", "end", "text"]:
            rows = [None, *rows[1:]]  # keep line numbers
        for line, row in enumerate(rows, 1):
            if row is None or not any(c.strip() for c in row):
                continue
            where = f"{file}:{line}: video {vid}"
            try:
                start, end, text = parse_time(row[0]), parse_time(row[1]), ",".join(row[2:]).strip()
            except (IndexError, ValueError) as exc:
                h.error("bad_row", f"{where}: expected start,end,text ({exc})", video_id=vid, uri=str(file))
                continue
            if level == "operations":
                h.operations.append(
                    {"video_id": vid, "start_s": start, "end_s": end, "label": None, "text": text, "_where": where}
                )
            elif end < start:
                h.error("end_before_start", f"{where}: end {end} < start {start}", video_id=vid, uri=str(file))
            else:
                frames.add(vid, round((start + end) / 2, 3), None, text, where)
    h.frames = frames.table()
    return h


# -- MultiBypass140 phase/step JSON ------------------------------------------------------------------------------


def read_multibypass(
    path: str | Path, *, source: str = "multibypass140", surgery_type: str = "roux-en-y gastric bypass"
) -> Hierarchy:
    """MultiBypass140 ``<video>.mp4.json`` files (``{"phases": [...], "steps": [...]}``, times in milliseconds).

    Video ids are ``<source>/<centre>/<video>`` (``multibypass140/bern/BBP01``), as in the pipeline's adapter.

    - phases (ids 0-11, consecutive) become operations: label = phase name, text = readable phase name;
    - ``out_of_body`` and ``severe_index`` (overlay events marked inside phases) become frame rows at the event
      midpoint, labelled with the event name;
    - steps (the finer level) become frame rows at the step midpoint: label = step name, caption = readable step
      name and its phase (``"trocar placement, during preparation"``).
    """
    h, frames = Hierarchy(), FrameRows()
    for file in _files(Path(path), (".json",)):
        name = file.name.split(".", 1)[0]
        centre = file.parent.parent.name if file.parent.name.startswith("labels_") else file.parent.name
        native = f"{centre}/{name}"  # the pipeline's adapter (corpus/sources/multibypass140.py) uses the same ids
        vid = f"{source}/{native}"
        data = _load_json(file)
        if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
            raise AnnotationError(f"{file}: expected an object with a 'phases' list (MultiBypass140 label file)")
        h.videos.append(
            {"video_id": vid, "source": source, "surgery_type": surgery_type, "title": name, "_where": str(file)}
        )
        phases: list[tuple[float, float, str]] = []
        for name in ("phases", "steps"):
            for i, seg in enumerate(data.get(name) or []):
                where = f"{file}: video {vid}: {name}[{i}]"
                try:
                    start, end, label = seg["start"] / 1000.0, seg["end"] / 1000.0, str(seg["label_name"])
                except (TypeError, KeyError) as exc:
                    h.error("bad_row", f"{where}: needs start, end, label_name ({exc!r})", video_id=vid, uri=str(file))
                    continue
                if label in MULTIBYPASS_EVENTS or name == "steps":
                    if end < start:
                        h.error("end_before_start", f"{where}: end {end} < start {start}", video_id=vid, uri=str(file))
                        continue
                    mid = round((start + end) / 2, 3)
                    caption = None
                    if name == "steps":
                        phase = next((p for s, e, p in phases if s <= mid < e), None)
                        caption = humanize(label) + (f", during {humanize(phase)}" if phase else "")
                    frames.add(vid, mid, label, caption, where)
                else:
                    phases.append((start, end, label))
                    h.operations.append(
                        {
                            "video_id": vid,
                            "start_s": start,
                            "end_s": end,
                            "label": label,
                            "text": humanize(label),
                            "_where": where,
                        }
                    )
    h.frames = frames.table()
    return h


# -- dispatch ----------------------------------------------------------------------------------------------------


def sniff_format(path: str | Path) -> Format:
    """Guess the importer from the file name and, for JSON, its top-level shape."""
    path = Path(path)
    first = _files(path, (".json", ".jsonl", ".csv"))[0]
    if first.suffix == ".csv":
        with first.open(encoding="utf-8-sig") as fh:
            head = fh.readline().strip().lower()
        return "csv" if "video_id" in head else "narration"
    if first.suffix == ".jsonl":
        return "records"
    data = _load_json(first)
    if isinstance(data, dict):
        if "phases" in data and "steps" in data:
            return "multibypass"
        if "database" in data:
            return "activitynet"
        if "video_id" not in data and data and all(isinstance(v, dict) and "timestamps" in v for v in data.values()):
            return "activitynet"
    return "records"


def read_any(
    videos: str | Path,
    operations: str | Path | None = None,
    frames: str | Path | None = None,
    *,
    fmt: Format = "auto",
    source: str | None = None,
    surgery_type: str | None = None,
) -> Hierarchy:
    """Import with the named (or sniffed) importer; ``operations``/``frames`` files are only used by ``csv``."""
    fmt = sniff_format(videos) if fmt == "auto" else fmt
    if fmt == "csv":
        return read_csvs(videos, operations, frames)
    if operations is not None or frames is not None:
        raise AnnotationError(
            f"{videos}: format {fmt!r} holds all levels in one input; --operations/--frames are only for CSV imports"
        )
    if fmt == "records":
        return read_records(videos)
    if fmt == "activitynet":
        return read_activitynet(videos, source=source, surgery_type=surgery_type)
    if fmt == "narration":
        return read_narrations(videos, source=source or "narration")
    return read_multibypass(
        videos, source=source or "multibypass140", **({"surgery_type": surgery_type} if surgery_type else {})
    )
