"""A corpus build, end to end: plan → fetch → probe → clip → dedup → split → shard → catalog.

Per-video stages (fetch, probe, clip) run on the executor and are resumable unit by unit; the global stages
(dedup, split, shard, catalog) are cheap and recomputed from the per-video results, writing every table
atomically. Re-running the same command after an interruption (Ctrl-C, kill -9) redoes only unfinished or
changed work and yields the same tables and byte-identical shards.

Files written under the build dir: ``tables/{sources,fetch,probe,videos,clips,dedup,errors,shards}.parquet``,
``clips/``, ``shards/<split>/*.tar``, ``catalog.duckdb``, ``build.lock``, ``logs/build.log``, ``_state/``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from builders.executors.base import Executor
from builders.executors.local import LocalExecutor
from builders.stages.annotate import FRAME_LABELS_OUT, SEGMENTS_OUT, annotate_source
from builders.stages.clip import ClipStage
from builders.stages.dedup import dedup
from builders.stages.fetch import FetchStage
from builders.stages.probe import ProbeStage
from builders.stages.shard import write_split_shards
from builders.tools import ffmpeg_version
from corpus.catalog import write_catalog
from corpus.errors import AnnotationError, ErrorRow, ManifestError
from corpus.ids import native_id_from_path, sample_key, video_id
from corpus.listed_source import listed_videos
from corpus.manifest import CorpusManifest, GlobSpec, Source, VideoListSpec
from corpus.progress import console, stage_progress
from corpus.schemas import table_path, to_table, write_rows, write_table
from corpus.splits import SPLITS, assign_splits

log = logging.getLogger("surgcorpus.build")


@dataclass
class BuildSummary:
    """What a build produced; ``errors`` counts error rows by kind."""

    build_dir: Path
    videos: int = 0
    clips: int = 0
    sharded_clips: int = 0
    duplicate_videos: int = 0
    duplicate_clips: int = 0
    source_frames: int = 0
    seconds: float = 0.0
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    shards: int = 0
    errors: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


# ---------------------------------------------------------------------------------------------------- plan


def _official_splits(src: Source) -> dict[str, str]:
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


def plan_videos(manifest: CorpusManifest) -> tuple[list[dict], list[ErrorRow]]:
    """Resolve every source's video list into plan rows (sorted by video id); problems become error rows."""
    rows: list[dict] = []
    errors: list[ErrorRow] = []
    for src in manifest.sources:
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
                listed = listed_videos(src.videos)
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
                membership = _official_splits(src)
            except ManifestError as exc:
                errors.append(ErrorRow.from_exception("plan", exc, video_id=None, uri=src.splits.file))
                continue
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
    rows.sort(key=lambda r: r["video_id"])
    return rows, errors


# ---------------------------------------------------------------------------------------------------- build


def _setup_logging(out: Path) -> logging.Handler:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "logs" / "build.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def build(
    manifest: CorpusManifest,
    out: str | Path,
    *,
    workers: int | None = None,
    executor: Executor | None = None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    manifest_path: str | Path | None = None,
    preset: str = "ultrafast",
) -> BuildSummary:
    """Build (or resume) the corpus described by ``manifest`` into ``out``."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    handler = _setup_logging(out)
    own_executor = executor is None
    executor = executor or LocalExecutor(workers, show_progress=show_progress)
    summary = BuildSummary(out)
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("SURGCORPUS_CACHE", out / "cache"))
    t0 = time.perf_counter()
    try:
        log.info("build %s into %s", manifest.name, out)
        plan, errors = plan_videos(manifest)
        write_rows(out, "sources", [_source_row(s, plan) for s in manifest.sources], sort_by=["source"])

        timer = _Timer(summary)
        with timer("annotate"):
            errors += _annotate(manifest, plan, out)
        with timer("fetch"):
            fetched = executor.run(str(out), FetchStage(str(cache)), plan)
        errors += fetched.errors
        write_rows(out, "fetch", fetched.rows, sort_by=["video_id"])

        with timer("probe"):
            probed = executor.run(str(out), ProbeStage(), fetched.rows)
        errors += probed.errors
        write_rows(out, "probe", probed.rows, sort_by=["video_id"])
        facts = {r["video_id"]: r for r in probed.rows}
        videos = [{**f, **facts[f["video_id"]]} for f in fetched.rows if f["video_id"] in facts]

        with timer("clip"):
            cut = executor.run(str(out), ClipStage(str(out), manifest.clips, preset), videos)
        errors += cut.errors
        clips = cut.rows

        with timer("dedup"):
            dd = dedup(videos, clips, manifest.dedup)
        write_rows(out, "dedup", dd.rows, sort_by=["level", "cluster_id", "member_id"])

        with timer("split"):
            splits = _split(manifest, videos, dd.video_dup)
        n_clips = Counter(c["video_id"] for c in clips)
        for v in videos:
            v["split"], v["split_reason"] = splits[v["video_id"]]
            v["dup_of"], v["dup_kind"] = dd.video_dup.get(v["video_id"], (None, None))
            v["n_clips"] = n_clips.get(v["video_id"], 0)
        split_of = {v["video_id"]: v["split"] for v in videos}
        for c in clips:
            c["split"] = split_of[c["video_id"]]
            c["dup_of"], c["dup_kind"] = dd.clip_dup.get(c["clip_id"], (None, None))
            c["key"] = sample_key(c["clip_id"])

        with timer("shard"):
            index = _shard(manifest, out, clips, show_progress)
        where = {r["clip_id"]: r["shard"] for r in index}
        for c in clips:
            c["shard"] = where.get(c["clip_id"])
        write_rows(out, "videos", videos, sort_by=["video_id"])
        write_rows(out, "clips", clips, sort_by=["video_id", "start_s"])
        write_rows(out, "shards", index, sort_by=["split", "shard", "offset"])
        write_rows(out, "errors", [e.to_dict() for e in errors], sort_by=["stage", "video_id", "kind"])
        write_catalog(out)
        _write_lock(out, manifest, manifest_path, videos)

        summary.videos = len(videos)
        summary.clips = len(clips)
        summary.sharded_clips = len(index)
        summary.duplicate_videos = len(dd.video_dup)
        summary.duplicate_clips = len(dd.clip_dup)
        summary.source_frames = sum(int(v["n_frames"] or 0) for v in videos)
        summary.seconds = sum(float(v["duration_s"] or 0) for v in videos)
        summary.shards = len({r["shard"] for r in index})
        for split in SPLITS:
            summary.per_split[split] = {
                "videos": sum(v["split"] == split for v in videos),
                "clips": sum(c["split"] == split and c["shard"] is not None for c in clips),
            }
        summary.errors = Counter(e.kind for e in errors)
        summary.stage_seconds["total"] = time.perf_counter() - t0
        log.info("done: %d videos, %d clips, %d errors", summary.videos, summary.clips, summary.n_errors)
        return summary
    finally:
        if own_executor:
            executor.close()
        logging.getLogger().removeHandler(handler)
        handler.close()


class _Timer:
    def __init__(self, summary: BuildSummary) -> None:
        self.summary = summary

    def __call__(self, name: str):
        summary = self.summary

        class _Ctx:
            def __enter__(self) -> None:
                self.t = time.perf_counter()
                log.info("stage %s: start", name)

            def __exit__(self, *exc) -> None:
                summary.stage_seconds[name] = time.perf_counter() - self.t
                log.info("stage %s: %.2f s", name, summary.stage_seconds[name])

        return _Ctx()


def _annotate(manifest: CorpusManifest, plan: list[dict], out: Path) -> list[ErrorRow]:
    """Parse every source's annotations into ``segments`` and ``frame_labels``; returns the error rows."""
    segments: list[dict] = []
    frame_labels: list[dict] = []
    errors: list[ErrorRow] = []
    for src in manifest.sources:
        got = annotate_source(src, [r for r in plan if r["source"] == src.name])
        segments += got.segments
        frame_labels += got.frame_labels
        errors += got.errors
    write_table(to_table(segments, SEGMENTS_OUT, ("video_id", "level", "start_frame")), table_path(out, "segments"))
    write_table(
        to_table(frame_labels, FRAME_LABELS_OUT, ("video_id", "level", "frame")), table_path(out, "frame_labels")
    )
    return errors


def _source_row(src: Source, plan: list[dict]) -> dict:
    return {
        "source": src.name,
        "domain": src.domain,
        "license": src.license,
        "access": src.access,
        "root": src.root,
        "homepage": src.homepage,
        "n_videos": sum(r["source"] == src.name for r in plan),
    }


def _split(manifest: CorpusManifest, videos: list[dict], video_dup: dict[str, tuple[str, str]]) -> dict:
    official: dict[str, str] = {}
    for src in manifest.sources:
        for nid, split in _official_splits(src).items():
            official[video_id(src.name, nid)] = split
    spec = manifest.split
    patterns = {s.name: s.group_pattern or spec.group_pattern for s in manifest.sources}
    group_by = spec.group_by
    if group_by == "video" and any(patterns.values()):
        group_by = "group"  # a source-level group_pattern refines grouping for that source only
    return assign_splits(
        videos,
        val=spec.val,
        test=spec.test,
        seed=spec.seed,
        group_by=group_by,
        patterns=patterns,
        official=official,
        linked=[(a, b) for a, (b, _) in video_dup.items()],
    )


def _shard(manifest: CorpusManifest, out: Path, clips: list[dict], show_progress: bool) -> list[dict]:
    index: list[dict] = []
    keep = [c for c in clips if c["dup_of"] is None]
    with stage_progress("shard", total=len(SPLITS), enabled=show_progress) as advance:
        for split in SPLITS:
            rows, _ = write_split_shards(
                out,
                manifest.name,
                split,
                [c for c in keep if c["split"] == split],
                manifest.shard.max_samples,
                manifest.shard.max_bytes,
            )
            index += rows
            advance(1)
    return index


def _write_lock(out: Path, manifest: CorpusManifest, manifest_path, videos: list[dict]) -> None:
    import duckdb
    import pyarrow
    import webdataset

    lock = {
        "manifest_name": manifest.name,
        "manifest_path": str(manifest_path) if manifest_path else None,
        "manifest_sha256": manifest.fingerprint(),
        "tools": {
            "ffmpeg": ffmpeg_version(),
            "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__,
            "webdataset": getattr(webdataset, "__version__", "unknown"),
            "python": platform.python_version(),
        },
        "inputs": {v["video_id"]: v["sha256"] for v in sorted(videos, key=lambda v: v["video_id"])},
    }
    tmp = out / f".build.lock.tmp{os.getpid()}"
    tmp.write_text(json.dumps(lock, indent=1, sort_keys=True))
    os.replace(tmp, out / "build.lock")


def print_summary(summary: BuildSummary) -> None:
    """The table printed at the end of a build, and where to look next."""
    from rich.table import Table

    t = Table(title=f"surgcorpus build: {summary.build_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("videos", str(summary.videos))
    t.add_row("hours", f"{summary.seconds / 3600:.3f}")
    t.add_row("source frames", str(summary.source_frames))
    t.add_row("clips (all)", str(summary.clips))
    for split, n in summary.per_split.items():
        t.add_row(f"  {split}: videos / sharded clips", f"{n['videos']} / {n['clips']}")
    t.add_row("duplicate videos / clips", f"{summary.duplicate_videos} / {summary.duplicate_clips}")
    t.add_row("shards", str(summary.shards))
    t.add_row("errors", ", ".join(f"{k}: {v}" for k, v in sorted(summary.errors.items())) or "0")
    if "total" in summary.stage_seconds:
        rate = summary.source_frames / summary.stage_seconds["total"] if summary.stage_seconds["total"] else 0
        t.add_row("wall time", f"{summary.stage_seconds['total']:.1f} s ({rate:.0f} source frames/s)")
    console.print(t)
    b = summary.build_dir
    console.print(
        f"tables:  {b}/tables/*.parquet\nshards:  {b}/shards/{{train,val,test}}/*.tar\n"
        f'catalog: {b}/catalog.duckdb   (surgcorpus query --build {b} "SELECT * FROM videos")\n'
        f'errors:  surgcorpus query --build {b} "SELECT * FROM errors"\n'
        f"report:  surgcorpus report --build {b}"
    )
