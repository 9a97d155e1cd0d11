"""annotate: parse each source's native annotations (``annotations: {adapter, path}``) into the unified tables.

The adapter (``corpus.sources.ADAPTERS``) names videos by its own native ids (a JIGSAWS trial, a Cholec80
``videoNN``); a build names them by file path. An annotation applies to every video of the source whose file
stem equals the annotated native id or extends it with ``_``/``-`` (a trial's two camera views share its
gestures). Rows are copied per matching video with the build's ``video_id``; ``annotation_id`` keeps the
adapter's id.

Errors (an unknown adapter, a missing or malformed annotation file, a video no annotation applies to) become error
rows; nothing else stops.

The parsed rows are attached to the build's videos with one Arrow join per table (annotation id -> the videos it
applies to), never a Python dict per frame: Cholec80 alone has millions of frame labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import pyarrow as pa

from corpus.annotations import FRAME_LABELS, SEGMENTS
from corpus.errors import ErrorRow, SurgcorpusError
from corpus.manifest import Source

STAGE = "annotate"
SEGMENTS_OUT = pa.schema([*SEGMENTS, ("annotation_id", pa.string()), ("source", pa.string())])
FRAME_LABELS_OUT = pa.schema([*FRAME_LABELS, ("annotation_id", pa.string()), ("source", pa.string())])


@dataclass
class Annotated:
    """One source's annotations with the build's video ids (``SEGMENTS_OUT`` / ``FRAME_LABELS_OUT`` tables)."""

    segments: pa.Table = field(default_factory=SEGMENTS_OUT.empty_table)
    frame_labels: pa.Table = field(default_factory=FRAME_LABELS_OUT.empty_table)
    errors: list[ErrorRow] = field(default_factory=list)


def _attach(table: pa.Table, mapping: pa.Table, schema: pa.Schema, sort_by: tuple[str, ...]) -> pa.Table:
    """Rows of ``table`` (keyed by the adapter's ``video_id``) once per build video they apply to."""
    joined = table.rename_columns(["annotation_id" if c == "video_id" else c for c in table.column_names]).join(
        mapping, "annotation_id", join_type="inner"
    )
    return joined.select(schema.names).cast(schema).sort_by([(k, "ascending") for k in sort_by])


def _matcher(native_ids: Iterable[str]):
    """A function from a video's native id to the annotated native id that applies to it (or None)."""
    by_stem = {PurePosixPath(n).name: n for n in native_ids}
    pattern = re.compile(r"^(.*?)(?:[_-][^_-]*)?$")

    def match(video_native: str) -> str | None:
        stem = PurePosixPath(video_native).name
        while stem:
            if stem in by_stem:
                return by_stem[stem]
            shorter = pattern.match(stem).group(1)  # drop the last _suffix / -suffix
            if shorter == stem:
                return None
            stem = shorter
        return None

    return match


def annotate_source(src: Source, videos: list[dict]) -> Annotated:
    """Parse one source's annotations and attach them to its ``videos`` (rows with video_id, native_id, uri)."""
    from corpus.sources import ADAPTERS

    out = Annotated()
    spec = src.annotations
    if spec is None:
        return out
    path = Path(spec.path)
    path = path if path.is_absolute() else Path(src.root) / path
    adapter = ADAPTERS.get(spec.adapter)
    if adapter is None:
        out.errors.append(
            ErrorRow(
                STAGE,
                None,
                str(path),
                "annotation",
                f"source {src.name!r}: unknown annotation adapter {spec.adapter!r} "
                f"(known: {', '.join(sorted(ADAPTERS))})",
            )
        )
        return out
    try:
        parsed = adapter.parse(path)
    except SurgcorpusError as exc:
        out.errors.append(ErrorRow.from_exception(STAGE, exc, video_id=None, uri=str(path)))
        return out
    out.errors += [replace(e, stage=STAGE) for e in parsed.errors]  # rows the adapter skipped; the rest applies
    native_of = {aid: aid.split("/", 1)[1] if "/" in aid else aid for aid in parsed.video_ids()}
    match = _matcher(native_of.values())
    annotated_by_native = {n: a for a, n in native_of.items()}
    pairs: list[tuple[str, str]] = []  # (annotation id, build video id)
    for v in videos:
        hit = match(v["native_id"])
        if hit is None:
            out.errors.append(
                ErrorRow(
                    STAGE,
                    v["video_id"],
                    v["uri"],
                    "missing_annotation",
                    f"{v['uri']}: no annotation in {path} (adapter {spec.adapter}) for this video",
                )
            )
            continue
        pairs.append((annotated_by_native[hit], v["video_id"]))
    mapping = pa.table(
        {
            "annotation_id": pa.array([a for a, _ in pairs], pa.string()),
            "video_id": pa.array([v for _, v in pairs], pa.string()),
            "source": pa.array([src.name] * len(pairs), pa.string()),
        }
    )
    tables = parsed.tables()
    out.segments = _attach(tables["segments"], mapping, SEGMENTS_OUT, ("video_id", "level", "start_frame"))
    out.frame_labels = _attach(tables["frame_labels"], mapping, FRAME_LABELS_OUT, ("video_id", "level", "frame"))
    return out
