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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builders.pipeline import build
from builders.stages.probe import probe_video
from builders.tools import ffmpeg_version
from corpus.manifest import CorpusManifest
from corpus.testing import REAL, make_video


def _inputs(folder: Path) -> list[Path]:
    """Synthetic 720p laparoscopy-like videos plus the real surgical clips when ../shared is present."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(
        [
            "mandelbrot=size=1280x720:rate=25",
            "testsrc2=size=1280x720:rate=25",
            "cellauto=size=1280x720:rate=25:rule=30",
            "life=size=1280x720:rate=25:seed=5",
        ]
    ):
        out = folder / f"synthetic_{i}.mp4"
        if not out.exists():
            make_video(
                out,
                30,
                source=src,
                codec=("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"),
            )
    files = sorted(folder.glob("*.mp4"))
    cholec = REAL / "Moshintha20__CholecT50-Cholec80-Task-Phase-Groupings" / "dataset"
    if cholec.exists():
        files += sorted(p for p in cholec.rglob("*.mp4") if p.stat().st_size > 10_000)
    return files


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "surgcorpus-bench-inputs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    files = _inputs(args.inputs)
    frames = sum(probe_video(str(f))["n_frames"] for f in files)
    spec = {"fps": 8, "size": 224, "seconds": 4}
    ceiling_s = _parallel(
        [["ffmpeg", "-v", "error", "-threads", "1", "-i", str(f), "-f", "null", "-"] for f in files], args.workers
    )
    vf = "fps=8,scale='if(lte(iw,ih),224,-2)':'if(lte(iw,ih),-2,224)':flags=area,crop=224:224"
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
                vf,
                "-c:v",
                "libx264",
                "-preset",
                args.preset,
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
        args.workers,
    )
    shutil.rmtree(direct_dir)
    from concurrent.futures import ProcessPoolExecutor

    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(_decord_decode, [str(f) for f in files]))
    decord_s = time.perf_counter() - t
    build_dir = Path(tempfile.mkdtemp()) / "build"
    manifest = CorpusManifest.model_validate(
        {
            "name": "bench",
            "clips": spec,
            "sources": [
                {
                    "name": "bench",
                    "domain": "laparoscopy",
                    "root": "/",
                    "videos": [{"uri": str(f), "id": f"{i:03d}_{f.stem}"} for i, f in enumerate(files)],
                }
            ],
        }
    )
    summary = build(manifest, build_dir, workers=args.workers, show_progress=False, preset=args.preset)
    build_s = summary.stage_seconds["total"]
    shutil.rmtree(build_dir.parent)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "ffmpeg": ffmpeg_version(),
        "workers": args.workers,
        "files": len(files),
        "source_frames": frames,
        "clip_spec": spec,
        "preset": args.preset,
        "ceiling_fps": frames / ceiling_s,
        "direct_ffmpeg_fps": frames / direct_s,
        "build_fps": frames / build_s,
        "decord_decode_resize_fps": frames / decord_s,
        "decord_over_ceiling": ceiling_s / decord_s,
        "direct_over_ceiling": ceiling_s / direct_s,
        "build_over_ceiling": ceiling_s / build_s,
        "build_stage_seconds": summary.stage_seconds,
        "goal": "build_over_ceiling >= 0.8",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(result, indent=1))
    md = [
        "# Build throughput vs the ffmpeg decode-only ceiling",
        "",
        f"{result['date']}, {result['machine']}, {result['ffmpeg']}, {args.workers} workers, {len(files)} files, "
        f"{frames} source frames, clips {spec}, x264 preset {args.preset}.",
        "",
        "| run | source frames/s | fraction of ceiling |",
        "| --- | ---: | ---: |",
        f"| ffmpeg decode only (ceiling) | {result['ceiling_fps']:.0f} | 1.00 |",
        f"| direct ffmpeg transform | {result['direct_ffmpeg_fps']:.0f} | {result['direct_over_ceiling']:.2f} |",
        f"| surgcorpus build (end to end) | {result['build_fps']:.0f} | {result['build_over_ceiling']:.2f} |",
        f"| decord decode + resize only, no encode (not used for bulk decode) | "
        f"{result['decord_decode_resize_fps']:.0f} | {result['decord_over_ceiling']:.2f} |",
        "",
        "Stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.stage_seconds.items()),
    ]
    (args.out / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
