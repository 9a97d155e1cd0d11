"""1 vs 2 workers, local executor vs Ray on one machine: the same corpus built from scratch with each, in one run.

Corpus: ``--videos`` generated 640x360 H.264 videos of ``--seconds`` s (different lavfi sources), clipped as a
pretraining corpus (2 fps, 112 px, 4 s clips). Configurations, repeated ``--reps`` times in interleaved order (so a
change of load hits all alike): ``local-1`` (in the driver process), ``local-2`` (process pool), ``ray-1`` and
``ray-2`` (a local Ray started with 1 or 2 CPUs). Each build runs in a fresh process, as a user's build does, so
every configuration pays its own imports (an earlier build in the same process would have left modules such as
the phash and tar writers imported for the local executor, never for Ray's fresh workers). The build time is
``build()``'s wall time; each executor's start-up is timed apart: for Ray, ``RayExecutor.start(wait=True)``
(``ray.init`` and every worker slot warmed with the stage modules, as the driver has them imported before
``build()``); for ``local-2`` the same for its process pool (started and warmed before the build); ``local-1`` has
none. The end-to-end time (start-up + build) is reported beside it. Every build must produce the same shards
(sha256), which the script checks. Goal: Ray within 10 % of local.

Shared, noisy machine: the load average before and after is written beside the times; read the ratios.
Results: ``bench/results/ray_scaling.{json,md}``.

    .venv/bin/python bench/ray_scaling.py [--videos 8] [--seconds 30] [--reps 2]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from builders.executors.local import LocalExecutor
from builders.executors.ray import RayExecutor
from builders.pipeline import build
from corpus.manifest import load_manifest
from corpus.testing import make_video

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    "mandelbrot",
    "testsrc2",
    "cellauto=rule=30",
    "life=seed=5",
    "smptebars",
    "rgbtestsrc",
    "testsrc",
    "yuvtestsrc",
]
CONFIGS = ["local-1", "local-2", "ray-1", "ray-2"]


def _inputs(folder: Path, n: int, seconds: float) -> Path:
    for i in range(n):
        out = folder / "videos" / f"v{i:02d}.mp4"
        if not out.exists():
            name, _, opts = SOURCES[i % len(SOURCES)].partition("=")
            spec = f"{name}=size=640x360:rate=25" + (f":{opts}" if opts else "")
            make_video(out, seconds, source=spec, vf=f"hue=h={37 * i}")  # distinct videos: no near duplicates
    manifest = {
        "name": "scaling",
        "sources": [
            {"name": "gen", "domain": "laparoscopy", "root": str(folder / "videos"), "videos": {"glob": "*.mp4"}}
        ],
        "clips": {"fps": 2, "size": 112, "seconds": 4},
        "split": {"val": 0.1, "test": 0.1, "seed": 0},
    }
    path = folder / "scaling.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def _digests(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "shards").rglob("*.tar"))
    }


def _warm_local(modules: list[str]) -> int:
    """In a local pool worker: import the stage modules (what ``RayExecutor.start`` does in Ray's workers)."""
    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def _one(config: str, manifest: Path, out: Path) -> dict:
    """One build in this process (``_child``): the executor's start-up (its worker processes up, with the stage
    modules imported; nothing for local-1, which runs units in this process) timed apart, then ``build()``."""
    kind, workers = config.split("-")
    startup = 0.0
    if kind == "local":
        executor = LocalExecutor(int(workers), show_progress=False)
        if int(workers) > 1:
            t = time.perf_counter()
            modules = sorted(m for m in sys.modules if m.startswith("builders.stages."))
            pool = executor._get_pool(str(out.resolve()))  # the pool the build will use (same build dir)
            list(pool.map(_warm_local, [modules] * int(workers)))
            startup = time.perf_counter() - t
    else:
        executor = RayExecutor(
            workers=int(workers), show_progress=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}}
        )
        t = time.perf_counter()
        executor.start(wait=True)  # Ray and its warmed workers, timed apart
        startup = time.perf_counter() - t
    try:
        t = time.perf_counter()
        summary = build(load_manifest(manifest), out, executor=executor, show_progress=False)
        wall = time.perf_counter() - t
    finally:
        executor.close()
    return {
        "config": config,
        "build_s": round(wall, 2),
        "startup_s": round(startup, 2),
        "end_to_end_s": round(startup + wall, 2),
        "stage_s": {k: round(v, 2) for k, v in summary.stage_seconds.items()},
        "videos": summary.videos,
        "clips": summary.clips,
        "source_frames": summary.source_frames,
        "shards": _digests(out),
    }


def _fresh(config: str, manifest: Path, out: Path) -> dict:
    """``_one`` in a fresh Python process."""
    result = out.with_suffix(".json")
    cmd = [sys.executable, __file__, "_child", config, str(manifest), str(out), str(result)]
    load = os.getloadavg()[0]
    subprocess.run(cmd, check=True)
    return {**json.loads(result.read_text()), "load_average_before": round(load, 2)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        config, manifest, out, result = sys.argv[2:6]
        logging.basicConfig(level=logging.WARNING)
        Path(result).write_text(json.dumps(_one(config, Path(manifest), Path(out))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="surgcorpus-ray-bench-") as tmp:
        work = Path(tmp)
        manifest = _inputs(work, args.videos, args.seconds)
        load_before = os.getloadavg()[0]
        runs = []
        for rep in range(args.reps):
            for config in CONFIGS:
                run = _fresh(config, manifest, work / f"{config}-{rep}")
                runs.append(run)
                print(f"{config} rep {rep}: {run['build_s']} s (start-up {run['startup_s']} s)", flush=True)
        load_after = os.getloadavg()[0]

    reference = runs[0]["shards"]
    identical = all(r["shards"] == reference for r in runs)
    per = {c: statistics.median(r["build_s"] for r in runs if r["config"] == c) for c in CONFIGS}
    e2e = {c: statistics.median(r["end_to_end_s"] for r in runs if r["config"] == c) for c in CONFIGS}
    ratios = {
        "ray-1 / local-1": round(per["ray-1"] / per["local-1"], 3),
        "ray-2 / local-2": round(per["ray-2"] / per["local-2"], 3),
        "local-1 / local-2 (speed-up)": round(per["local-1"] / per["local-2"], 3),
        "ray-1 / ray-2 (speed-up)": round(per["ray-1"] / per["ray-2"], 3),
        "ray-1 / local-1, end to end (with start-up)": round(e2e["ray-1"] / e2e["local-1"], 3),
        "ray-2 / local-2, end to end (with start-up)": round(e2e["ray-2"] / e2e["local-2"], 3),
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "corpus": {"videos": args.videos, "seconds": args.seconds, "size": "640x360", "clips": runs[0]["clips"]},
        "source_frames": runs[0]["source_frames"],
        "median_build_s": per,
        "median_end_to_end_s": e2e,
        "ratios": ratios,
        "goal": "Ray on one machine within 10 % of the local executor (ray-N / local-N <= 1.10)",
        "shards_identical_across_all_runs": identical,
        "runs": [{k: v for k, v in r.items() if k != "shards"} for r in runs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_scaling.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Local executor vs Ray, 1 vs 2 workers",
        "",
        f"{report['date']}, {report['machine']}, load average {load_before:.1f} before / {load_after:.1f} after "
        "(a machine shared with other work: read the ratios of runs interleaved in one session).",
        f"Corpus: {args.videos} generated 640x360 H.264 videos x {args.seconds:g} s ({report['source_frames']} source "
        f"frames), clips at 2 fps, 112 px, 4 s; {args.reps} interleaved repetitions, medians; each build in a fresh "
        "process; executor start-up (workers up and warm) timed apart. `bench/ray_scaling.py`.",
        "",
        "| config | median build (s) | start-up (s) | median end to end (s) |",
        "| --- | --- | --- | --- |",
    ]
    for c in CONFIGS:
        startup = [r["startup_s"] for r in runs if r["config"] == c]
        lines.append(f"| {c} | {per[c]:.1f} | {statistics.median(startup):.1f} | {e2e[c]:.1f} |")
    lines += ["", "| ratio | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in ratios.items()]
    lines += [
        "",
        f"Goal: {report['goal']}. Shards byte-identical across all {len(runs)} builds: {identical}.",
    ]
    (args.out / "ray_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
