"""End-to-end build throughput against the ffmpeg decode-only ceiling, on the same files in the same run.

Ceiling: ``ffmpeg -threads 1 -i X -f null -`` with one process per core. Also measured: a direct ffmpeg transform
of the same job (fps + scale + crop + x264, one process per core, no Python). The build is ``surgcorpus build``
on a fresh build dir (fetch, probe, clip, dedup, split, shard, catalog). All three report source frames decoded
per second; results go to ``bench/results/throughput.{json,md}``.

    .venv/bin/python bench/throughput.py [--inputs DIR] [--workers N] [--preset ultrafast]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from builders.pipeline import build
from builders.stages.probe import probe_video
from builders.tools import ffmpeg_version
from corpus.manifest import CorpusManifest
from corpus.testing import REAL, make_video


def _inputs(folder: Path) -> dict[str, list[Path]]:
    """Two input sets. ``h264``: what surgical corpora mostly hold (H.264 at 480p-720p, 25 fps): four synthetic
    720p videos of 90 s plus the real CholecT50 clips when ../shared is present. ``all``: the same plus the real
    JIGSAWS trials (MPEG-4 Part 2, 640x480), whose decode is so cheap that encoding dominates any transform."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [
        "mandelbrot=size=1280x720:rate=25",
        "testsrc2=size=1280x720:rate=25",
        "cellauto=size=1280x720:rate=25:rule=30",
        "life=size=1280x720:rate=25:seed=5",
    ]
    h264 = []
    for i, src in enumerate(sources):
        out = folder / f"synthetic90_{i}.mp4"
        if not out.exists():
            codec = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p")
            make_video(out, 90, source=src, codec=codec)
        h264.append(out)
    cholec = REAL / "Moshintha20__CholecT50-Cholec80-Task-Phase-Groupings" / "dataset"
    jigsaws = REAL / "anidhi__homework3_JIGSAWS" / "JIGSAW" / "Suturing" / "video"
    if cholec.exists():
        h264 += sorted(p for p in cholec.rglob("*.mp4") if p.stat().st_size > 10_000)
    everything = h264 + (sorted(jigsaws.glob("*.avi")) if jigsaws.exists() else [])
    return {"h264": h264, "all": everything}


def _parallel(cmds: list[list[str]], workers: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for r in pool.map(lambda c: subprocess.run(c, capture_output=True), cmds):
            if r.returncode:
                raise RuntimeError(r.stderr.decode()[-500:])
    return time.perf_counter() - t


def _decord_decode(path: str) -> int:
    """decord decode + resize of the frames a clip at 8 fps needs (no encode): the alternative clip decoder."""
    import decord
    import numpy as np

    vr = decord.VideoReader(path, num_threads=1)
    h, w = vr[0].shape[:2]
    scale = 224 / min(h, w)
    vr = decord.VideoReader(path, num_threads=1, width=round(w * scale / 2) * 2, height=round(h * scale / 2) * 2)
    fps = vr.get_avg_fps()
    idx = np.arange(0, len(vr), fps / 8).astype(int)
    n = 0
    for start in range(0, len(idx), 64):
        n += len(vr.get_batch(list(idx[start : start + 64])).asnumpy())
    return n


SPEC = {"fps": 8, "size": 224, "seconds": 4}
FILTER = "fps=8,scale='if(lte(iw,ih),224,-2)':'if(lte(iw,ih),-2,224)':flags=area,crop=224:224"


def _measure(files: list[Path], workers: int, preset: str) -> dict:
    """Ceiling, direct ffmpeg transform, decord decode+resize and the surgcorpus build on the same files."""
    frames = sum(probe_video(str(f))["n_frames"] for f in files)
    ceiling_s = _parallel(
        [["ffmpeg", "-v", "error", "-threads", "1", "-i", str(f), "-f", "null", "-"] for f in files], workers
    )
    direct_dir = Path(tempfile.mkdtemp())
    direct_s = _parallel(
        [
            [
                "ffmpeg",
                "-v",
                "error",
                "-threads",
                "1",
                "-i",
                str(f),
                "-vf",
                FILTER,
                "-c:v",
                "libx264",
                "-preset",
                preset,
                "-threads",
                "1",
                "-f",
                "segment",
                "-segment_time",
                "4",
                str(direct_dir / f"{i}_%04d.mp4"),
            ]
            for i, f in enumerate(files)
        ],
        workers,
    )
    shutil.rmtree(direct_dir)
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decord_decode, [str(f) for f in files]))
    decord_s = time.perf_counter() - t
    builds = {}
    for decoder in ("ffmpeg", "decord"):
        build_dir = Path(tempfile.mkdtemp()) / "build"
        videos = [{"uri": str(f), "id": f"{i:03d}_{f.stem}"} for i, f in enumerate(files)]
        manifest = CorpusManifest.model_validate(
            {
                "name": "bench",
                "clips": {**SPEC, "decoder": decoder},
                "sources": [{"name": "bench", "domain": "laparoscopy", "root": "/", "videos": videos}],
            }
        )
        summary = build(manifest, build_dir, workers=workers, show_progress=False, preset=preset)
        builds[decoder] = summary.stage_seconds
        shutil.rmtree(build_dir.parent)
    build_s = builds["ffmpeg"]["total"]
    decord_build_s = builds["decord"]["total"]
    return {
        "files": [f.name for f in files],
        "source_frames": frames,
        "ceiling_fps": frames / ceiling_s,
        "direct_ffmpeg_fps": frames / direct_s,
        "decord_decode_resize_fps": frames / decord_s,
        "build_fps": frames / build_s,
        "direct_over_ceiling": ceiling_s / direct_s,
        "decord_over_ceiling": ceiling_s / decord_s,
        "build_over_ceiling": ceiling_s / build_s,
        "build_stage_seconds": builds["ffmpeg"],
        "decord_build_fps": frames / decord_build_s,
        "decord_build_over_ceiling": ceiling_s / decord_build_s,
        "decord_build_stage_seconds": builds["decord"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "surgcorpus-bench-inputs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    sets = _inputs(args.inputs)
    results = {name: _measure(files, args.workers, args.preset) for name, files in sets.items()}
    load = os.getloadavg()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average before {load[0]:.2f}",
        "ffmpeg": ffmpeg_version(),
        "workers": args.workers,
        "clip_spec": SPEC,
        "preset": args.preset,
        "goal": "build_over_ceiling >= 0.8",
        "sets": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(report, indent=1))
    md = [
        "# Build throughput vs the ffmpeg decode-only ceiling",
        "",
        f"{report['date']}, {report['machine']}, {report['ffmpeg']}, {args.workers} workers, clips {SPEC}, "
        f"x264 preset {args.preset}. Source frames decoded per second, and the fraction of the ceiling "
        "(`ffmpeg -threads 1 -i X -f null -`, one process per core) on the same files in the same run.",
    ]
    for name, r in results.items():
        md += [
            "",
            f"## {name}: {len(r['files'])} files, {r['source_frames']} source frames",
            "",
            "| run | source frames/s | fraction of ceiling |",
            "| --- | ---: | ---: |",
            f"| ffmpeg decode only (ceiling) | {r['ceiling_fps']:.0f} | 1.00 |",
            f"| direct ffmpeg transform (no Python) | {r['direct_ffmpeg_fps']:.0f} | {r['direct_over_ceiling']:.2f} |",
            f"| **surgcorpus build, end to end** (default ffmpeg decoder) | {r['build_fps']:.0f} | "
            f"**{r['build_over_ceiling']:.2f}** |",
            f"| surgcorpus build, end to end, `clips.decoder: decord` | {r['decord_build_fps']:.0f} | "
            f"{r['decord_build_over_ceiling']:.2f} |",
            f"| decord decode + resize only, no encode | {r['decord_decode_resize_fps']:.0f} | "
            f"{r['decord_over_ceiling']:.2f} |",
            "",
            "Build stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r["build_stage_seconds"].items()),
        ]
    (args.out / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
