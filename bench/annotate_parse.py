"""Annotation parsing at corpus scale: generated Cholec80-format phase files through the real adapter and stage.

Generates ``--videos`` phase files of ``--frames`` rows each (``Frame<TAB>Phase`` header, one row per frame at
25 fps, 7 phases in runs, as CAMMA ships them), then measures, each in a fresh process:

- ``parse``: ``cholec80.parse_stream`` alone (read, check, per-frame columns, phase runs);
- ``stage``: ``AnnotateStage.process`` (parse, spool, per-video parts sorted by video/level/frame, zstd Parquet);

reporting rows per wall second and per CPU second (the machine is shared: CPU time is the steadier figure) and
peak RSS. Two sizes show whether memory grows with the source (it should not: one file at a
time). Results: bench/results/annotate_parse.{json,md}; the load average is recorded beside each figure.

    .venv/bin/python bench/annotate_parse.py [--videos 50 250] [--frames 20400]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from corpus.sources.cholec80 import PHASES

RESULTS = Path(__file__).resolve().parent / "results"


def generate(folder: Path, videos: int, frames: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = np.array(PHASES)
    for v in range(videos):
        cuts = np.sort(rng.choice(np.arange(1, frames), len(PHASES) - 1, replace=False))
        phase = np.searchsorted(cuts, np.arange(frames), side="right")
        lines = np.char.add(np.char.add(np.arange(frames).astype(str), "\t"), names[phase])
        (folder / f"video{v + 1:05d}-phase.txt").write_text("Frame\tPhase\n" + "\n".join(lines) + "\n")
    return videos * frames


def _measure(mode: str, folder: str, out: str) -> None:
    """In a fresh process: run ``mode`` once, print rows, seconds and peak RSS as JSON."""
    from builders.stages.annotate import AnnotateStage
    from corpus.sources import cholec80

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime  # imports excluded
    t = time.perf_counter()
    if mode == "parse":
        rows = sum(p.frame_labels.num_rows for p in cholec80.parse_stream(Path(folder)))
    else:
        natives = sorted(p.name.removesuffix("-phase.txt") for p in Path(folder).glob("*-phase.txt"))
        videos = [[f"c80/{n}", n, f"file:///{n}.mp4"] for n in natives]
        row = {"source": "c80", "adapter": "cholec80", "path": folder, "videos": videos}
        res = AnnotateStage(out).process(row)
        rows = next(r["rows"] for r in res.rows if r["table"] == "frame_labels")
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_s": cpu, "peak_rss_mib": usage.ru_maxrss / 1024}))


def run(videos: int, frames: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="annotate-bench-") as tmp:
        folder = Path(tmp) / "phase_annotations"
        t = time.perf_counter()
        n = generate(folder, videos, frames)
        gen_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in folder.iterdir())
        for mode in ("parse", "stage"):
            load = os.getloadavg()[0]
            res = subprocess.run(
                [sys.executable, __file__, "--measure", mode, str(folder), str(Path(tmp) / "build")],
                check=True,
                capture_output=True,
                text=True,
            )
            got = json.loads(res.stdout.strip().splitlines()[-1])
            assert got["rows"] == n, (got, n)
            got.update(
                mode=mode,
                videos=videos,
                frames_per_video=frames,
                bytes=size,
                rows_per_s=n / got["seconds"],
                rows_per_cpu_s=n / got["cpu_s"],
                load_avg_1m=round(load, 2),
                generate_s=round(gen_s, 1),
            )
            print(json.dumps(got))
            out.append(got)
            shutil.rmtree(Path(tmp) / "build", ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, nargs="+", default=[50, 250])
    ap.add_argument("--frames", type=int, default=20_400)
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        _measure(*args.measure)
        return
    results = [r for v in args.videos for r in run(v, args.frames)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "annotate_parse.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# annotate: Cholec80-format phase files through the real adapter and stage",
        "",
        f"`bench/annotate_parse.py`, {args.frames} rows per file (25 fps), one fresh process per figure, 1 core.",
        "",
        "| rows | files | MB | what | wall s | rows/s (wall) | CPU s | rows/CPU-s | peak RSS MiB | load avg (1 min) |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['videos']} | {r['bytes'] / 1e6:.0f} | {r['mode']} | {r['seconds']:.2f} "
            f"| {r['rows_per_s'] / 1e6:.2f}M | {r['cpu_s']:.2f} | {r['rows_per_cpu_s'] / 1e6:.2f}M "
            f"| {r['peak_rss_mib']:.0f} | {r['load_avg_1m']} |"
        )
    lines += [
        "",
        "`parse`: `cholec80.parse_stream` (read, check, per-frame Arrow columns, phase runs). `stage`:",
        "`AnnotateStage.process` (parse, spool a row group per video, rows sorted per video into zstd Parquet parts).",
    ]
    (RESULTS / "annotate_parse.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
