"""A corpus build, end to end: plan → fetch → probe → clip → dedup → split → shard → catalog.

Per-video stages (fetch, probe, clip) run on the executor and are resumable unit by unit; the global stages
(dedup, split, shard, catalog) are cheap and recomputed from the per-video results, writing every table
atomically. Re-running the same command after an interruption (Ctrl-C, kill -9) redoes only unfinished or
changed work and yields the same tables and byte-identical shards.

Files written under the build dir: ``tables/{sources,planned_out,segments,frame_labels,fetch,probe,videos,clips,
dedup,errors,shards}.parquet``, ``clips/``, ``shards/<split>/*.tar``, ``catalog.duckdb``, ``build.lock``,
``logs/build.log``, ``_state/``. ``planned_out`` lists the listed videos not planned because another source
holds them or they are benchmark val/test videos, so nothing a manifest lists disappears without a row.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from builders.executors.base import Executor
from builders.executors.local import LocalExecutor
from builders.stages.annotate import FRAME_LABELS_OUT, SEGMENTS_OUT, AnnotateStage, annotate_units
from builders.stages.base import Stage
from builders.stages.clip import CLIPS_DIR, ClipStage, split_clip_rows
from builders.stages.dedup import dedup
from builders.stages.fetch import FetchStage
from builders.stages.probe import ProbeStage
from builders.stages.shard import corpus_series, write_series
from builders.tools import ffmpeg_version
from corpus.build_dir import BuildDir
from corpus.errors import ErrorRow
from corpus.figures import build_figures
from corpus.ids import check_unique, safe_relpath, sample_key, video_id
from corpus.manifest import ClipSpec, CorpusManifest, Source
from corpus.parts import merge_parts
from corpus.progress import console
from corpus.resolve import official_splits, resolve_plan
from corpus.schemas import table_path, write_rows
from corpus.splits import SPLITS, assign_splits

log = logging.getLogger("surgcorpus.build")

# The stages whose error rows a build owns (it replaces these, and keeps every other command's rows).
BUILD_STAGES = frozenset({"plan", "video-list", "annotate", "fetch", "probe", "clip", "dedup", "split", "shard"})


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
    retried: int = 0  # units re-run because they had failed before (``retry_errors``)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class VideoStages:
    """The per-video stages a build runs, as factories: ``fetch(cache_dir)``, ``probe()``,
    ``clip(build_dir, clips_spec, preset)``. A benchmark may pass simulated ones (``bench/corpus_scale.py``) to
    drive the real driver at corpus size without decoding."""

    fetch: Callable[[str], Stage] = FetchStage
    probe: Callable[[], Stage] = ProbeStage
    clip: Callable[[str, ClipSpec, str], Stage] = ClipStage


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
    retry_errors: bool = False,
    stages: VideoStages = VideoStages(),
) -> BuildSummary:
    """Build (or resume) the corpus described by ``manifest`` into ``out`` (``retry_errors``: re-run the units
    that failed before; transient failures are re-run anyway). Holds the build dir's writer lock throughout."""
    bd = BuildDir(out)
    with bd.writing("build"):
        return _build(
            manifest, bd, workers, executor, cache_dir, show_progress, manifest_path, preset, retry_errors, stages
        )


def _build(
    manifest: CorpusManifest,
    bd: BuildDir,
    workers: int | None,
    executor: Executor | None,
    cache_dir: str | Path | None,
    show_progress: bool,
    manifest_path: str | Path | None,
    preset: str,
    retry_errors: bool,
    stages: VideoStages,
) -> BuildSummary:
    out = bd.path
    handler = _setup_logging(out)
    own_executor = executor is None
    executor = executor or LocalExecutor(workers, show_progress=show_progress)
    executor.retry_errors = retry_errors
    summary = BuildSummary(out)
    cache = Path(cache_dir) if cache_dir else Path(os.environ.get("SURGCORPUS_CACHE", out / "cache"))
    t0 = time.perf_counter()
    try:
        log.info("build %s into %s", manifest.name, out)
        resolved = resolve_plan(manifest)
        plan, errors = resolved.rows, resolved.errors
        bd.write_rows("planned_out", [asdict(d) for d in resolved.duplicates], sort_by=["video_id"])
        official = _official(manifest)
        ids = [r["video_id"] for r in plan]
        check_unique(ids, safe_relpath, "clip folders")  # before any work: never two videos in one folder
        check_unique(ids, sample_key, "shard keys")
        write_rows(out, "sources", [_source_row(s, plan) for s in manifest.sources], sort_by=["source"])

        timer = functools.partial(_timed, summary)
        with timer("annotate"):
            errors += _annotate(manifest, plan, out, executor)
        with timer("fetch"):
            fetched = executor.run(str(out), stages.fetch(str(cache)), plan)
        errors += fetched.errors
        write_rows(out, "fetch", fetched.rows, sort_by=["video_id"])

        with timer("probe"):
            probed = executor.run(str(out), stages.probe(), fetched.rows)
        errors += probed.errors
        write_rows(out, "probe", probed.rows, sort_by=["video_id"])
        facts = {r["video_id"]: r for r in probed.rows}
        mask = {s.name: s.mask for s in manifest.sources}
        videos = [
            {**f, **facts[f["video_id"]], "mask": mask[f["source"]]} for f in fetched.rows if f["video_id"] in facts
        ]

        with timer("clip"):
            cut = executor.run(str(out), stages.clip(str(out), manifest.clips, preset), videos)
        errors += cut.errors
        clips, measured = split_clip_rows(cut.rows)
        for v in videos:  # the clip pass counted the decoded frames: they replace the header's figures
            v.update(measured.get(v["video_id"], {}))
        _remove_stale_clips(out, videos)

        with timer("dedup"):
            dd = dedup(videos, clips, manifest.dedup)
        write_rows(out, "dedup", dd.rows, sort_by=["level", "cluster_id", "member_id"])

        with timer("split"):
            splits = _split(manifest, videos, dd.video_dup, official)
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
            index = _shard(manifest, out, clips, executor)
        where = {r["clip_id"]: r["shard"] for r in index}
        for c in clips:
            c["shard"] = where.get(c["clip_id"])
        write_rows(out, "videos", videos, sort_by=["video_id"])
        write_rows(out, "clips", clips, sort_by=["video_id", "start_s"])
        write_rows(out, "shards", index, sort_by=["split", "shard", "offset"])
        bd.replace_errors(BUILD_STAGES | {e.stage for e in errors}, errors)
        bd.refresh_catalog()
        _write_lock(bd, manifest, manifest_path, videos)

        figures = build_figures(bd)
        summary.videos = figures["videos"]
        summary.clips = figures["clips"]
        summary.sharded_clips = figures["sharded_clips"]
        summary.duplicate_videos = figures["duplicate_videos"]
        summary.duplicate_clips = figures["duplicate_clips"]
        summary.source_frames = figures["source_frames"]
        summary.seconds = figures["hours"] * 3600
        summary.shards = len({r["shard"] for r in index})
        summary.retried = fetched.retried + probed.retried + cut.retried
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


@contextmanager
def _timed(summary: BuildSummary, name: str) -> Iterator[None]:
    """Record a stage's wall time in ``summary.stage_seconds`` and the log."""
    t = time.perf_counter()
    log.info("stage %s: start", name)
    yield
    summary.stage_seconds[name] = time.perf_counter() - t
    log.info("stage %s: %.2f s", name, summary.stage_seconds[name])


def _remove_stale_clips(out: Path, videos: list[dict]) -> None:
    """Delete clip files of videos no longer in the build (a source or video left the manifest)."""
    root = out / CLIPS_DIR
    current = {root / safe_relpath(v["video_id"]) for v in videos}
    if not root.exists():
        return
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.parent not in current and not (f.suffix == ".jpg" and f.parent.parent in current):
            log.info("removing stale clip file %s", f)
            f.unlink()
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _annotate(manifest: CorpusManifest, plan: list[dict], out: Path, executor: Executor) -> list[ErrorRow]:
    """Parse the sources' annotations on the executor (one resumable unit per source, rows written as Parquet
    parts) and merge the parts into ``segments`` and ``frame_labels``; returns the error rows.

    A source's video ids all start with ``<source>/`` and a source name holds no ``/``, so parts taken in
    ``source + "/"`` order hold the rows in ``video_id`` order: the merge streams, one row group at a time."""
    units = annotate_units(manifest.sources, plan)
    done = executor.run(str(out), AnnotateStage(str(out)), units)
    parts = sorted(done.rows, key=lambda r: r["source"] + "/")
    for name, schema in (("segments", SEGMENTS_OUT), ("frame_labels", FRAME_LABELS_OUT)):
        merge_parts([out / r["part"] for r in parts if r["table"] == name], table_path(out, name), schema)
    return done.errors


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


def _official(manifest: CorpusManifest) -> dict[str, str]:
    """video_id -> official split; a missing or malformed split file is a manifest error (raised before any work)."""
    return {video_id(src.name, nid): split for src in manifest.sources for nid, split in official_splits(src).items()}


def _split(
    manifest: CorpusManifest, videos: list[dict], video_dup: dict[str, tuple[str, str]], official: dict[str, str]
) -> dict:
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


def _shard(manifest: CorpusManifest, out: Path, clips: list[dict], executor: Executor) -> list[dict]:
    """Write every split's shards on the executor (one unit per shard); returns the shard index rows."""
    keep = [c for c in clips if c["dup_of"] is None]
    series = [corpus_series(out, manifest.name, split, [c for c in keep if c["split"] == split]) for split in SPLITS]
    entries = write_series(out, series, manifest.shard.max_samples, manifest.shard.max_bytes, executor)
    clip_of = {c["key"]: c["clip_id"] for c in keep}
    return [
        {
            "clip_id": clip_of[e["key"]],
            "key": e["key"],
            "split": e["shard"].split("/")[1],
            "shard": e["shard"],
            "member": e["member"],
            "offset": e["offset"],
            "bytes": e["bytes"],
        }
        for e in entries
    ]


def _write_lock(bd: BuildDir, manifest: CorpusManifest, manifest_path, videos: list[dict]) -> None:
    from importlib.metadata import version

    import duckdb

    lock = {
        "manifest_name": manifest.name,
        "manifest_path": str(manifest_path) if manifest_path else None,
        "manifest_sha256": manifest.fingerprint(),
        "tools": {
            "ffmpeg": ffmpeg_version(),
            "pyarrow": pa.__version__,
            "duckdb": duckdb.__version__,
            "webdataset": version("webdataset"),  # not imported: it pulls in torch (+190 MiB in the driver)
            "python": platform.python_version(),
        },
        "inputs": {v["video_id"]: v["sha256"] for v in sorted(videos, key=lambda v: v["video_id"])},
    }
    bd.write_provenance(lock)


def print_summary(summary: BuildSummary, report: Path | None = None) -> None:
    """The table printed at the end of a build, and where to look next (``report``: a report already written)."""
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
    if summary.retried:
        t.add_row("failed units retried", str(summary.retried))
    if "total" in summary.stage_seconds:
        rate = summary.source_frames / summary.stage_seconds["total"] if summary.stage_seconds["total"] else 0
        t.add_row("wall time", f"{summary.stage_seconds['total']:.1f} s ({rate:.0f} source frames/s)")
    console.print(t)
    b = summary.build_dir
    console.print(
        f"tables:  {b}/tables/*.parquet\nshards:  {b}/shards/{{train,val,test}}/*.tar\n"
        f'catalog: {b}/catalog.duckdb   (surgcorpus query --build {b} "SELECT * FROM videos")\n'
        f"errors:  surgcorpus errors --build {b}\n"
        f"report:  {report or f'surgcorpus report --build {b}'}"
    )
