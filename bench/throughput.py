"""Build throughput, exact and fast timing, against the ffmpeg full-decode ceiling on the same files in the same run.

Two corpora: ``long`` (three generated 60 s 720p H.264 videos with B-frames) and ``short_real`` (every real clip in
``../shared/data/real``: CholecT50, LighTDiff, JIGSAWS; skipped when absent). For each, in one run:

- ceiling: ``ffmpeg -threads 1 -i X -f null -``, one process per worker;
- ``surgcorpus build`` as a user runs it (a fresh process and build dir, ``--workers N``), once with
  ``clips.timing: exact`` and once with ``fast``; wall time, stage times (from the build log), peak memory of the
  largest process of the build (``ru_maxrss`` of its process tree), clip counts;
- fast mode's decode choices (from the build log) and its timestamp errors in source frames: per output frame (the
  histogram each clip pass logs; the goal's "median timestamp error") and per clip (``clips.max_timestamp_error_s``);
- the decode-only floor of fast mode's choices (``ffmpeg -threads 1 <choice> -i X -f null -``, same files, same
  workers), and where the rest of each build's wall time goes (stage seconds, and start-up/tables/exit);
- ``surgcorpus --help`` start-up time (median wall and CPU of 7 runs).

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
import resource
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
from builders.stages.timing import choose_decode
from builders.tools import ffmpeg_version
from corpus.testing import REAL, make_video

SPEC = {"fps": 2, "size": 112, "seconds": 4}  # a pretraining corpus: few frames per second, small, 4 s clips
GOALS = {
    "exact_over_ceiling": 0.85,
    "fast_over_ceiling": 1.2,
    "median_error_frames_below": 1.0,
    "peak_rss_mib": 250,
    "help_s": 0.5,
}
SURGCORPUS = Path(sys.executable).with_name("surgcorpus")
_STAGE = re.compile(r"stage (\w+): ([\d.]+) s")
_DECODE = re.compile(r": ([\w+]+) decode, \d+ frames")
_REJECTED = re.compile(r": ([\w+]+) decode rejected")
_ERRORS = re.compile(r": timestamp errors per output frame: (\{.*\})")


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


def _ceiling(files: list[Path], workers: int, options: dict[Path, tuple[str, ...]] | None = None) -> float:
    """Wall seconds of ``ffmpeg -threads 1 [options] -i X -f null -`` over ``files``, ``workers`` at a time."""
    options = options or {}
    cmds = [
        ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", *options.get(f, ()), "-i", str(f), "-f", "null", "-"]
        for f in files
    ]
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
    per_frame: Counter = Counter()  # timestamp error (source frames, quarter-frame bins) -> output frames
    for hist in _ERRORS.findall(worker_logs):
        per_frame.update({float(k): n for k, n in json.loads(hist).items() if k != "nan"})
    stages = {k: float(v) for k, v in _STAGE.findall(log)}
    return {
        "wall_s": wall,
        "peak_rss_mib": int(res.stdout.strip().splitlines()[-1]) / 1024,
        "stage_seconds": stages,
        "outside_stages_s": wall - sum(stages.values()),  # start-up, tables, catalog, report figures, exit
        "clips": len(clips),
        "decoded_frames": sum(int(v["n_frames"] or 0) for v in videos.values()),
        "decodes": dict(Counter(_DECODE.findall(worker_logs))),
        "rejected": dict(Counter(_REJECTED.findall(worker_logs))),
        "error_frames_per_output_frame": _weighted_quantiles(per_frame),
        "max_error_frames_per_clip": _quantiles(err_frames),
    }


_Q = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {q: float(np.quantile(a, p)) for q, p in _Q}


def _weighted_quantiles(counts: Counter) -> dict:
    """Quantiles (lower: a value that occurs) of a histogram {value: count}."""
    if not counts:
        return {}
    values = np.array(sorted(counts))
    cum = np.cumsum([counts[v] for v in values])
    return {q: float(values[np.searchsorted(cum, p * cum[-1] - 1e-9)]) for q, p in _Q}


def _help_seconds(runs: int = 7) -> dict:
    """Median wall and CPU seconds of ``surgcorpus --help``."""
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([str(SURGCORPUS), "--help"], capture_output=True, check=True)
        wall.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu)), "load": os.getloadavg()[0]}


def _measure(files: list[Path], workers: int) -> dict:
    rows = {f: probe_video(str(f)) for f in files if f.stat().st_size > 10_000}
    frames = sum(r["n_frames"] for r in rows.values())
    fast_args = {f: choose_decode(r, SPEC["fps"], SPEC["size"]).input_args for f, r in rows.items()}
    work = Path(tempfile.mkdtemp(prefix="surgcorpus-bench-"))
    try:
        ceiling_s = _ceiling(files, workers)
        builds = {timing: _build(files, workers, timing, work) for timing in ("exact", "fast")}
        floor_s = _ceiling(files, workers, fast_args)  # what fast's decodes cost alone, nothing around them
        ceiling_again_s = _ceiling(files, workers)  # the load can change during a run: measured before and after
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ceiling = (ceiling_s + ceiling_again_s) / 2
    return {
        "files": len(files),
        "source_frames": frames,
        "ceiling_s": [ceiling_s, ceiling_again_s],
        "ceiling_fps": frames / ceiling,
        "fast_decode_floor_s": floor_s,
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
    help_s = _help_seconds()
    results = {name: _measure(files, args.workers) for name, files in sets.items()}
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "ffmpeg": ffmpeg_version(),
        "workers": args.workers,
        "clip_spec": SPEC,
        "goals": GOALS,
        "help": help_s,
        "decode_choices": _decode_choices(args.out / "throughput_decode_choices.json"),
        "sets": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(report, indent=1))
    md = _markdown(report)
    (args.out / "throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _decode_choices(path: Path) -> dict | None:
    """The per-file CPU shares that ``bench/decode_choices.py`` measured (as fractions of the ceiling), if run."""
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    cpu = d["per_file_cpu_s"]
    ceiling = cpu["ceiling"]
    return {
        "files": d["files"],
        "load": d["load"],
        "probe": cpu["probe (ffprobe, headers)"] / ceiling,
        "ffprobe_start": cpu["ffprobe start-up alone (-version)"] / ceiling,
        "exact": cpu["clip pass, exact"] / ceiling,
        "fast": cpu["clip pass, fast (each file's choice)"] / ceiling,
    }


def _goal_rows(report: dict) -> list[str]:
    rows = []
    for name, r in report["sets"].items():
        e, f = r["builds"]["exact"], r["builds"]["fast"]
        ceiling = float(np.mean(r["ceiling_s"]))
        for t, b in (("exact", e), ("fast", f)):
            goal, got = GOALS[f"{t}_over_ceiling"], r[f"{t}_over_ceiling"]
            need = ceiling / goal
            miss = (
                ""
                if got >= goal
                else (
                    f"short by {goal - got:.2f}: needs a {need:.1f} s build, took {b['wall_s']:.1f} s "
                    f"(clip stage {b['stage_seconds'].get('clip', 0):.1f} s, other stages "
                    f"{sum(v for k, v in b['stage_seconds'].items() if k != 'clip'):.1f} s, start-up/tables/exit "
                    f"{b['outside_stages_s']:.1f} s)"
                )
            )
            rows.append(
                f"| {name} | `{t}` × ceiling ≥ {goal} | **{got:.2f}** | {'yes' if not miss else 'no'} | {miss} |"
            )
        same = e["clips"] == f["clips"]
        rows.append(
            f"| {name} | fast clips = exact clips | {f['clips']} / {e['clips']} | {'yes' if same else 'no'} | |"
        )
        med = f["error_frames_per_output_frame"].get("p50", float("nan"))
        clip_med = f["max_error_frames_per_clip"].get("p50", float("nan"))
        rows.append(
            f"| {name} | fast median timestamp error < 1 source frame (per output frame) | **{med:.2f}** | "
            f"{'yes' if med < 1 else 'no'} | per clip (its largest error) the median is {clip_med:.2f} |"
        )
        peak = max(e["peak_rss_mib"], f["peak_rss_mib"])
        over = (
            ""
            if peak <= GOALS["peak_rss_mib"]
            else f"over by {peak - GOALS['peak_rss_mib']:.0f} MiB (largest process of the build's tree)"
        )
        rows.append(f"| {name} | no process above 250 MiB | {peak:.0f} MiB | {'yes' if not over else 'no'} | {over} |")
    h = report["help"]
    ok = h["wall_s"] < GOALS["help_s"]
    rows.append(
        f"| — | `surgcorpus --help` < 0.5 s | **{h['wall_s']:.2f} s** wall, {h['cpu_s']:.2f} s CPU "
        f"(median of 7, load {h['load']:.1f}) | {'yes' if ok else 'no'} | |"
    )
    return rows


def _markdown(report: dict) -> list[str]:
    load_before, load_after = report["load_average_before_after"]
    md = [
        "# Build throughput: exact and fast timing vs the ffmpeg full-decode ceiling",
        "",
        f"{report['date']}, {report['machine']}, load average {load_before:.1f} before / {load_after:.1f} after "
        "(machine shared with other work: read the ratios, not the absolute rates), "
        f"{report['ffmpeg'].split(' Copyright')[0]}, {report['workers']} workers, clips {report['clip_spec']}. "
        "Ceiling: `ffmpeg -threads 1 -i X -f null -` on the same files with the same worker count (one process per "
        "file, `workers` at a time, so an odd file count leaves a core idle in the ceiling exactly as in the "
        "build), in the same run (mean of one run before and one after the builds). Builds: `surgcorpus build` end "
        "to end in a fresh process. Fast decode floor: the same ceiling command with each file's fast decode "
        "options (`-skip_frame noref`, `-lowres N`), i.e. what fast mode's decoding costs with nothing around it.",
        "",
        "## Goals",
        "",
        "| corpus | goal | measured | met | by how much, and where the time went |",
        "| --- | --- | ---: | --- | --- |",
        *_goal_rows(report),
    ]
    md += ["", "## Why the throughput goals are missed", ""]
    for name, r in report["sets"].items():
        ceiling = float(np.mean(r["ceiling_s"]))
        for t in ("exact", "fast"):
            b = r["builds"][t]
            clip = b["stage_seconds"].get("clip", 0.0)
            rest = b["wall_s"] - clip
            md.append(
                f"- {name}, {t}: the clip stage alone takes {clip / ceiling:.2f} × the ceiling's time, everything "
                f"else {rest:.1f} s ({rest / ceiling:.2f} ×); the goal allows {1 / GOALS[f'{t}_over_ceiling']:.2f} × "
                "for the whole build."
            )
    choices = report.get("decode_choices")
    if choices:
        probe = choices["probe"]
        md.append(
            f"- Per file, on the real clips ({choices['files']} files, `bench/decode_choices.py`, load "
            f"{choices['load']:.1f}): one ffprobe costs {choices['probe']:.2f} × the ceiling's CPU (its start-up "
            f"alone {choices['ffprobe_start']:.2f}), the clip pass {choices['exact']:.2f} (exact) and "
            f"{choices['fast']:.2f} (fast): with nothing else at all a build could reach "
            f"{1 / (probe + choices['exact']):.2f} (exact) and {1 / (probe + choices['fast']):.2f}"
            " (fast) on CPU-bound cores."
        )
    md.append("- Separate measurements (driver memory, start-up, proposals): `throughput_analysis.md`.")
    for name, r in report["sets"].items():
        e, f = r["builds"]["exact"], r["builds"]["fast"]
        ceiling = float(np.mean(r["ceiling_s"]))
        md += [
            "",
            f"## {name}: {r['files']} files, {r['source_frames']} source frames",
            "",
            "| run | wall s | source frames/s | × ceiling | clips | peak RSS MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| ffmpeg full decode (ceiling) | {ceiling:.1f} | {r['ceiling_fps']:.0f} | 1.00 | | |",
            f"| ffmpeg, fast's decode options (floor) | {r['fast_decode_floor_s']:.1f} | "
            f"{r['source_frames'] / r['fast_decode_floor_s']:.0f} | {ceiling / r['fast_decode_floor_s']:.2f} | | |",
        ]
        for t, b in (("exact", e), ("fast", f)):
            md.append(
                f"| `timing: {t}` | {b['wall_s']:.1f} | {r['source_frames'] / b['wall_s']:.0f} | "
                f"**{r[f'{t}_over_ceiling']:.2f}** | {b['clips']} | {b['peak_rss_mib']:.0f} |"
            )
        md += ["", "Where each build's wall time went (seconds):", ""]
        names = list(dict.fromkeys([*e["stage_seconds"], *f["stage_seconds"]]))
        md += [
            "| build | " + " | ".join(names) + " | start-up, tables, catalog, exit | total |",
            "| --- |" + " ---: |" * (len(names) + 2),
        ]
        for t, b in (("exact", e), ("fast", f)):
            cells = " | ".join(f"{b['stage_seconds'].get(k, 0):.2f}" for k in names)
            md.append(f"| {t} | {cells} | {b['outside_stages_s']:.2f} | {b['wall_s']:.2f} |")
        fmt = ", ".join
        md += [
            "",
            f"Fast decodes: {f['decodes']}; rejected and redone: {f['rejected'] or 'none'}.",
            "",
            "Timestamp error in source frames, per output frame: fast "
            + fmt(f"{k} {v:.2f}" for k, v in f["error_frames_per_output_frame"].items())
            + "; exact "
            + fmt(f"{k} {v:.2f}" for k, v in e["error_frames_per_output_frame"].items())
            + ". Largest per clip: fast "
            + fmt(f"{k} {v:.2f}" for k, v in f["max_error_frames_per_clip"].items())
            + "; exact "
            + fmt(f"{k} {v:.2f}" for k, v in e["max_error_frames_per_clip"].items())
            + ".",
        ]
    return md


if __name__ == "__main__":
    main()
