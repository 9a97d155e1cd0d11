"""Each cheaper decode that ``clips.timing: fast`` could take, measured before keeping it: CPU time of the clip
pass (the ffmpeg command the clip stage runs) and every output frame's timestamp error, on the real clips.

CPU seconds (user + system of ffmpeg) rather than wall time, because the machine is shared: the ratio to the full
decode is what matters. Also the CPU a build spends per file (ffprobe, ffmpeg start-up, the clip pass in exact and
fast mode) against the decode-only ceiling, which bounds the build's ratio to the ceiling before any other cost.
Results: ``bench/results/throughput_decode_choices.{md,json}``.

    .venv/bin/python bench/decode_choices.py [--fps 2] [--size 112]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from builders.stages.clip import build_command
from builders.stages.probe import probe_video
from builders.stages.timing import FULL, DecodeChoice, Timeline, choose_decode
from corpus.manifest import ClipSpec
from corpus.testing import REAL

FAST_PASS = "clip pass, fast (each file's choice)"
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


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(files: list[Path], spec: ClipSpec, choice: DecodeChoice | None) -> dict:
    """CPU and per-frame errors of the clip pass with ``choice`` (None: each file's own fast choice)."""
    errors, cpu = [], 0.0
    for f in files:
        row = probe_video(str(f))
        pick = choice or choose_decode(row, spec.fps, spec.size)
        with tempfile.TemporaryDirectory() as work:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cmd = build_command(str(f), spec, None, Path(work), "ultrafast", pick, row["fps"])
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


def _budget(files: list[Path], spec: ClipSpec) -> dict:
    """Per-file CPU of everything a build runs per file, against the decode-only ceiling of the same files."""
    out = {}
    t = _cpu()
    for f in files:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(f), "-f", "null", "-"], check=True
        )
    out["ceiling"], t = _cpu() - t, _cpu()
    for f in files:
        probe_video(str(f))
    out["probe (ffprobe, headers)"], t = _cpu() - t, _cpu()
    for _ in files:
        subprocess.run(["ffprobe", "-version"], capture_output=True, check=True)
    out["ffprobe start-up alone (-version)"], t = _cpu() - t, _cpu()
    for _ in files:
        subprocess.run(["ffmpeg", "-version"], capture_output=True, check=True)
    out["ffmpeg start-up alone (-version)"] = _cpu() - t
    out["clip pass, exact"] = _run(files, spec, FULL)["cpu_s"]
    out[FAST_PASS] = _run(files, spec, None)["cpu_s"]
    return out


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
    budget = _budget(videos, spec)
    load = os.getloadavg()[0]
    (args.out / "throughput_decode_choices.json").write_text(
        json.dumps({"choices": results, "per_file_cpu_s": budget, "files": len(videos), "load": load}, indent=1)
    )
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
    ceiling = budget["ceiling"]
    probe = budget["probe (ffprobe, headers)"]
    md += [
        "",
        f"## What a build runs per file, against the decode-only ceiling ({len(videos)} real files, load {load:.1f})",
        "",
        "| summed over the files | CPU s | × ceiling |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {v:.2f} | {v / ceiling:.2f} |" for k, v in budget.items()),
        "",
        "With nothing else in a build (no start-up, tables, scheduling), one ffprobe and one clip pass per file "
        f"bound the build at **{ceiling / (probe + budget['clip pass, exact']):.2f}** × the ceiling in exact mode and "
        f"**{ceiling / (probe + budget[FAST_PASS]):.2f}** in fast mode "
        "(CPU-bound on every core). The ceiling itself pays one ffmpeg start-up per file.",
    ]
    (args.out / "throughput_decode_choices.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
