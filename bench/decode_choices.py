"""Each cheaper decode that ``clips.timing: fast`` could take, measured before keeping it: CPU time of the clip
pass (the ffmpeg command the clip stage runs) and every output frame's timestamp error, on the real clips.

CPU seconds (user + system of ffmpeg) rather than wall time, because the machine is shared: the ratio to the full
decode is what matters. Results: ``bench/results/throughput_decode_choices.{md,json}``.

    .venv/bin/python bench/decode_choices.py [--fps 2] [--size 112]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from builders.stages.clip import build_command
from builders.stages.probe import probe_video
from builders.stages.timing import FULL, DecodeChoice, Timeline
from corpus.manifest import ClipSpec
from corpus.testing import REAL

CHOICES = {
    "h264 (CholecT50, LighTDiff)": [
        FULL,
        DecodeChoice("noref", ("-skip_frame", "noref"), 0, 2.0),
        DecodeChoice("bidir", ("-skip_frame", "bidir"), 0, 4.0),
    ],
    "mpeg4 avi (JIGSAWS)": [
        FULL,
        DecodeChoice("noref", ("-skip_frame", "noref"), 0, 2.0),
        DecodeChoice("lowres2", ("-lowres", "2"), 2, 1.0),
        DecodeChoice("noref+lowres2", ("-skip_frame", "noref", "-lowres", "2"), 2, 2.0),
    ],
}


def _run(files: list[Path], spec: ClipSpec, choice: DecodeChoice) -> dict:
    errors, cpu = [], 0.0
    for f in files:
        row = probe_video(str(f))
        with tempfile.TemporaryDirectory() as work:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd = build_command(str(f), spec, None, Path(work), "ultrafast", choice, row["fps"])
            res = subprocess.run(cmd, capture_output=True, check=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        timeline = Timeline.parse(res.stderr.decode(errors="replace").splitlines())
        errors += list(timeline.errors_s(spec.fps) * row["fps"])
    e = np.asarray(errors)
    return {
        "cpu_s": cpu,
        "output_frames": len(e),
        "error_frames": {q: float(np.quantile(e, p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("max", 1.0))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=2)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    spec = ClipSpec(fps=args.fps, size=args.size, seconds=4)
    videos = sorted(p for p in REAL.rglob("*") if p.suffix in (".mp4", ".avi") and p.stat().st_size > 10_000)
    groups = {
        "h264 (CholecT50, LighTDiff)": [p for p in videos if p.suffix == ".mp4"],
        "mpeg4 avi (JIGSAWS)": [p for p in videos if p.suffix == ".avi"],
    }
    results = {g: {c.name: _run(files, spec, c) for c in CHOICES[g]} for g, files in groups.items() if files}
    (args.out / "throughput_decode_choices.json").write_text(json.dumps(results, indent=1))
    md = [
        "# Cheaper decodes for `clips.timing: fast`, measured",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}; the clip stage's ffmpeg command on the real clips of ../shared/data/real,"
        f" clips at {args.fps:g} fps, {args.size} px. CPU seconds of ffmpeg (user + system; a shared machine makes "
        "wall time meaningless) and each output frame's timestamp error in source frames, read from the pass's "
        "own showinfo taps.",
    ]
    for group, runs in results.items():
        full = runs["full"]["cpu_s"]
        md += [
            "",
            f"## {group}",
            "",
            "| decode | CPU s | speed-up | error p50 | p90 | max |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in runs.items():
            q = r["error_frames"]
            errors = " | ".join(f"{q[k]:.2f}" for k in ("p50", "p90", "max"))
            md.append(f"| {name} | {r['cpu_s']:.2f} | {full / r['cpu_s']:.2f} | {errors} |")
    (args.out / "throughput_decode_choices.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
