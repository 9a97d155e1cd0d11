"""Public video lists (YouTube ids or URLs with titles, or local copies) as pipeline sources and hierarchy records.

A list is a CSV with a header, a JSONL file (one object per line) or a JSON list of objects. Fields:

- ``youtube_id`` (alias ``youtubeId``, as in LEMON's ``labels.json``) and/or ``url`` (any URL; YouTube watch,
  ``youtu.be``, ``/shorts/`` and ``/embed/`` URLs give the id), and/or ``path`` (a local copy, relative to the
  list's folder): at least one of them;
- ``title``; optional ``surgery_type`` (alias ``procedureName``: a list is joined with ``+``), ``id`` (the native id;
  default: the YouTube id, else the file name stem), ``license``, ``description``; other fields are kept in
  ``extra``.

Two published formats have their own reader (``fmt``):

- ``surgatlas``: a JSON object keyed by YouTube id, each value an object (``surgery``, ``specialty``,
  ``procedure``: the procedure metadata of SurgAtlas, github.com/fil-mp/surgatlas README);
- ``ophnet``: OphNet's ``OphNet2024_surgery.csv`` (``video_id,surgery``; ids such as ``case_0358``, surgery
  label ids such as ``"1,2"``): ids only, so ``id_uri`` (``/data/ophnet/{id}.mp4``) places each video.

Each row becomes a :class:`ListedVideo` whose ``uri`` is the local ``path`` when given (the file is used in place),
else ``youtube://<id>`` for YouTube videos (fetched with yt-dlp by ``builders/stages/youtube.py``), else the URL,
else ``id_uri`` with the native id. A row without a usable id/url/path, with a malformed YouTube id or a repeated
native id becomes an error row naming the file and line; the rest imports.

>>> vl = read_video_list("lists/lemon.json")  # doctest: +SKIP
>>> src = to_source(vl, "lemon", domain="laparoscopy")  # doctest: +SKIP
>>> write_source_manifest(src, "manifests/sources/lemon.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from corpus.errors import AnnotationError, ErrorRow
from corpus.ids import native_id_from_path
from corpus.manifest import Domain, Source, VideoEntry

STAGE = "video-list"
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
NATIVE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
YOUTUBE_HOSTS = frozenset(
    {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be", "www.youtube-nocookie.com"}
)
ALIASES = {"youtubeId": "youtube_id", "procedureName": "surgery_type"}
FIELDS = ("youtube_id", "url", "path", "title", "surgery_type", "id", "license", "description")


def youtube_id_of(uri: str) -> str | None:
    """The video id of ``youtube://<id>`` or a YouTube URL (watch, youtu.be, shorts, embed, live), else None."""
    if uri.startswith("youtube://"):
        return uri.removeprefix("youtube://").strip("/") or None
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in YOUTUBE_HOSTS:
        return None
    if host == "youtu.be":
        return parts.path.strip("/").split("/")[0] or None
    if parts.path == "/watch":
        return (parse_qs(parts.query).get("v") or [None])[0]
    segs = parts.path.strip("/").split("/")
    if len(segs) >= 2 and segs[0] in ("shorts", "embed", "live", "v"):
        return segs[1]
    return None


def youtube_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


@dataclass(frozen=True)
class ListedVideo:
    """One video of a list; ``uri`` is what the fetch stage gets (local path, ``youtube://<id>`` or the URL)."""

    native_id: str
    uri: str
    title: str | None = None
    youtube_id: str | None = None
    url: str | None = None
    path: str | None = None
    surgery_type: str | None = None
    license: str | None = None
    description: str | None = None
    where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VideoList:
    videos: list[ListedVideo] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)


def _rows(path: Path, fmt: str = "auto") -> list[tuple[str, Any]]:
    """``(where, raw row)`` of a CSV, JSONL, JSON list or SurgAtlas JSON object; raises ``AnnotationError`` when
    the file is unusable."""
    if not path.is_file():
        raise AnnotationError(f"{path}: video list not found")
    if path.suffix.lower() == ".csv":
        needed = {"video_id"} if fmt == "ophnet" else {"youtube_id", "youtubeId", "url", "path"}
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in reader.fieldnames or []]
            if not needed & set(header):
                raise AnnotationError(
                    f"{path}:1: a video list needs a {' or '.join(sorted(needed))} column (header: {header})"
                )
            reader.fieldnames = ["id" if fmt == "ophnet" and c == "video_id" else c for c in header]
            return [(f"{path}:{reader.line_num}", row) for row in reader]
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "surgatlas":
        return _keyed_rows(path, text)
    if path.suffix.lower() == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    out.append((f"{path}:{n}", f"not valid JSON: {exc.msg}"))
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: a JSON video list must be a list of objects (got {type(data).__name__})")
    return [(f"{path}#{i}", row) for i, row in enumerate(data)]


def _keyed_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    """SurgAtlas' JSON object ``{youtube_id: {surgery, specialty, procedure}}`` as rows; ``where`` gives the line of
    each key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON: column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}:1: a SurgAtlas list must be a JSON object keyed by YouTube id")
    out, pos = [], 0
    for key, value in data.items():
        found = text.find(json.dumps(key), pos)
        pos = found if found >= 0 else pos
        where = f"{path}:{text.count(chr(10), 0, pos) + 1}"
        row = {**value, "youtube_id": key} if isinstance(value, dict) else f"{key!r}: expected an object"
        out.append((where, row))
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = "+".join(str(v) for v in value)
    value = str(value).strip()
    return value or None


def read_video_list(path: str | Path, fmt: str = "auto", id_uri: str | None = None) -> VideoList:
    """Parse a video list (see the module docstring); bad rows become error rows, the rest imports."""
    path = Path(path)
    out = VideoList()
    seen: dict[str, str] = {}

    def bad(where: str, problem: str, vid: str | None = None) -> None:
        out.errors.append(ErrorRow(STAGE, vid, str(path), "bad_row", f"{where}: {problem}"))

    for where, raw in _rows(path, fmt):
        if isinstance(raw, str):
            bad(where, raw)
            continue
        if not isinstance(raw, dict):
            bad(where, f"expected an object (got {type(raw).__name__})")
            continue
        row = {ALIASES.get(k.strip(), k.strip()): v for k, v in raw.items() if k}
        val = {k: _text(row.get(k)) for k in FIELDS}
        extra = {k: v for k, v in row.items() if k not in FIELDS}
        yid = val["youtube_id"]
        if yid is None and val["url"]:
            yid = youtube_id_of(val["url"])
        if yid is not None and not YOUTUBE_ID.match(yid):
            bad(where, f"malformed YouTube id {yid!r} (11 characters of A-Z a-z 0-9 _ -)")
            continue
        local = None
        if val["path"]:
            p = Path(val["path"]).expanduser()
            local = str(p if p.is_absolute() else (path.parent / p).resolve())
        if local:
            uri = local
        elif yid:
            uri = f"youtube://{yid}"
        elif val["url"]:
            uri = val["url"]
        elif id_uri and val["id"] and NATIVE_ID.match(val["id"]):
            uri = id_uri.format(id=val["id"])
        elif id_uri:
            bad(where, f"needs a video id of letters, digits, _ . - (got {val['id']!r})")
            continue
        else:
            bad(where, "needs a youtube_id, url or path")
            continue
        native = val["id"] or yid or native_id_from_path(uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        if native in seen:
            bad(where, f"native id {native!r} already listed at {seen[native]}", native)
            continue
        seen[native] = where
        out.videos.append(
            ListedVideo(
                native_id=native,
                uri=uri,
                title=val["title"],
                youtube_id=yid,
                url=val["url"] or (youtube_url(yid) if yid else None),
                path=local,
                surgery_type=val["surgery_type"],
                license=val["license"],
                description=val["description"],
                where=where,
                extra=extra,
            )
        )
    return out


def to_source(
    vl: VideoList,
    name: str,
    *,
    domain: Domain = "open",
    license: str = "see each video's uploader",
    homepage: str | None = None,
) -> Source:
    """A source manifest listing every video (``access: youtube`` when any video is fetched from YouTube)."""
    if not vl.videos:
        raise AnnotationError(f"source {name!r}: the video list has no usable videos")
    remote = [v for v in vl.videos if v.path is None]
    access = "youtube" if any(v.uri.startswith("youtube://") for v in remote) else ("http" if remote else "local")
    return Source(
        name=name,
        domain=domain,
        license=license,
        access=access,
        videos=tuple(VideoEntry(uri=v.uri, id=v.native_id) for v in vl.videos),
        homepage=homepage,
    )


def write_source_manifest(source: Source, path: str | Path) -> Path:
    """Write a source manifest YAML (loadable with ``corpus.manifest.load_source``)."""
    path = Path(path)
    data = source.model_dump(mode="json", exclude_none=True, exclude={"root"})
    data["videos"] = [{k: v for k, v in e.items() if v is not None} for e in data["videos"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def to_records(vl: VideoList, source: str) -> list[dict]:
    """Video-level records in the hierarchy ingestion format (``surgcorpus hierarchy import``): ids, titles, urls."""
    keep = ("title", "surgery_type", "url", "license", "description", "path")
    return [
        {"video_id": f"{source}/{v.native_id}", "source": source}
        | {k: getattr(v, k) for k in keep if getattr(v, k) is not None}
        for v in vl.videos
    ]
