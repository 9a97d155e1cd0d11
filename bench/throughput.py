"""Build throughput, exact and fast timing, against the ffmpeg full-decode ceiling on the same files in the same run.

Two corpora: ``long`` (three generated 60 s 720p H.264 videos with B-frames) and ``short_real`` (every real clip in
``../shared/data/real``: CholecT50, LighTDiff, JIGSAWS; skipped when absent). For each, in one run:

- ceiling: ``ffmpeg -threads 1 -i X -f null -``, one process per worker;
- ``surgcorpus build`` as a user runs it (a fresh process and build dir, ``--workers N``), once with
  ``clips.timing: exact`` and once with ``fast``; wall time, stage times (from the build log), peak memory of the
  largest process of the build (``ru_maxrss`` of its process tree), clip counts;
- fast mode's decode choices (from the build log) and its timestamp-error distribution (``clips.max_timestamp_error_s``
  in source frames of each video).

Shared, noisy machines: only ratios to the ceiling measured in the same run mean anything; the load average before
and after is written beside them. Results: ``bench/results/throughput.{json,md}``.

    .venv/bin/python bench/throughput.py [--inputs DIR] [--workers N] [--sets long,short_real]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from builders.stages.probe import probe_video
from builders.tools import ffmpeg_version
from corpus.testing import REAL, make_video

SPEC = {"fps": 2, "size": 112, "seconds": 4}  # a pretraining corpus: few frames per second, small, 4 s clips
SURGCORPUS = Path(sys.executable).with_name("surgcorpus")
_STAGE = re.compile(r"stage (\w+): ([\d.]+) s")
_DECODE = re.compile(r": ([\w+]+) decode, \d+ frames")
_REJECTED = re.compile(r": ([\w+]+) decode rejected")


def _inputs(folder: Path) -> dict[str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [  # cheap lavfi sources: generating the inputs must not dominate a bench run on 2 shared cores
        "testsrc=size=1280x720:rate=25",
        "testsrc2=size=1280x720:rate=25",
        "cellauto=size=1280x720:rate=25:rule=30",
    ]
    long = []
    for i, src in enumerate(sources):
        out = folder / f"synthetic60_{i}.mp4"
        if not out.exists():  # veryfast: B-frames with a B pyramid, as most H.264 sources have
            make_video(out, 60, source=src, codec=("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"))
        long.append(out)
    real = sorted(p for p in REAL.rglob("*") if p.suffix in (".mp4", ".avi")) if REAL.is_dir() else []
    return {"long": long, "short_real": real}


def _ceiling(files: list[Path], workers: int) -> float:
    cmds = [["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(f), "-f", "null", "-"] for f in files]
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: subprocess.run(c, capture_output=True), cmds))  # a broken file fails alike
    return time.perf_counter() - t


# runs a command and prints the peak RSS (KiB) of the largest process in its tree (Linux folds reaped descendants in)
_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def _build(files: list[Path], workers: int, timing: str, work: Path) -> dict:
    """One ``surgcorpus build`` in a fresh process; its wall time, peak memory, stage times, clips, decodes."""
    manifest = work / f"{timing}.yaml"
    videos = [{"uri": str(f), "id": f"{i:03d}_{f.stem}"} for i, f in enumerate(files)]
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": f"bench-{timing}",
                "clips": {**SPEC, "timing": timing},
                "sources": [{"name": "bench", "domain": "laparoscopy", "root": "/", "videos": videos}],
            }
        )
    )
    out = work / timing
    cmd = [str(SURGCORPUS), "build", str(manifest), "--out", str(out), "--workers", str(workers), "--no-progress"]
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    log = (out / "logs" / "build.log").read_text()
    worker_logs = "".join(p.read_text() for p in sorted((out / "logs").glob("*.log")))  # stages log per worker
    clips = pq.read_table(out / "tables" / "clips.parquet").to_pylist()
    videos = {v["video_id"]: v for v in pq.read_table(out / "tables" / "videos.parquet").to_pylist()}
    err_frames = [
        c["max_timestamp_error_s"] * videos[c["video_id"]]["fps"]
        for c in clips
        if c["max_timestamp_error_s"] is not None
    ]
    return {
        "wall_s": wall,
        "peak_rss_mib": int(res.stdout.strip().splitlines()[-1]) / 1024,
        "stage_seconds": {k: float(v) for k, v in _STAGE.findall(log)},
        "clips": len(clips),
        "decoded_frames": sum(int(v["n_frames"] or 0) for v in videos.values()),
        "decodes": dict(Counter(_DECODE.findall(worker_logs))),
        "rejected": dict(Counter(_REJECTED.findall(worker_logs))),
        "max_error_frames_per_clip": _quantiles(err_frames),
    }


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {q: float(np.quantile(a, p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}


def _measure(files: list[Path], workers: int) -> dict:
    frames = sum(probe_video(str(f))["n_frames"] for f in files if f.stat().st_size > 10_000)
    work = Path(tempfile.mkdtemp(prefix="surgcorpus-bench-"))
    try:
        ceiling_s = _ceiling(files, workers)
        builds = {timing: _build(files, workers, timing, work) for timing in ("exact", "fast")}
        ceiling_again_s = _ceiling(files, workers)  # the load can change during a run: measured before and after
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ceiling = (ceiling_s + ceiling_again_s) / 2
    return {
        "files": len(files),
        "source_frames": frames,
        "ceiling_s": [ceiling_s, ceiling_again_s],
        "ceiling_fps": frames / ceiling,
        **{f"{t}_over_ceiling": ceiling / b["wall_s"] for t, b in builds.items()},
        "builds": builds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "surgcorpus-bench-inputs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sets", default="long,short_real")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    sets = {k: v for k, v in _inputs(args.inputs).items() if k in args.sets.split(",") and v}
    load_before = os.getloadavg()[0]
    results = {name: _measure(files, args.workers) for name, files in sets.items()}
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "ffmpeg": ffmpeg_version(),
        "workers": args.workers,
        "clip_spec": SPEC,
        "goals": "fast >= 1.2 x ceiling, same clips as exact, median error < 1 source frame; exact >= 0.85; "
        "no process above 250 MiB",
        "sets": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(report, indent=1))
    md = [
        "# Build throughput: exact and fast timing vs the ffmpeg full-decode ceiling",
        "",
        f"{report['date']}, {report['machine']}, load average {load_before:.1f} before / "
        f"{report['load_average_before_after'][1]:.1f} after (machine shared with other work: read the ratios, "
        f"not the absolute rates), {report['ffmpeg'].split(' Copyright')[0]}, {args.workers} workers, clips {SPEC}. "
        "Ceiling: `ffmpeg -threads 1 -i X -f null -`, one process per worker, on the same files in the same run "
        "(mean of one run before and one after the builds). Builds: `surgcorpus build` end to end in a fresh process.",
    ]
    for name, r in results.items():
        e, f = r["builds"]["exact"], r["builds"]["fast"]
        md += [
            "",
            f"## {name}: {r['files']} files, {r['source_frames']} source frames",
            "",
            "| run | wall s | source frames/s | × ceiling | clips | peak RSS MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| ffmpeg full decode (ceiling) | {np.mean(r['ceiling_s']):.1f} | {r['ceiling_fps']:.0f} | 1.00 | | |",
        ]
        for t, b in (("exact", e), ("fast", f)):
            md.append(
                f"| `timing: {t}` | {b['wall_s']:.1f} | {r['source_frames'] / b['wall_s']:.0f} | "
                f"**{r[f'{t}_over_ceiling']:.2f}** | {b['clips']} | {b['peak_rss_mib']:.0f} |"
            )
        q = f["max_error_frames_per_clip"]
        md += [
            "",
            "Stage seconds, exact: " + ", ".join(f"{k} {v:.2f}" for k, v in e["stage_seconds"].items()),
            "",
            "Stage seconds, fast: " + ", ".join(f"{k} {v:.2f}" for k, v in f["stage_seconds"].items()),
            "",
            f"Fast decodes: {f['decodes']}; rejected and redone in full: {f['rejected'] or 'none'}.",
            "",
            "Largest timestamp error per clip, in source frames (fast): "
            + ", ".join(f"{k} {v:.2f}" for k, v in q.items())
            + "; exact: "
            + ", ".join(f"{k} {v:.2f}" for k, v in e["max_error_frames_per_clip"].items())
            + ".",
        ]
    (args.out / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
