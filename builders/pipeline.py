"""A corpus build, end to end: plan → annotate → fetch → probe → clip → dedup → split → shard → catalog.

The unit stages (annotate per source; fetch, probe, clip per video; shard per shard) run on the executor and are
resumable unit by unit; each unit writes its rows as Parquet parts (``corpus.parts``), and the driver merges
tables from the parts by streaming, never holding a table: dedup and split read only the columns they need, and
the clips are streamed once to mark splits and duplicates and to plan the shards. The global stages are
recomputed from the unit results on every run, writing every table atomically. Re-running the same command after
an interruption (Ctrl-C, kill -9) redoes only unfinished or changed work and yields the same tables and
byte-identical shards.

Files written under the build dir: ``tables/{sources,planned_out,segments,frame_labels,fetch,probe,videos,clips,
dedup,errors,shards}.parquet``, ``clips/``, ``shards/<split>/*.tar``, ``catalog.duckdb``, ``build.lock``,
``logs/build.log``, ``_state/`` (markers), ``_parts/`` (the units' rows and the shard plans). ``planned_out``
lists the listed videos not planned because another source holds them or they are benchmark val/test videos, so
nothing a manifest lists disappears without a row.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from builders.executors.base import Executor
from builders.executors.local import LocalExecutor
from builders.stages.annotate import FRAME_LABELS_OUT, SEGMENTS_OUT, STAGE, AnnotateStage, annotate_units
from builders.stages.base import Stage
from builders.stages.clip import CLIPS_DIR, ClipStage
from builders.stages.dedup import dedup
from builders.stages.fetch import FetchStage
from builders.stages.probe import ProbeStage
from builders.stages.shard import SHARDS_DIR, ShardPlanner, ShardStage, clip_sample
from builders.tools import ffmpeg_version
from corpus.build_dir import BuildDir
from corpus.errors import ErrorRow
from corpus.figures import build_figures
from corpus.ids import check_unique, safe_relpath, sample_key, video_id
from corpus.manifest import ClipSpec, CorpusManifest, Source
from corpus.parts import PARTS_DIR, PartWriter, merge_parts, part_relpath
from corpus.progress import console
from corpus.resolve import official_splits, resolve_plan
from corpus.schemas import CLIPS, VIDEOS, table_path, write_rows, write_table
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


def _setup_logging(out: Path) -> tuple[logging.Handler, int]:
    """Log the build to ``<out>/logs/build.log``; returns the handler and the root level to restore."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "logs" / "build.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler, level


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
    handler, level = _setup_logging(out)
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
        fetch_t = fetched.read(out, "fetch")
        write_table(fetch_t, table_path(out, "fetch"))

        with timer("probe"):
            probed = executor.run(str(out), stages.probe(), fetch_t.to_pylist())
        errors += probed.errors
        probe_t = probed.read(out, "probe")
        write_table(probe_t, table_path(out, "probe"))
        mask = {s.name: s.mask for s in manifest.sources}
        videos = _sorted(fetch_t.join(probe_t, "video_id", join_type="inner"), "video_id")
        videos = videos.append_column("mask", pa.array([mask[s] for s in videos["source"].to_pylist()], pa.string()))

        with timer("clip"):
            cut = executor.run(str(out), stages.clip(str(out), manifest.clips, preset), videos.to_pylist())
        errors += cut.errors
        staged = out / PARTS_DIR / "clip" / "clips.parquet"  # every clip, before split, duplicates and shards
        cut.merge(out, "clips", staged)
        videos = _measured(videos, cut.read(out, "clip_facts"))
        video_ids = videos["video_id"].to_pylist()
        _remove_stale_clips(out, video_ids)

        with timer("dedup"):
            clip_cols = pq.read_table(staged, columns=["clip_id", "video_id", "start_s", "end_s", "sha256", "phash"])
            dd = dedup(videos, clip_cols, manifest.dedup)
            del clip_cols
        write_rows(out, "dedup", dd.rows, sort_by=["level", "cluster_id", "member_id"])

        with timer("split"):
            splits = _split(
                manifest, videos.select(["video_id", "source", "native_id"]).to_pylist(), dd.video_dup, official
            )

        with timer("shard"):
            planned, per_split = _plan_shards(manifest, out, staged, splits, dd.clip_dup)
            sharded = executor.run(str(out), ShardStage(out), planned)
            sharded.merge(out, "shards", table_path(out, "shards"), sorted_by="shard")
        errors += sharded.errors
        os.replace(staged, table_path(out, "clips"))
        videos = _finish_videos(videos, splits, dd.video_dup, _clips_per_video(table_path(out, "clips")))
        write_table(videos, table_path(out, "videos"))
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
        summary.shards = len(planned)
        summary.retried = fetched.retried + probed.retried + cut.retried
        video_splits = Counter(split for split, _ in splits.values())
        for split in SPLITS:
            summary.per_split[split] = {"videos": video_splits[split], "clips": per_split[split]}
        summary.errors = Counter(e.kind for e in errors)
        summary.stage_seconds["total"] = time.perf_counter() - t0
        log.info("done: %d videos, %d clips, %d errors", summary.videos, summary.clips, summary.n_errors)
        return summary
    finally:
        if own_executor:
            executor.close()
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
        handler.close()


@contextmanager
def _timed(summary: BuildSummary, name: str) -> Iterator[None]:
    """Record a stage's wall time in ``summary.stage_seconds`` and the log."""
    t = time.perf_counter()
    log.info("stage %s: start", name)
    yield
    summary.stage_seconds[name] = time.perf_counter() - t
    log.info("stage %s: %.2f s", name, summary.stage_seconds[name])


def _remove_stale_clips(out: Path, video_ids: list[str]) -> None:
    """Delete clip files of videos no longer in the build (a source or video left the manifest)."""
    root = out / CLIPS_DIR
    current = {root / safe_relpath(v) for v in video_ids}
    if not root.exists():
        return
    visited: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here in current:  # a current video's folder: its clips stay (never list millions of clip files)
            dirnames.clear()
            continue
        visited.append(here)
        dirnames.sort()
        for name in sorted(filenames):
            log.info("removing stale clip file %s", here / name)
            (here / name).unlink()
    for d in sorted(visited[1:], key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _annotate(manifest: CorpusManifest, plan: list[dict], out: Path, executor: Executor) -> list[ErrorRow]:
    """Parse the sources' annotations on the executor (one resumable unit per source, whose rows it writes as
    Parquet parts) and merge the parts into ``segments`` and ``frame_labels``; returns the error rows.

    A source's video ids all start with ``<source>/`` and a source name holds no ``/``, so parts taken in
    ``source + "/"`` order hold the rows in ``video_id`` order: the merge streams, one row group at a time."""
    units = annotate_units(manifest.sources, plan)
    done = executor.run(str(out), AnnotateStage(str(out)), units)
    order = sorted((u["source"] for u in units), key=lambda name: name + "/")
    for name, schema in (("segments", SEGMENTS_OUT), ("frame_labels", FRAME_LABELS_OUT)):
        have = set(done.parts.get(name, []))
        parts = [rel for rel in (part_relpath(STAGE, name, source) for source in order) if rel in have]
        merge_parts([out / rel for rel in parts], table_path(out, name), schema)
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


def _sorted(table: pa.Table, *keys: str) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def _measured(videos: pa.Table, facts: pa.Table) -> pa.Table:
    """``videos`` with the figures the clip pass measured (decoded frame count, duration) replacing the header's."""
    if facts.num_rows == 0:
        return videos
    measured = facts.rename_columns([c if c == "video_id" else f"measured_{c}" for c in facts.column_names])
    joined = _sorted(videos.join(measured, "video_id", join_type="left outer"), "video_id")
    for name in facts.column_names[1:]:
        i = joined.schema.get_field_index(name)
        value = pc.coalesce(joined[f"measured_{name}"], joined[name]).cast(joined.schema.field(name).type)
        joined = joined.set_column(i, name, value).drop_columns([f"measured_{name}"])
    return joined.select(videos.column_names)


def _clips_per_video(clips: Path) -> dict[str, int]:
    counts = pc.value_counts(pq.read_table(clips, columns=["video_id"])["video_id"])
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def _finish_videos(
    videos: pa.Table, splits: dict, video_dup: dict[str, tuple[str, str]], n_clips: dict[str, int]
) -> pa.Table:
    """The ``videos`` table: per-video facts plus split, duplicate and clip count (one row per video)."""
    ids = videos["video_id"].to_pylist()
    extra = {
        "split": [splits[v][0] for v in ids],
        "split_reason": [splits[v][1] for v in ids],
        "dup_of": [video_dup.get(v, (None, None))[0] for v in ids],
        "dup_kind": [video_dup.get(v, (None, None))[1] for v in ids],
        "n_clips": [n_clips.get(v, 0) for v in ids],
    }
    for name, values in extra.items():
        videos = videos.append_column(name, pa.array(values, VIDEOS.field(name).type))
    return videos.select(VIDEOS.names).cast(VIDEOS)


def _plan_shards(
    manifest: CorpusManifest, out: Path, staged: Path, splits: dict, clip_dup: dict[str, tuple[str, str]]
) -> tuple[list[dict], Counter]:
    """Stream the staged clips once: give each its split, duplicate mark, key and shard, rewrite the staged table
    with them, and plan every split's shards (one :class:`ShardStage` unit per shard). Returns the units and the
    sharded clips per split. Memory: one batch of clips plus one open shard per split."""
    planners = {
        split: ShardPlanner(
            out,
            f"{SHARDS_DIR}/{split}",
            f"{manifest.name}-{split}",
            manifest.shard.max_samples,
            manifest.shard.max_bytes,
        )
        for split in SPLITS
    }
    per_split: Counter = Counter()
    with PartWriter(staged.with_suffix(".planned.parquet"), CLIPS) as writer:
        for batch in pq.ParquetFile(staged).iter_batches(batch_size=65_536):
            rows = batch.to_pylist()
            for c in rows:
                c["split"] = splits[c["video_id"]][0]
                c["dup_of"], c["dup_kind"] = clip_dup.get(c["clip_id"], (None, None))
                c["key"] = sample_key(c["clip_id"])
                if c["dup_of"] is None:
                    sample, nbytes = clip_sample(out, c)
                    c["shard"] = planners[c["split"]].add(sample, nbytes, c["clip_id"], c["split"])
                    per_split[c["split"]] += 1
            writer.write(rows)
    os.replace(staged.with_suffix(".planned.parquet"), staged)
    keys = pq.read_table(staged, columns=["key"])["key"]
    if pc.count_distinct(keys).as_py() != len(keys):  # never one sample over another (keys are injective)
        dupes = pc.value_counts(keys).filter(pc.greater(pc.struct_field(pc.value_counts(keys), "counts"), 1))
        raise ValueError(f"two clips share a shard key: {dupes.to_pylist()[:5]}")
    return [u for split in SPLITS for u in planners[split].finish()], per_split


def _write_lock(bd: BuildDir, manifest: CorpusManifest, manifest_path, videos: pa.Table) -> None:
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
        "inputs": dict(sorted(zip(videos["video_id"].to_pylist(), videos["sha256"].to_pylist(), strict=True))),
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
