"""``surgcorpus benchmark build``: one benchmark dataset through the pipeline machinery.

parse annotations → plan → probe raw videos (per video, resumable) → re-plan with the probed frame rate and frame
count → cut the published clips (per video, resumable) → shards per split → tables → catalog → SurgRec CSVs.

Build dir ``<out>/<dataset>/``: ``tables/{segments,planned_clips,probe,errors,shards}.parquet``,
``clips/<published path>``, ``shards/<split>/<dataset>-<split>-%06d.tar``, ``{train,val,test}.csv`` (the built
rows in SurgRec's format), ``catalog.duckdb`` and ``_state/`` (markers: a re-run skips finished videos).
A missing or unreadable raw video, or a failed cut, is an error row; the rest of the build goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from builders.executors.base import Executor
from builders.executors.local import LocalExecutor
from builders.stages.base import stable_hash
from builders.stages.benchmark_cut import CutClipsStage, SourceProbeStage
from builders.stages.shard import Sample, write_series
from corpus.benchmark.audit import read_splits
from corpus.benchmark.plan import PlannedClip, plan_parsed, surgrec_row
from corpus.benchmark.spec import SPLITS, BenchmarkSource, split_dir
from corpus.build_dir import BuildDir
from corpus.errors import ErrorRow, ManifestError
from corpus.ids import sample_key
from corpus.schemas import PROBE, table_path, to_table, write_rows, write_table
from corpus.sources import adapter

PLANNED_CLIPS = pa.schema(
    [
        ("path", pa.string()),  # the published clip path (relative to SurgRec's __DATA_ROOT__)
        ("split", pa.string()),  # the published split holding it; null: planned but not published
        ("label", pa.string()),
        ("label_id", pa.int32()),  # from the label map
        ("published_label_id", pa.int32()),
        ("video_id", pa.string()),
        ("video_file", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("fps", pa.float64()),
        ("depends_on_video", pa.string()),
        ("file", pa.string()),  # the cut clip under the build dir; null when not built
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("key", pa.string()),
        ("shard", pa.string()),
    ]
)
SOURCE_PROBE = pa.schema([("video_file", pa.string()), *PROBE])
STAGES = (SourceProbeStage.name, CutClipsStage.name)  # the error rows a benchmark build owns


@dataclass
class BenchmarkBuild:
    """What one dataset's build produced."""

    dataset: str
    build_dir: Path
    clips: dict[str, int] = field(default_factory=dict)  # split -> built rows
    planned: int = 0
    videos: int = 0
    cut: int = 0  # videos cut in this run (the rest were already done)
    shards: int = 0
    retried: int = 0  # units re-run because they had failed before (``retry_errors``)
    errors: list[ErrorRow] = field(default_factory=list)


def build_dataset(
    spec: BenchmarkSource,
    root: str | Path,
    out: str | Path,
    splits: str | Path | None = None,
    *,
    executor: Executor | None = None,
    workers: int = 1,
    show_progress: bool = False,
    crf: int = 23,
    max_samples: int = 1000,
    max_bytes: int = 1 << 30,
    retry_errors: bool = False,
) -> BenchmarkBuild:
    """Build (or resume) one dataset of a benchmark into ``out/<dataset>`` (``retry_errors``: re-run the videos
    whose probe or cut failed before)."""
    if not spec.adapter or not spec.naming:
        raise ManifestError(f"{spec.name}: cannot build without an adapter and a clip naming scheme ({spec.notes})")
    build = (Path(out) / spec.dataset).resolve()
    executor = executor or LocalExecutor(workers, show_progress=show_progress)
    executor.retry_errors = retry_errors
    with BuildDir(build).writing("benchmark build"):
        return _build(spec, Path(root), build, splits, executor, crf, max_samples, max_bytes)


def _build(spec, root: Path, build: Path, splits, executor: Executor, crf, max_samples, max_bytes) -> BenchmarkBuild:
    build.mkdir(parents=True, exist_ok=True)
    published = read_splits(split_dir(spec, splits))
    parsed = adapter(spec.adapter).parse(root)
    write_table(parsed.tables()["segments"], table_path(build, "segments"))

    first = plan_parsed(parsed, spec)
    files: dict[str, dict] = {}
    for c in first:
        unit = files.setdefault(
            c.video_file, {"video_file": c.video_file, "src": str(root / c.video_file), "video_id": c.video_id}
        )
        unit["n_clips"] = unit.get("n_clips", 0) + 1
    probed = executor.run(str(build), SourceProbeStage(), list(files.values()))
    errors = list(probed.errors)
    facts = {r["video_file"]: r for r in probed.rows}
    write_table(to_table(probed.rows, SOURCE_PROBE, ("video_file",)), table_path(build, "probe"))

    # Re-plan with each video's probed frame rate and frame count (one file per video id where a planner uses them).
    by_video = {c.video_id: facts[c.video_file] for c in first if c.video_file in facts}
    planned = {c.path: c for c in plan_parsed(parsed, spec, by_video)}
    split_rows = {s: [(p, lab) for p, lab in published.get(s, []) if p in planned] for s in SPLITS}
    wanted = sorted({p for rows in split_rows.values() for p, _ in rows})
    units: dict[str, dict] = {}
    for p in wanted:
        c = planned[p]
        if c.video_file not in facts:
            continue  # its video is missing or unreadable: already an error row
        n = facts[c.video_file]["n_frames"]
        end = min(c.end_frame, n) if c.end_frame is not None else None
        if c.start_frame is not None and c.start_frame >= n:
            errors.append(
                ErrorRow(
                    "benchmark-cut",
                    c.video_id,
                    str(root / c.video_file),
                    "out_of_range",
                    f"{p}: starts at frame {c.start_frame}, the video has {n} frames",
                )
            )
            continue
        unit = units.setdefault(
            c.video_file, {"video_file": c.video_file, "src": str(root / c.video_file), "video_id": c.video_id}
        )
        unit.setdefault("clips", []).append({"path": p, "start_frame": c.start_frame, "end_frame": end})
    cut = executor.run(str(build), CutClipsStage(str(build), crf), list(units.values()))
    errors += cut.errors
    built = {r["path"]: r for r in cut.rows}

    result = BenchmarkBuild(spec.name, build, planned=len(planned), videos=len(facts), cut=cut.ran, errors=errors)
    result.retried = probed.retried + cut.retried
    table_rows, index = [], []
    path_of = {sample_key(p.removesuffix(".mp4")): p for p in built}
    for split in SPLITS:
        rows = [(p, lab) for p, lab in split_rows[split] if p in built]
        samples = [_sample(build, planned[p], built[p], split, lab) for p, lab in sorted(rows, key=lambda r: r[0])]
        sized = [(s, built[p]["bytes"]) for s, (p, _) in samples]
        series = [(f"shards/{split}", f"{spec.dataset}-{split}", sized)]
        entries = write_series(build, series, max_samples, max_bytes, executor)
        index += [{**e, "clip_id": path_of[e["key"]], "split": split} for e in entries]
        result.shards += len({e["shard"] for e in entries})
        (build / f"{split}.csv").write_text("".join(surgrec_row(planned[p]) + "\n" for p, _ in rows))
        result.clips[split] = len(rows)
    shard_of = {(r["key"], r["split"]): r["shard"] for r in index}
    pub_of: dict[str, list[tuple[str, int]]] = {}
    for s in SPLITS:
        for p, lab in split_rows[s]:
            pub_of.setdefault(p, []).append((s, lab))
    for p, c in sorted(planned.items()):
        for split, lab in pub_of.get(p, [(None, None)]):
            b = built.get(p, {})
            key = sample_key(p.removesuffix(".mp4"))
            table_rows.append(
                {
                    **c.to_dict(),
                    "split": split,
                    "published_label_id": lab,
                    "file": b.get("file"),
                    "bytes": b.get("bytes"),
                    "sha256": b.get("sha256"),
                    "key": key if b else None,
                    "shard": shard_of.get((key, split)),
                }
            )
    write_table(
        to_table(table_rows, PLANNED_CLIPS, ("video_id", "start_frame", "path")), table_path(build, "planned_clips")
    )
    write_rows(
        build, "clips", _clip_rows(spec, planned, built, pub_of, facts, shard_of), sort_by=["video_id", "start_s"]
    )
    write_rows(build, "shards", index, sort_by=["split", "shard", "offset"])
    BuildDir(build).replace_errors(STAGES, errors)
    BuildDir(build).refresh_catalog()
    return result


def _clip_rows(spec, planned, built, pub_of, facts, shard_of) -> list[dict]:
    """``tables/clips.parquet`` (the corpus schema, so ``surgcorpus embed``/``leakage`` read a benchmark build):
    one row per built clip, ``clip_id`` = its published path without ``.mp4``, split ``test`` when it is in test."""
    rows = []
    for p, b in sorted(built.items()):
        c, f = planned[p], facts[planned[p].video_file]
        splits = [s for s, _ in pub_of[p]]
        split = "test" if "test" in splits else splits[0]
        fps = c.fps or f["fps"]
        key = sample_key(p.removesuffix(".mp4"))
        rows.append(
            {
                "clip_id": p.removesuffix(".mp4"),
                "video_id": c.video_id,
                "source": spec.name,
                "domain": spec.domain,
                "split": split,
                "start_s": c.start_frame / fps if c.start_frame is not None and fps else None,
                "end_s": c.end_frame / fps if c.end_frame is not None and fps else None,
                "n_frames": min(c.end_frame, f["n_frames"]) - c.start_frame
                if c.start_frame is not None
                else f["n_frames"],
                "fps": f["fps"],
                "width": f["width"],
                "height": f["height"],
                "format": "mp4",
                "path": b["file"],
                "bytes": b["bytes"],
                "sha256": b["sha256"],
                "shard": shard_of.get((key, split)),
                "key": key,
            }
        )
    return rows


def _sample(build: Path, clip: PlannedClip, built: dict, split: str, label: int) -> tuple[Sample, tuple[str, int]]:
    """The WebDataset sample of one built clip: ``.mp4``, ``.cls`` (published label id) and ``.json`` metadata."""
    meta = {**clip.to_dict(), "split": split, "label_id": label, "sha256": built["sha256"]}
    members = (("mp4", str(build / built["file"])), ("cls", str(label).encode()))
    return (
        Sample(
            key=sample_key(clip.path.removesuffix(".mp4")),
            members=(*members, ("json", json.dumps(meta, sort_keys=True).encode())),
            fingerprint=stable_hash(meta),
        ),
        (clip.path, label),
    )
