"""Cut the planned clips at exact frame boundaries and write WebDataset shards plus SurgRec-format CSVs.

One ffmpeg process per source video: the decoded stream is split once and each branch ``trim``-med to its frame
range (``end_frame`` exclusive) and encoded as H.264. Splits come from the published CSVs, so the built rows equal
the published ones. Shards are written with ``builders.stages.shard.write_shard`` (sorted members, fixed mtime).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from corpus.benchmark.audit import read_splits
from corpus.benchmark.plan import PlannedClip, plan, surgrec_row
from corpus.benchmark.spec import SPLITS, BenchmarkSource, split_dir
from corpus.errors import DecodeError, MissingInput, ToolMissing
from corpus.ids import sample_key


def cut_video(src: Path, clips: list[PlannedClip], out: dict[str, Path], crf: int = 23) -> None:
    """Encode every clip of one source video in a single ffmpeg run (frame-exact ``trim``)."""
    if shutil.which("ffmpeg") is None:
        raise ToolMissing("ffmpeg not found on PATH; install it (apt-get install ffmpeg)")
    n = len(clips)
    graph = [f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src)]
    for i, c in enumerate(clips):
        trim = f"trim=start_frame={c.start_frame}:end_frame={c.end_frame}," if c.start_frame is not None else ""
        graph.append(f"[s{i}]{trim}setpts=PTS-STARTPTS[o{i}]")
    args += ["-filter_complex", ";".join(graph)]
    for i, c in enumerate(clips):
        dest = out[c.path]
        dest.parent.mkdir(parents=True, exist_ok=True)
        args += ["-map", f"[o{i}]", "-an", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", str(dest)]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        raise DecodeError(f"{src}: ffmpeg failed cutting {n} clips", detail=res.stderr[-2000:])


def build_dataset(spec: BenchmarkSource, root: Path, out: Path, splits: Path | None = None) -> dict:
    """Build one dataset: clips under ``out/<dataset>/clips``, shards ``out/<dataset>/<split>-000000.tar``, CSVs."""
    from builders.stages.shard import Sample, write_shard

    planned = {c.path: c for c in plan(spec, root)}
    published = read_splits(split_dir(spec, splits))
    base = out / spec.dataset
    clip_path = {p: base / "clips" / p for p in planned}
    by_video: dict[str, list[PlannedClip]] = defaultdict(list)
    wanted = {p for rows in published.values() for p, _ in rows if p in planned}
    for p in sorted(wanted):
        by_video[planned[p].video_file].append(planned[p])
    missing = []
    for video_file, clips in sorted(by_video.items()):
        src = root / video_file
        if not src.is_file():
            missing.append(video_file)
            continue
        todo = [c for c in clips if not clip_path[c.path].is_file()]
        if todo:
            cut_video(src, todo, clip_path)
    counts = {}
    for split in SPLITS:
        rows = [(p, lab) for p, lab in published.get(split, []) if p in wanted and clip_path[p].is_file()]
        samples = [
            Sample(
                key=sample_key(p.removesuffix(".mp4")),
                members=(
                    ("mp4", str(clip_path[p])),
                    ("cls", str(lab).encode()),
                    (
                        "json",
                        json.dumps({**planned[p].to_dict(), "split": split, "label_id": lab}, sort_keys=True).encode(),
                    ),
                ),
                fingerprint="",
            )
            for p, lab in rows
        ]
        write_shard(base / f"{split}-000000.tar", samples)
        (base / f"{split}.csv").write_text("".join(surgrec_row(planned[p]) + "\n" for p, _ in rows))
        counts[split] = len(rows)
    if missing and not any(counts.values()):
        raise MissingInput(f"{root}: none of the source videos found (first: {missing[0]})")
    return {"dataset": spec.name, "clips": counts, "missing_videos": missing}
