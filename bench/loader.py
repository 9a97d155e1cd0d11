"""Trainer data path: which decoder, shards against source videos, and whether the loader starves the model.

On a build dir (default ``build/demo/corpus``, from ``make demo``):

1. ``decode``: every train clip's mp4 bytes from the shards decoded to RGB in one process, by decord (from memory)
   and by an ``ffmpeg`` process (temp file in /dev/shm, raw frames on a pipe): clips/s each. The faster one is the
   default of ``data.decoder``.
2. ``shards_vs_source``: training batches per second, same clips, same ``DataLoader`` workers, same batch size and
   the same torch augmentation (random resized crop to the model size, flip; uint8 batches, normalised later on
   the device): from our shards (``trainers.data.ClipStream``: sampler, in-memory mp4, decord) against decoding
   each clip's span from its source video every epoch (decord opens the source, decodes the clip's frames at the
   build's fps, resized to the build's clip size and centre-cropped: what a trainer without our shards does).
   Goal: shards >= 5x.
3. ``starvation``: the tiny MAE and JEPA configs train for a few dozen steps with 2 loader workers; ``data_wait``
   (fraction of wall time the loop waited for a batch, from ``metrics.jsonl``) after the first steps.

Results: ``bench/results/loader.{json,md}``. Shared 2-core machines are noisy: the load average is recorded, and
only ratios measured in the same run mean much.

    .venv/bin/python bench/loader.py [--build DIR] [--workers 2] [--batches 24] [--parts decode,shards_vs_source]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import webdataset as wds

from trainers.config import DataConfig, load_config
from trainers.data import ClipStream, augment_uint8, batch_seed, decode_mp4_decord, decode_mp4_ffmpeg, frame_indices
from trainers.metrics import read_metrics
from trainers.recipe import CONFIG_DIR

RESULTS = Path(__file__).parent / "results"


def train_clips(build: Path) -> list[dict[str, Any]]:
    """The train clips in the shards, with their source video path, span and the build's clip geometry."""
    shards = {
        r["clip_id"] for r in pq.read_table(build / "tables/shards.parquet").to_pylist() if r["split"] == "train"
    }
    videos = {r["video_id"]: r for r in pq.read_table(build / "tables/videos.parquet").to_pylist()}
    clips = [c for c in pq.read_table(build / "tables/clips.parquet").to_pylist() if c["clip_id"] in shards]
    return [
        c
        | {
            "source_path": videos[c["video_id"]]["path"],
            "source_hw": (videos[c["video_id"]]["height"], videos[c["video_id"]]["width"]),
        }
        for c in sorted(clips, key=lambda c: c["clip_id"])
    ]


def bench_decoders(build: Path) -> dict[str, Any]:
    urls = sorted(str(p) for p in (build / "shards/train").glob("*.tar"))
    samples = [s for s in wds.WebDataset(urls, shardshuffle=False) if "mp4" in s]
    blobs = [(s["mp4"], json.loads(s["json"])) for s in samples]
    out: dict[str, Any] = {"clips": len(blobs)}
    decoders = {
        "decord": lambda b, m: decode_mp4_decord(b, np.arange, "bench"),
        "ffmpeg": lambda b, m: decode_mp4_ffmpeg(b, np.arange, "bench", (m["height"], m["width"])),
    }
    for name, decode in decoders.items():
        t0 = time.perf_counter()
        frames = sum(len(decode(b, m)) for b, m in blobs)
        dt = time.perf_counter() - t0
        out[name] = {"seconds": dt, "clips_per_s": len(blobs) / dt, "frames_per_s": frames / dt}
    out["faster"] = max(("decord", "ffmpeg"), key=lambda k: out[k]["clips_per_s"])
    return out


class SourceClips(torch.utils.data.IterableDataset):
    """The baseline: each clip decoded from its source video on every pass, then the trainer's augmentation."""

    def __init__(self, clips: list[dict[str, Any]], cfg: DataConfig, num_frames: int, image_size: int) -> None:
        self.clips, self.cfg, self.num_frames, self.image_size = clips, cfg, num_frames, image_size

    def _decode(self, clip: dict[str, Any], gen: torch.Generator) -> np.ndarray:
        import decord

        size = clip["width"]  # the build's square clip size
        h, w = clip["source_hw"]
        scale = size / min(h, w)
        vr = decord.VideoReader(
            clip["source_path"], ctx=decord.cpu(0), width=round(w * scale), height=round(h * scale), num_threads=1
        )
        fps = vr.get_avg_fps()
        times = clip["start_s"] + np.arange(clip["n_frames"]) / clip["fps"]
        idx = np.minimum((times * fps).round().astype(np.int64), len(vr) - 1)
        pick = frame_indices(len(idx), self.num_frames, self.cfg.frame_stride, gen)
        frames = vr.get_batch(idx[pick].tolist()).asnumpy()
        top, left = (frames.shape[1] - size) // 2, (frames.shape[2] - size) // 2
        return frames[:, top : top + size, left : left + size]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n = (info.id, info.num_workers) if info else (0, 1)
        mine = self.clips[worker::n]
        bs = self.cfg.batch_size
        for b in range(len(mine) // bs):
            gen = torch.Generator().manual_seed(batch_seed(0, 0, 0, worker, b))
            chunk = mine[b * bs : (b + 1) * bs]
            video = torch.empty(len(chunk), 3, self.num_frames, self.image_size, self.image_size, dtype=torch.uint8)
            for i, c in enumerate(chunk):
                video[i] = augment_uint8(self._decode(c, gen), self.image_size, self.cfg, gen)
            yield {"video": video}


def batches_per_s(loader, n_batches: int) -> dict[str, float]:
    it = iter(loader)
    next(it)  # workers started, first batch ready
    t0 = time.perf_counter()
    n = 0
    for _ in range(n_batches):
        if next(it, None) is None:
            break
        n += 1
    dt = time.perf_counter() - t0
    del it
    return {"batches": n, "seconds": dt, "batches_per_s": n / dt}


def bench_shards_vs_source(build: Path, workers: int, n_batches: int) -> dict[str, Any]:
    cfg = load_config(CONFIG_DIR / "mae-vitb.yaml").data.model_copy(
        update={"num_workers": workers, "batch_size": 8, "samples_per_epoch": 8 * workers * (n_batches + 2)}
    )
    num_frames, image_size = 16, 224
    clips = train_clips(build)
    stream = ClipStream(build, cfg, num_frames=num_frames, image_size=image_size)
    shards = batches_per_s(stream.loader(), n_batches)
    source_ds = SourceClips(clips * 4, cfg, num_frames, image_size)
    source = batches_per_s(
        torch.utils.data.DataLoader(source_ds, batch_size=None, num_workers=workers, prefetch_factor=2), n_batches
    )
    sizes = sorted({(c["width"], c["n_frames"], c["fps"]) for c in clips})
    return {
        "workers": workers,
        "batch_size": cfg.batch_size,
        "num_frames": num_frames,
        "image_size": image_size,
        "clips": len(clips),
        "clip_geometry": [{"size": s, "frames": n, "fps": f} for s, n, f in sizes],
        "shards": shards,
        "source": source,
        "speedup": shards["batches_per_s"] / source["batches_per_s"],
    }


def bench_starvation(build: Path, steps: int) -> dict[str, Any]:
    from trainers.loop import train

    out: dict[str, Any] = {}
    for recipe in ("mae", "jepa"):
        cfg = load_config(
            CONFIG_DIR / f"{recipe}-tiny.yaml", **{"data.num_workers": 2, "run.steps": steps, "run.log_every": 1}
        )
        run = Path(tempfile.mkdtemp(prefix=f"bench-{recipe}-"))
        try:
            train(cfg, build, run, progress=False)
            rows = read_metrics(run / "metrics.jsonl")[5:]  # after worker start-up
        finally:
            shutil.rmtree(run, ignore_errors=True)
        waits = [r["data_wait"] for r in rows]
        out[recipe] = {
            "steps": steps,
            "workers": 2,
            "batch_size": cfg.data.batch_size,
            "data_wait_mean": statistics.fmean(waits),
            "data_wait_max": max(waits),
            "clips_per_s_mean": statistics.fmean(r["clips_per_s"] for r in rows),
        }
    return out


def write_markdown(res: dict[str, Any], path: Path) -> None:
    d, s, st = res["decode"], res["shards_vs_source"], res["starvation"]
    lines = [
        "# Trainer data path (`bench/loader.py`)",
        "",
        f"Build `{res['build']}`; {res['machine']}; load average before/after {res['load_before']} / "
        f"{res['load_after']}; torch {res['torch']}.",
        "",
        f"## Decoder: {d['clips']} train clips from the shards, one process",
        "",
        "| decoder | clips/s | frames/s |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {d[k]['clips_per_s']:.1f} | {d[k]['frames_per_s']:.0f} |" for k in ("decord", "ffmpeg")),
        "",
        f"Faster: **{d['faster']}** (the default `data.decoder`). The ffmpeg route pays a process start and a temp "
        "file per clip, which dominate for short clips on a busy machine."
        + (f" (Measured in an earlier run, load average {d['from_earlier_run']}.)" if "from_earlier_run" in d else ""),
        "",
        f"## Shards vs source videos: {s['workers']} workers, batches of {s['batch_size']} x {s['num_frames']} "
        f"frames at {s['image_size']} px",
        "",
        "| path | batches/s |",
        "| --- | ---: |",
        f"| shards (ClipStream) | {s['shards']['batches_per_s']:.2f} |",
        f"| source videos decoded each epoch | {s['source']['batches_per_s']:.2f} |",
        "",
        f"Speed-up: **{s['speedup']:.1f}x** (goal >= 5x). Clip geometry in this build: {s['clip_geometry']}.",
        "",
        "## Loader starvation on the tiny CPU configs (2 workers)",
        "",
        "| recipe | steps | data_wait mean | data_wait max | clips/s |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {k} | {v['steps']} | {v['data_wait_mean']:.3f} | {v['data_wait_max']:.3f} | "
            f"{v['clips_per_s_mean']:.1f} |"
            for k, v in st.items()
        ),
        "",
        "`data_wait` is the fraction of wall time the loop spent waiting for the next batch (0: never starved); "
        "here the tiny models on a shared CPU are the bottleneck, not the loader.",
        "No GPU was lent to this run, so there is no GPU-idle fraction.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", type=Path, default=Path("build/demo/corpus"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--parts", default="decode,shards_vs_source,starvation", help="parts to (re)run; others are kept")
    args = ap.parse_args()
    if not (args.build / "tables/shards.parquet").exists():
        raise SystemExit(f"{args.build}: no shards table; run `make demo` (or pass --build)")
    res: dict[str, Any] = {
        "build": str(args.build),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    parts = {
        "decode": lambda: bench_decoders(args.build),
        "shards_vs_source": lambda: bench_shards_vs_source(args.build, args.workers, args.batches),
        "starvation": lambda: bench_starvation(args.build, args.steps),
    }
    previous = args.out / "loader.json"
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    for name, run in parts.items():
        if name in args.parts.split(","):
            res[name] = run()
            print(f"{name}:", json.dumps(res[name]), flush=True)
        elif name in kept:
            res[name] = kept[name] | {"from_earlier_run": kept.get("load_before")}
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, args.out / "loader.md")
    print((args.out / "loader.md").read_text())


if __name__ == "__main__":
    main()
