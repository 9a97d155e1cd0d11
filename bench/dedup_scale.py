"""Near-duplicate search at corpus scale, on synthetic hashes (no video needed). Results: bench/results/dedup_scale.*

Two modes, both with random 64-bit hashes (so no chance duplicates) and planted noisy copies:

- ``--sizes N ...``: the video level alone (faiss binary range search + offset-restricted alignment). One hash per
  second of video (the clip stage's density for 4 s clips) for N videos of ``--hashes`` seconds, 1 % planted copies
  (trimmed, every hash 0-5 bits off).
- ``--clips N``: the whole ``dedup`` stage on Arrow tables shaped like a corpus build: N videos of ``--per-video``
  4 s clips, 4 hashes each (the last clip of a video holds 0-3), sorted by ``video_id, start_s``. Planted: ``--copies``
  clips copied into other videos with every hash 0-2 bits off (within the pigeonhole guarantee of the clip level's
  band search at this size) and as many with 3-5 bits off (beyond it), plus 20 whole-video copies (trimmed, 0-5
  bits off). Reports wall time, peak RSS (``getrusage``), recall and false pairs at both levels. ``--threads 1``
  (the default) pins faiss to one core.

    .venv/bin/python bench/dedup_scale.py --sizes 1000 3000 10000 [--hashes 600]
    .venv/bin/python bench/dedup_scale.py --clips 10535 [--per-video 285] [--copies 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from builders.stages import dedup as dd
from corpus.manifest import DedupSpec

CLIP_S = 4.0
HASHES_PER_CLIP = 4


def flip_bits(codes: np.ndarray, rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    """A copy of ``codes`` with ``low``..``high`` distinct random bits flipped in each hash."""
    out = codes.copy()
    for i, k in enumerate(rng.integers(low, high + 1, size=len(out))):
        for bit in rng.choice(64, int(k), replace=False):
            out[i] ^= np.uint64(1) << np.uint64(int(bit))
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- video level alone ---------------------------------------------------------------------------------------


def _sequences(n: int, length: int, rng: np.random.Generator) -> tuple[list[np.ndarray], dict[tuple[int, int], int]]:
    seqs = [rng.integers(0, 2**63, size=length, dtype=np.uint64) * 2 for _ in range(n)]
    planted = {}
    for j in rng.choice(n, max(1, n // 100), replace=False):  # distinct originals
        cut = int(rng.integers(0, length // 3))
        seqs.append(flip_bits(seqs[int(j)][cut:], rng, 0, 5))
        planted[(int(j), len(seqs) - 1)] = cut  # copies come after the originals: pair (original, copy)
    return seqs, planted


def run_videos(n: int, length: int) -> dict:
    rng = np.random.default_rng(n)
    seqs, planted = _sequences(n, length, rng)
    sigs = dd.Signatures.from_sequences(seqs)
    t = time.perf_counter()
    pairs = dd.candidate_pairs(sigs, radius=12)
    t_search = time.perf_counter() - t
    found = {}
    for (a, b), offsets in pairs.items():
        m = dd.best_alignment(sigs.of(a), sigs.of(b), 0.6, offsets[:3])
        if m is not None and m.distance <= 10:
            found[(a, b)] = m.offset
    t_total = time.perf_counter() - t
    return {
        "videos": len(seqs),
        "hashes": len(sigs.codes),
        "candidate_pairs": len(pairs),
        "search_s": round(t_search, 2),
        "total_s": round(t_total, 2),
        "peak_rss_mb": round(_rss_mb()),
        "recall": sum(found.get(k) == v for k, v in planted.items()) / len(planted),
        "false_pairs": len(set(found) - set(planted)),
        "load": _load(),
    }


# --- the whole stage on corpus-shaped tables -----------------------------------------------------------------


def corpus_tables(
    n_videos: int, per_video: int, copies: int, rng: np.random.Generator
) -> tuple[pa.Table, pa.Table, dict]:
    """Videos and clips tables (the columns dedup reads) with planted clip and video copies; see the docstring."""
    n_clips = np.full(n_videos, per_video, dtype=np.int64)
    video_copies = min(20, n_videos // 4)
    originals = rng.choice(n_videos, 2 * video_copies, replace=False)
    src, dst = originals[:video_copies], originals[video_copies:]  # dst videos become trimmed copies of src videos
    cut = rng.integers(1, per_video // 3 + 1, size=video_copies)  # in clips
    n_clips[dst] = per_video - cut
    video = np.repeat(np.arange(n_videos), n_clips)
    first = np.r_[0, np.cumsum(n_clips)[:-1]]
    k = np.arange(len(video)) - first[video]  # clip index within its video
    n_hash = np.full(len(video), HASHES_PER_CLIP)
    n_hash[first + n_clips - 1] = rng.integers(0, HASHES_PER_CLIP, size=n_videos)  # tail clips: fewer hashes
    hash_start = np.r_[0, np.cumsum(n_hash)]
    codes = rng.integers(0, 2**63, size=int(hash_start[-1]), dtype=np.uint64) * 2 + rng.integers(0, 2, dtype=np.uint64)
    for s, d, c in zip(src, dst, cut, strict=True):  # whole-video copies: the source from clip `c` on
        lo, hi = hash_start[first[s] + c], hash_start[first[s] + n_clips[s] - 1]  # its tail clip stays random
        codes[hash_start[first[d]] : hash_start[first[d]] + (hi - lo)] = flip_bits(codes[lo:hi], rng, 0, 5)
    in_copy = np.zeros(n_videos, dtype=bool)
    in_copy[originals] = True
    full = np.flatnonzero((n_hash == HASHES_PER_CLIP) & ~in_copy[video])
    picked = rng.choice(full, 4 * copies, replace=False)
    planted_clips = {}
    for i, (a, b) in enumerate(zip(picked[: 2 * copies], picked[2 * copies :], strict=True)):
        if video[a] == video[b]:
            continue
        low, high = (0, 2) if i < copies else (3, 5)
        codes[hash_start[b] : hash_start[b + 1]] = flip_bits(codes[hash_start[a] : hash_start[a + 1]], rng, low, high)
        planted_clips[(int(min(a, b)), int(max(a, b)))] = "0-2 bits" if i < copies else "3-5 bits"
    names = np.char.add("v", np.char.zfill(np.arange(n_videos).astype(str), 6))
    clip_id = np.char.add(np.char.add(names[video], "/"), np.char.zfill((k * 4000).astype(str), 9))
    clips = pa.table(
        {
            "clip_id": pa.array(clip_id.tolist(), pa.string()),
            "video_id": pa.array(names[video].tolist(), pa.string()),
            "start_s": pa.array(k * CLIP_S, pa.float64()),
            "end_s": pa.array(k * CLIP_S + CLIP_S, pa.float64()),
            "sha256": pa.array([f"{i:064x}" for i in range(len(video))], pa.string()),
            "phash": pa.ListArray.from_arrays(pa.array(hash_start, pa.int32()), pa.array(codes, pa.uint64())),
        }
    )
    videos = pa.table(
        {
            "video_id": pa.array(names.tolist(), pa.string()),
            "sha256": pa.array([f"{i:064x}" for i in range(10**9, 10**9 + n_videos)], pa.string()),
            "n_frames": pa.array(n_clips * 100, pa.int64()),
            "fps": pa.array(np.full(n_videos, 25.0), pa.float64()),
        }
    )
    clip_names = clips["clip_id"].to_pylist() if len(planted_clips) else []
    planted = {
        "videos": {names[d]: names[s] for s, d in zip(src, dst, strict=True)},
        "clips": {(clip_names[a], clip_names[b]): kind for (a, b), kind in planted_clips.items()},
    }
    return videos, clips, planted


def run_corpus(n_videos: int, per_video: int, copies: int) -> dict:
    rng = np.random.default_rng(n_videos)
    t = time.perf_counter()
    videos, clips, planted = corpus_tables(n_videos, per_video, copies, rng)
    t_gen = time.perf_counter() - t
    rss_inputs = _rss_mb()
    t, cpu = time.perf_counter(), time.process_time()
    result = dd.dedup(videos, clips, DedupSpec())
    t_dedup, cpu_dedup = time.perf_counter() - t, time.process_time() - cpu
    clusters: dict[str, set[str]] = {}
    for r in result.rows:
        if r["level"] == "clip":
            clusters.setdefault(r["cluster_id"], set()).add(r["member_id"])
    together = {(a, b) for members in clusters.values() for a in members for b in members if a < b}
    recall = {
        kind: sum(pair in together for pair, k in planted["clips"].items() if k == kind)
        / max(1, sum(k == kind for k in planted["clips"].values()))
        for kind in ("0-2 bits", "3-5 bits")
    }
    video_found = {m: rep for m, (rep, kind) in result.video_dup.items()}
    return {
        "videos": n_videos,
        "clips": len(clips),
        "hashes": int(pc.sum(pc.list_value_length(clips["phash"])).as_py()),
        "generate_s": round(t_gen, 1),
        "dedup_s": round(t_dedup, 1),
        "dedup_cpu_s": round(cpu_dedup, 1),  # the machine is shared: CPU time is the steadier figure
        "rss_inputs_mb": round(rss_inputs),
        "peak_rss_mb": round(_rss_mb()),
        "planted_clip_pairs": {k: sum(v == k for v in planted["clips"].values()) for k in ("0-2 bits", "3-5 bits")},
        "clip_recall": recall,
        "clip_false_pairs": len(together - set(planted["clips"])),
        "video_recall": sum(video_found.get(d) == s for d, s in planted["videos"].items()) / len(planted["videos"]),
        "video_false_pairs": len(set(video_found.items()) - set(planted["videos"].items())),
        "load": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", help="video level alone: these video counts")
    ap.add_argument("--hashes", type=int, default=600)
    ap.add_argument("--clips", type=int, help="whole stage on a corpus of this many videos")
    ap.add_argument("--per-video", type=int, default=285)
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import faiss

    faiss.omp_set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "dedup_scale.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if isinstance(results, list):  # the first version held the video-level rows only
        results = {"videos": results}
    when = time.strftime("%Y-%m-%d %H:%M")
    if args.sizes:
        results["videos"] = [run_videos(n, args.hashes) | {"when": when} for n in args.sizes]
    if args.clips:
        results["corpus"] = run_corpus(args.clips, args.per_video, args.copies) | {
            "when": when,
            "threads": args.threads,
        }
    path.write_text(json.dumps(results, indent=1))
    md = _markdown(results, args.hashes)
    (args.out / "dedup_scale.md").write_text(md)
    print(md)


def _markdown(results: dict, hashes: int) -> str:
    md = ["# Near-duplicate search at scale (`bench/dedup_scale.py`)", ""]
    if results.get("corpus"):
        r = results["corpus"]
        md += [
            f"## Whole stage, corpus-size tables ({r['when']}, faiss threads {r['threads']}, load {r['load']})",
            "",
            f"{r['videos']} videos, {r['clips']} clips of 4 s with 4 random 64-bit hashes (tail clips fewer), "
            "clips and videos tables as Arrow; peak RSS from `getrusage` (the inputs alone: "
            f"{r['rss_inputs_mb']} MB).",
            "",
            "| dedup s (wall) | dedup CPU s | peak RSS MB | clip recall 0-2 bits/hash | clip recall 3-5 bits/hash "
            "| clip false pairs | video recall | video false pairs |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {r['dedup_s']} | {r['dedup_cpu_s']} | {r['peak_rss_mb']} | {r['clip_recall']['0-2 bits']:.3f} "
            f"({r['planted_clip_pairs']['0-2 bits']} pairs) | {r['clip_recall']['3-5 bits']:.3f} "
            f"({r['planted_clip_pairs']['3-5 bits']} pairs) | {r['clip_false_pairs']} | {r['video_recall']:.3f} "
            f"| {r['video_false_pairs']} |",
            "",
        ]
    if results.get("videos"):
        md += [
            f"## Video level alone ({hashes} hashes per video, 1 % planted noisy trimmed copies)",
            "",
            "Peak RSS is cumulative over the run.",
            "",
            "| when | load | videos | hashes | candidate pairs | search s | total s | peak RSS MB | recall "
            "| false pairs |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        md += [
            f"| {r.get('when', '')} | {r.get('load', '')} | {r['videos']} | {r['hashes']} | {r['candidate_pairs']} "
            f"| {r['search_s']} | {r['total_s']} | {r['peak_rss_mb']} | {r['recall']:.3f} | {r['false_pairs']} |"
            for r in results["videos"]
        ]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
