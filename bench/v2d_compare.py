"""The same job through surgcorpus and through video2dataset 1.3.0, in one run, against the ffmpeg decode ceiling.

Job: ``--videos`` generated 640x360 H.264 videos of ``--seconds`` s (local files) → 4 s clips (no tail) at 2 fps,
112 px centre crop, H.264 mp4, WebDataset shards, ``--workers`` processes. video2dataset gets the same clip spans
as a ``clips`` column (ClippingSubsampler, ``precision: exact``), then ResolutionSubsampler (``scale`` + ``crop``
to 112) and FrameSubsampler (2 fps), multiprocessing distributor with ``--workers`` processes, each given one
input shard of ``videos / workers`` rows (video2dataset parallelises over input shards).

video2dataset is never a project dependency: it runs from its own venv (``--v2d-python``), built with PyPI only
(its 1.3.0 metadata pins torch 2.1.2, which it imports at start-up for captioning workers, with CUDA libraries)::

    python3.11 -m venv /tmp/v2d-venv && P=/tmp/v2d-venv/bin/pip
    $P install --no-deps video2dataset==1.3.0 torchdata==0.7.1 torchaudio==2.1.2 transformers==4.37.1 einops \
        yt-dlp langdetect soundfile accelerate
    $P install "pyarrow<16" "numpy<2" "fire<0.6" requests ffmpeg-python fsspec webdataset pandas tqdm omegaconf \
        timeout-decorator webvtt-py "scenedetect[opencv]==0.6.2" wandb==0.16.3 "huggingface_hub>=0.19.3,<0.21" \
        "tokenizers>=0.14,<0.19" safetensors regex torch==2.1.2 decord Pillow scipy

and the two source changes in ``V2D_CHANGES`` (applied by ``--patch``, listed in the results). Throughput is source
frames per second of wall time; the goal is surgcorpus ≥ 4× video2dataset. Shared, noisy machine: read the ratios
measured in the same run. Results: ``bench/results/v2d_compare.{json,md}``.

    .venv/bin/python bench/v2d_compare.py --v2d-python /tmp/v2d-venv/bin/python [--videos 4] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from corpus.testing import make_video

REPO = Path(__file__).resolve().parents[1]
SURGCORPUS = Path(sys.executable).with_name("surgcorpus")
SOURCES = ["mandelbrot", "testsrc2", "cellauto=rule=30", "life=seed=5", "smptebars", "rgbtestsrc", "testsrc"]
CLIP_S, FPS, SIZE = 4.0, 2, 112

# Changes to video2dataset 1.3.0 needed to run it here; each is (file, old text, new text, why).
V2D_CHANGES: list[tuple[str, str, str, str]] = [
    (
        "workers/download_worker.py",
        'writer_encode_formats["video"] = self.subsamplers["video"][0].encode_formats["video"]',
        'writer_encode_formats["video"] = self.subsamplers["video"][0].encode_format',
        "line 161: the video subsamplers keep `encode_format` (a str), not `encode_formats`: AttributeError on "
        "every shard as soon as a video subsampler is configured",
    ),
    (
        "workers/download_worker.py",
        "for modality in subsampled_streams:",
        "for modality in list(subsampled_streams):",
        "line 237: the subsamplers pop and re-insert the stream they transform: `RuntimeError: dictionary keys "
        "changed during iteration`, every sample lost (counted neither as success nor failure)",
    ),
]


def _inputs(folder: Path, n: int, seconds: float) -> list[Path]:
    files = []
    for i in range(n):
        out = folder / "videos" / f"v{i:02d}.mp4"
        if not out.exists():
            name, _, opts = SOURCES[i % len(SOURCES)].partition("=")
            spec = f"{name}=size=640x360:rate=25" + (f":{opts}" if opts else "")
            make_video(out, seconds, source=spec, vf=f"hue=h={37 * i}")
        files.append(out)
    return files


def _ceiling(files: list[Path], workers: int) -> float:
    cmds = [["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(f), "-f", "null", "-"] for f in files]
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: subprocess.run(c, capture_output=True, check=True), cmds))
    return time.perf_counter() - t


def _surgcorpus(files: list[Path], workers: int, work: Path) -> dict:
    manifest = {
        "name": "v2dcmp",
        "sources": [
            {"name": "gen", "domain": "laparoscopy", "root": str(files[0].parent), "videos": {"glob": "*.mp4"}}
        ],
        "clips": {"fps": FPS, "size": SIZE, "seconds": CLIP_S, "crop": "center", "format": "mp4"},
    }
    path = work / "surgcorpus.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    out = work / "surgcorpus-build"
    cmd = [str(SURGCORPUS), "build", str(path), "--out", str(out), "--workers", str(workers), "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t
    clips = pq.read_table(out / "tables" / "clips.parquet")
    return {"wall_s": round(wall, 2), "clips": clips.num_rows, "shard_bytes": _tar_bytes(out / "shards")}


def _v2d(python: str, files: list[Path], durations: list[float], workers: int, work: Path) -> dict:
    spans = [[[k * CLIP_S, (k + 1) * CLIP_S] for k in range(int(d // CLIP_S))] for d in durations]
    table = pa.table({"url": [str(f) for f in files], "clips": spans})
    pq.write_table(table, work / "v2d-input.parquet")
    config = {
        "subsampling": {
            "ClippingSubsampler": {"args": {"min_length": 0.0, "precision": "exact"}},
            "ResolutionSubsampler": {"args": {"video_size": SIZE, "resize_mode": ["scale", "crop"]}},
            "FrameSubsampler": {"args": {"frame_rate": FPS}},
        },
        "reading": {"timeout": 60, "sampler": None, "yt_args": {}},
        # video2dataset parallelises over input shards of this many rows: one shard per worker keeps all busy
        "storage": {
            "number_sample_per_shard": -(-len(files) // workers),
            "oom_shard_count": 5,
            "captions_are_subtitles": False,
        },
        "distribution": {
            "processes_count": workers,
            "thread_count": workers,
            "subjob_size": 1000,
            "distributor": "multiprocessing",
        },
    }
    (work / "v2d.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = work / "v2d-out"
    tmp = work / "v2d-tmp"
    tmp.mkdir(exist_ok=True)
    cmd = [
        python, "-m", "video2dataset.main",
        "--url_list", str(work / "v2d-input.parquet"), "--input_format", "parquet", "--clip_col", "clips",
        "--output_folder", str(out), "--output_format", "webdataset", "--encode_formats", '{"video": "mp4"}',
        "--config", str(work / "v2d.yaml"), "--tmp_dir", str(tmp),
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    clips = 0
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as f:
            clips += sum(m.name.endswith(".mp4") for m in f.getmembers())
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    return {
        "wall_s": round(wall, 2),
        "exit_code": proc.returncode,
        "clips": clips,
        "shard_bytes": _tar_bytes(out),
        "stats": stats,
        "stderr_tail": proc.stderr[-2000:],
    }


def _tar_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.tar"))


def _probe(files: list[Path]) -> tuple[list[float], int]:
    from builders.stages.probe import probe_video

    facts = [probe_video(str(f)) for f in files]
    return [float(f["duration_s"]) for f in facts], sum(int(f["n_frames"]) for f in facts)  # header counts


def _patch(python: str) -> list[str]:
    site = subprocess.run(
        [python, "-c", "import video2dataset, os; print(os.path.dirname(video2dataset.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    done = []
    for rel, old, new, why in V2D_CHANGES:
        path = Path(site) / rel
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
        done.append(f"{rel}: {why}")
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--v2d-python", required=True, help="python of a venv with video2dataset 1.3.0")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patch", action="store_true", help="apply V2D_CHANGES to the video2dataset install first")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()

    changes = _patch(args.v2d_python) if args.patch else []
    version = subprocess.run(
        [args.v2d_python, "-c", "import importlib.metadata as m; print(*map(m.version, ['video2dataset','pyarrow']))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="surgcorpus-v2d-") as tmp:
        work = Path(tmp)
        files = _inputs(work, args.videos, args.seconds)
        durations, frames = _probe(files)
        load_before = os.getloadavg()[0]
        ceiling = _ceiling(files, args.workers)
        ours = _surgcorpus(files, args.workers, work)
        theirs = _v2d(args.v2d_python, files, durations, args.workers, work)
        ceiling_again = _ceiling(files, args.workers)
        load_after = os.getloadavg()[0]

    ceil_s = (ceiling + ceiling_again) / 2
    fps = {
        "ffmpeg decode ceiling": frames / ceil_s,
        "surgcorpus": frames / ours["wall_s"],
        "video2dataset": frames / theirs["wall_s"] if theirs["exit_code"] == 0 and theirs["clips"] else None,
    }
    ratio = fps["surgcorpus"] / fps["video2dataset"] if fps["video2dataset"] else None
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        "job": {
            "videos": args.videos,
            "seconds": args.seconds,
            "size": "640x360 H.264",
            "source_frames": frames,
            "clips": f"{CLIP_S:g} s, {FPS} fps, {SIZE} px centre crop, H.264 mp4, WebDataset",
            "workers": args.workers,
        },  # fmt: skip
        "video2dataset": {"version": version[0], "pyarrow": version[1], "changes": changes},
        "ceiling_s_before_after": [round(ceiling, 2), round(ceiling_again, 2)],
        "surgcorpus": ours,
        "video2dataset_run": theirs,
        "source_frames_per_s": {k: (round(v, 1) if v else None) for k, v in fps.items()},
        "surgcorpus_over_video2dataset": round(ratio, 2) if ratio else None,
        "surgcorpus_over_ceiling": round(fps["surgcorpus"] / fps["ffmpeg decode ceiling"], 3),
        "goal": "surgcorpus >= 4x video2dataset's throughput",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "v2d_compare.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# surgcorpus vs video2dataset 1.3.0, same job, same run",
        "",
        f"{report['date']}, {report['machine']}, load average {load_before:.1f} before / {load_after:.1f} after "
        "(a machine shared with other work: read the ratios).",
        f"Job: {args.videos} generated 640x360 H.264 videos x {args.seconds:g} s ({frames} source frames) → "
        f"{report['job']['clips']}, {args.workers} workers. `bench/v2d_compare.py`.",
        "",
        "| run | wall (s) | source frames/s | clips | shard bytes |",
        "| --- | --- | --- | --- | --- |",
        f"| ffmpeg decode ceiling | {ceil_s:.1f} | {fps['ffmpeg decode ceiling']:.0f} | | |",
        f"| surgcorpus build | {ours['wall_s']:.1f} | {fps['surgcorpus']:.0f} | {ours['clips']} | "
        f"{ours['shard_bytes']} |",
        f"| video2dataset {version[0]} | {theirs['wall_s']:.1f} | "
        f"{fps['video2dataset'] or 0:.0f} | {theirs['clips']} | {theirs['shard_bytes']} |",
        "",
        f"surgcorpus / video2dataset: **{report['surgcorpus_over_video2dataset']}** (goal ≥ 4); surgcorpus / "
        f"ceiling: {report['surgcorpus_over_ceiling']}. video2dataset's own stats: {len(theirs['stats'])} shard(s) "
        f"run in parallel, the longest {max((x['duration'] for x in theirs['stats']), default=0):.1f} s of work "
        f"inside its {theirs['wall_s']:.1f} s run (the rest is its start-up and distributor).",
        "",
        f"video2dataset ran from its own venv with pyarrow {version[1]}; changes made to it:",
        *[f"- {c}" for c in (changes or ["none"])],
    ]
    if theirs["exit_code"] != 0 or not theirs["clips"]:
        lines += ["", f"video2dataset failed (exit {theirs['exit_code']}):", "```", theirs["stderr_tail"], "```"]
    (args.out / "v2d_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
