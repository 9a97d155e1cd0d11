"""Resolving a manifest into plan rows: every source's videos (glob, explicit list or public video list), with
official splits applied where a source takes only some of them (``use_splits``), sources whose license the
manifest excludes (``exclude_licenses``) left out, and each video planned once across sources
(``corpus.overlap``: the first source in the manifest keeps it; held-out videos stay out everywhere). No file is
opened but the lists and split files; problems become error rows.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from corpus.errors import AnnotationError, ErrorRow, ManifestError
from corpus.ids import native_id_from_path, video_id
from corpus.licenses import excluded_by
from corpus.listed_source import listed_videos
from corpus.manifest import CorpusManifest, GlobSpec, Source, VideoListSpec
from corpus.overlap import Duplicate, deduplicate, video_keys
from corpus.splits import SPLITS


def official_splits(src: Source) -> dict[str, str]:
    """native id -> split from a source's official splits (inline lists or a CSV/YAML file)."""
    if src.splits is None:
        return {}
    out: dict[str, str] = {}
    for split in SPLITS:
        for nid in getattr(src.splits, split):
            out[nid] = split
    if src.splits.file:
        path = Path(src.splits.file)
        path = path if path.is_absolute() else Path(src.root) / path
        if not path.exists():
            raise ManifestError(f"{path}: official split file of source {src.name!r} not found")
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
            for split in SPLITS:
                for nid in data.get(split, []) or []:
                    out[str(nid)] = split
        else:
            with open(path, newline="") as fh:
                for i, rec in enumerate(csv.DictReader(fh), start=2):
                    if rec.get("split") not in SPLITS or not rec.get("video"):
                        raise ManifestError(f"{path}:{i}: expected columns video,split with split in {SPLITS}")
                    out[rec["video"]] = rec["split"]
    return out


@dataclass
class ResolvedPlan:
    """Plan rows (sorted by video id), error rows, the listed videos planned in another source or held out
    (``duplicates``), and the sources left out by ``exclude_licenses`` (source -> matching entry)."""

    rows: list[dict] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)


def plan_videos(manifest: CorpusManifest) -> tuple[list[dict], list[ErrorRow]]:
    """Resolve every source's video list into plan rows (sorted by video id); problems become error rows."""
    plan = resolve_plan(manifest)
    return plan.rows, plan.errors


def resolve_plan(manifest: CorpusManifest) -> ResolvedPlan:
    """Every source's videos, each planned once (see the module docstring)."""
    out = ResolvedPlan()
    per_source: list[tuple[str, list[dict]]] = []
    held_out: dict[str, tuple[str, str]] = {}
    for src in manifest.sources:
        rows: list[dict] = []
        errors = out.errors
        if (term := excluded_by(src, manifest.exclude_licenses)) is not None:
            # resolved all the same (quietly), so that the videos it holds out stay out of the other sources
            out.excluded[src.name], errors = term, []
        else:
            per_source.append((src.name, rows))
        entries: list[tuple[str, str, str | None, int | None]] = []  # (native id, uri, sha256, bytes)
        if isinstance(src.videos, GlobSpec):
            if "://" in src.root:
                errors.append(
                    ErrorRow(
                        "plan",
                        None,
                        src.root,
                        "manifest",
                        f"source {src.name!r}: a glob needs a local root, got {src.root}",
                    )
                )
                continue
            root = Path(src.root)
            if not root.is_dir():
                errors.append(
                    ErrorRow(
                        "plan",
                        None,
                        str(root),
                        "missing_file",
                        f"source {src.name!r}: root folder {root} does not exist",
                    )
                )
                continue
            excluded = {p for pat in src.videos.exclude for p in root.glob(pat)}
            for p in sorted(root.glob(src.videos.glob)):
                if p.is_file() and p not in excluded:
                    rel = p.relative_to(root).as_posix()
                    entries.append((native_id_from_path(rel), str(p), None, None))
        elif isinstance(src.videos, VideoListSpec):
            try:
                listed = listed_videos(src.videos, src.root)
            except AnnotationError as exc:
                errors.append(ErrorRow.from_exception("plan", exc, video_id=None, uri=src.videos.list))
                continue
            errors += listed.errors
            entries += [(v.native_id, v.uri, None, None) for v in listed.videos]
        else:
            for e in src.videos:
                nid = e.id or native_id_from_path(e.uri.split("://", 1)[-1].split("?")[0].rsplit("/", 1)[-1])
                entries.append((nid, e.uri, e.sha256, e.bytes))
        if src.use_splits is not None:  # only the videos of these official splits (e.g. a benchmark's train part)
            try:
                membership = official_splits(src)
            except ManifestError as exc:
                errors.append(ErrorRow.from_exception("plan", exc, video_id=None, uri=src.splits.file))
                continue
            for nid, uri, sha, _ in entries:
                if membership.get(nid) not in src.use_splits:
                    held_out.update(dict.fromkeys(video_keys(uri, sha), (src.name, video_id(src.name, nid))))
            entries = [e for e in entries if membership.get(e[0]) in src.use_splits]
        seen: set[str] = set()
        for nid, uri, sha, size in entries:
            if nid in seen:
                errors.append(
                    ErrorRow(
                        "plan",
                        video_id(src.name, nid),
                        uri,
                        "duplicate_id",
                        f"source {src.name!r}: two videos map to the native id {nid!r}; {uri} skipped",
                    )
                )
                continue
            seen.add(nid)
            rows.append(
                {
                    "video_id": video_id(src.name, nid),
                    "source": src.name,
                    "domain": src.domain,
                    "native_id": nid,
                    "uri": uri,
                    "root": src.root,
                    "expected_sha256": sha,
                    "expected_bytes": size,
                }
            )
    out.rows, out.duplicates = deduplicate(per_source, held_out)
    out.rows.sort(key=lambda r: r["video_id"])
    return out
