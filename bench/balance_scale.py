"""Scaling of the curation step: clustering, balanced selection and leakage search over synthetic embeddings.

For each size (default 100k, 300k, 1M clips, dim 128) a fresh subprocess generates clustered embeddings with an
imbalanced source mix (one source 10x the others, Zipf-sized clusters) and times:
hierarchical k-means (auto levels ~sqrt(n), ~n**0.25), the balanced order, selection with a source cap, the
sampling weights, and the leakage search (every clip against 2,000 benchmark clips, faiss flat inner product).
Peak memory: ``ru_maxrss`` of the subprocess (RSS, includes faiss's C++ buffers) and ``tracemalloc``'s peak
(Python and numpy allocations). Also measured: the default encoder's throughput on generated mp4 clips, from which
the time to embed 1M clips on this machine is extrapolated.

Run: ``.venv/bin/python bench/balance_scale.py [--sizes 100000 300000 1000000]``; writes
``bench/results/balance_scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_true = 400
    centres = rng.standard_normal((n_true, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = 1.0 / np.arange(1, n_true + 1)  # Zipf cluster sizes
    cluster = rng.choice(n_true, size=n, p=sizes / sizes.sum())
    x = centres[cluster] + 0.08 * rng.standard_normal((n, dim), dtype=np.float32)
    # 6 sources: source 0 owns the 40 largest clusters (about 10x the clips of each other source)
    source = np.where(cluster < 40, 0, 1 + cluster % 5)
    domain = source % 3
    return x, source.astype(np.int64), domain.astype(np.int64)


def run_size(n: int, dim: int, repeat: int = 2) -> dict:
    from corpus.balance import (
        BalanceConfig,
        auto_levels,
        balanced_order,
        hierarchical_kmeans,
        sampling_weights,
        select,
    )
    from corpus.leakage import build_index, search

    x, source, domain = synthetic(n, dim)
    out: dict = {"n": n, "dim": dim, "levels": list(auto_levels(n)), "loadavg_1min_before": os.getloadavg()[0]}
    cfg = BalanceConfig(temperature=0.0, source_cap=0.3)
    phases = ("kmeans_s", "order_s", "select_s", "weights_s", "leakage_search_s")
    for rep in range(repeat):  # the first pass under tracemalloc (memory peak), the others clean; min time kept
        if rep == 0:
            tracemalloc.start()
        t = time.perf_counter()
        hier = hierarchical_kmeans(x, tuple(out["levels"]), seed=0, niter=cfg.niter)
        times = {"kmeans_s": time.perf_counter() - t}
        t = time.perf_counter()
        rank = balanced_order(hier.labels, cfg.temperature, cfg.seed)
        times["order_s"] = time.perf_counter() - t
        t = time.perf_counter()
        budget = n // 2
        status = select(rank, source, domain, budget, cfg.source_cap, None)
        times["select_s"] = time.perf_counter() - t
        t = time.perf_counter()
        sel = status == 0
        labels = np.stack([np.unique(c, return_inverse=True)[1] for c in hier.labels[sel].T], axis=1)
        w = sampling_weights(labels, source[sel], domain[sel], cfg.temperature, cfg.source_cap, None)
        times["weights_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bench = x[np.random.default_rng(1).choice(n, 2000, replace=False)]
        sims, _ = search(build_index(bench), x, k=1)
        times["leakage_search_s"] = time.perf_counter() - t
        if rep == 0:
            out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        for k in phases:
            out[k] = min(out.get(k, float("inf")), times[k])
        out.setdefault("passes_total_s", []).append(sum(times.values()))
    out["total_s"] = sum(out[k] for k in phases)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["embeddings_mb"] = x.nbytes / 2**20
    before = np.bincount(source, minlength=6) / n
    after = np.bincount(source[sel], minlength=6) / sel.sum()
    mass = np.bincount(source[sel], weights=w, minlength=6)
    out["source_share_before"] = before.round(4).tolist()
    out["source_share_selected"] = after.round(4).tolist()
    out["source_mass"] = mass.round(4).tolist()
    out["n_selected"] = int(sel.sum())
    out["leakage_hits"] = int((sims[:, 0] >= 0.9).sum())  # >= the 2,000 planted benchmark vectors
    return out


def make_build(n: int, dim: int, build_dir: str) -> None:
    """A synthetic build dir: clips + embeddings Parquet (in its own process, so its memory is not counted)."""
    import pyarrow as pa

    from corpus.embeddings import embeddings_table
    from corpus.schemas import CLIPS, table_path, write_table

    x, source, domain = synthetic(n, dim)
    ids = [f"s{s}/v{i // 50:07d}/{(i % 50) * 4000:09d}" for i, s in enumerate(source.tolist())]
    order = np.argsort(np.asarray(ids))
    cols = {
        "clip_id": pa.array([ids[i] for i in order]),
        "video_id": pa.array([ids[i].rsplit("/", 1)[0] for i in order]),
        "source": pa.array([f"s{source[i]}" for i in order]),
        "domain": pa.array([f"d{domain[i]}" for i in order]),
        "split": pa.array(["train"] * n),
    }
    table = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in CLIPS}, schema=CLIPS)
    write_table(table, table_path(build_dir, "clips"))
    write_table(embeddings_table([ids[i] for i in order], "synthetic", x[order]), table_path(build_dir, "embeddings"))


def run_build(n: int, build_dir: str, repeat: int = 2) -> dict:
    """End to end ``balance_build`` on a build dir made by :func:`make_build` (fresh process: its own peak RSS)."""
    from corpus.balance import BalanceConfig, balance_build

    passes = []
    for _ in range(repeat):
        t = time.perf_counter()
        summary = balance_build(build_dir, BalanceConfig(temperature=0.0, source_cap=0.3, fraction=0.5))
        passes.append(time.perf_counter() - t)
    dt = min(passes)
    sizes = {p.name: p.stat().st_size for p in (Path(build_dir) / "tables").glob("*.parquet")}
    return {
        "n": n,
        "balance_build_s": dt,
        "passes_s": passes,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n_selected": summary.n_selected,
        "table_bytes": sizes,
    }


def encoder_throughput(n_clips: int = 12) -> dict:
    from builders.stages.embed import StatsEncoder, decode_frames

    enc = StatsEncoder()
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(n_clips):
            p = Path(d) / f"c{i}.mp4"
            src = f"mandelbrot=size=320x240:rate=25:start_scale={3 + i * 0.1}"
            subprocess.run(
                ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", "4", "-pix_fmt", "yuv420p", str(p)],
                check=True,
            )
            paths.append(p)
        t = time.perf_counter()
        for p in paths:
            enc.encode_batch(decode_frames(p, enc.num_frames, enc.frame_size)[None])
        dt = time.perf_counter() - t
    per_clip = dt / n_clips
    return {
        "clips": n_clips,
        "clip": "4 s, 320x240, 25 fps, h264",
        "s_per_clip_one_process": per_clip,
        "clips_per_s_one_process": 1 / per_clip,
        "projected_1M_hours_one_process": 1e6 * per_clip / 3600,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--e2e-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=2, help="passes per size; the fastest is reported")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-make", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-e2e", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_size(args.child, args.dim, args.repeat)))
        return
    if args.child_make:
        make_build(args.child_make, args.dim, args.build_dir)
        return
    if args.child_e2e:
        print(json.dumps(run_build(args.child_e2e, args.build_dir, args.repeat)))
        return
    runs = []
    for n in args.sizes:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--dim", str(args.dim), "--repeat", str(args.repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_s_with_generation"] = time.perf_counter() - t
        runs.append(res)
        print(json.dumps({k: v for k, v in res.items() if not k.startswith("source")}), flush=True)
    e2e = []
    for n in args.e2e_sizes:
        with tempfile.TemporaryDirectory() as d:
            common = [str(n), "--dim", str(args.dim), "--build-dir", d, "--repeat", str(args.repeat)]
            subprocess.run([sys.executable, __file__, "--child-make", *common], check=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child-e2e", *common], capture_output=True, text=True, check=True
            )
        e2e.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(e2e[-1]), flush=True)
    enc = encoder_throughput()
    print(json.dumps(enc), flush=True)
    base = runs[0]
    for r in runs:
        r["time_growth_vs_first"] = r["total_s"] / base["total_s"]
        r["maxrss_growth_vs_first"] = r["maxrss_mb"] / base["maxrss_mb"]
    result = {
        "bench": "balance_scale",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "note": "2 cores shared with other engineers' jobs; times are wall clock",
        "runs": runs,
        "balance_build": e2e,
        "encoder": enc,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "balance_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# balance_scale",
        "",
        f"Synthetic clustered embeddings (dim {args.dim}, 400 Zipf-sized clusters, 6 sources, one ~10x); "
        "temperature 0, source cap 0.3, budget n/2; leakage search against 2,000 benchmark vectors. "
        f"{os.cpu_count()} shared cores. Times: fastest of {args.repeat} passes per size "
        "(the machine is shared, single passes vary by 3x); the first pass runs under tracemalloc for its peak. "
        "maxrss: each size's own subprocess, including the generated data.",
        "",
        "| clips | levels | k-means s | order s | select s | weights s | leakage s | total s | growth | "
        "maxrss MB | tracemalloc peak MB | source 0 share before -> selected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['n']:,} | {r['levels']} | {r['kmeans_s']:.1f} | {r['order_s']:.2f} | {r['select_s']:.2f} | "
            f"{r['weights_s']:.2f} | {r['leakage_search_s']:.1f} | {r['total_s']:.1f} | "
            f"{r['time_growth_vs_first']:.1f}x | {r['maxrss_mb']:.0f} | {r['tracemalloc_peak_mb']:.0f} | "
            f"{r['source_share_before'][0]:.2f} -> {r['source_share_selected'][0]:.2f} |"
        )
    lines += [
        "",
        "End to end `balance_build` (read clips + embeddings Parquet, cluster, select, write clusters/clip_balance "
        "tables and the HTML report; same data, fraction 0.5):",
        "",
        "| clips | seconds | maxrss MB |",
        "|---|---|---|",
    ]
    lines += [f"| {r['n']:,} | {r['balance_build_s']:.1f} | {r['maxrss_mb']:.0f} |" for r in e2e]
    lines += [
        "",
        f"Default encoder (decord, 8 frames at 64x64, statistics): {enc['s_per_clip_one_process'] * 1000:.0f}"
        f" ms per clip ({enc['clip']}), one process; 1M clips would take about "
        f"{enc['projected_1M_hours_one_process']:.1f} h per process (embarrassingly parallel: "
        "`surgcorpus embed --workers N`; no Ray executor yet).",
        "",
    ]
    (RESULTS / "balance_scale.md").write_text("\n".join(lines))
    print((RESULTS / "balance_scale.md").read_text())


if __name__ == "__main__":
    main()
