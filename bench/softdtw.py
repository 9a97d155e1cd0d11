"""Soft-DTW forward + backward: the anti-diagonal implementation against Python double loops.

Measured at batch 32 x 512 x 512 (squared Euclidean costs of random 16-d sequences, γ = 1):

- ``trainers.softdtw``: forward + backward of the whole batch, best of ``--repeat`` runs, on CPU (and on CUDA when
  present, synchronised).
- ``python-loop``: Cuturi & Blondel's recursion and its backward (the E recursion) as a plain Python double loop over
  floats, one pair at a time (the strongest naive baseline: no tensor overhead per cell). It runs on
  ``--python-pairs`` pairs of the full 512 x 512 size (default: all 32, measured in full).
- ``torch-loop``: the PyTorch port as found in public code (PeskaVLP-style, without its per-cell table clone): a
  double loop of tensor ops batched over the 32 pairs, autograd through the loop. Run at 32 x ``--torch-side``²
  and extrapolated by the number of cells.

Memory: the bytes kept for the backward (a saved-tensor hook sums what autograd stores) and the forward's transient
table, per cell, at several sizes: a constant per-cell figure means memory linear in the number of cells.

Times are medians, in wall seconds and process CPU seconds: on a shared machine the CPU time is the
fairer comparison, and with ``--threads 1`` both sides use one core.

Run: ``.venv/bin/python bench/softdtw.py [--threads N]``; writes ``bench/results/softdtw.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from trainers.softdtw import pairwise_cost, soft_dtw  # noqa: E402


def python_loop_pair(cost: list[list[float]], gamma: float) -> tuple[float, list[list[float]]]:
    """Value and gradient of one pair: Blondel's reference recursion as a Python double loop."""
    n, m = len(cost), len(cost[0])
    big = 1e10
    r = [[big] * (m + 2) for _ in range(n + 2)]
    r[0][0] = 0.0
    for i in range(1, n + 1):
        ri, rp, ci = r[i], r[i - 1], cost[i - 1]
        for j in range(1, m + 1):
            a, b, c = -rp[j] / gamma, -ri[j - 1] / gamma, -rp[j - 1] / gamma
            hi = max(a, b, c)
            ri[j] = ci[j - 1] - gamma * (hi + math.log(math.exp(a - hi) + math.exp(b - hi) + math.exp(c - hi)))
    for i in range(1, n + 1):
        r[i][m + 1] = -big
    for j in range(1, m + 1):
        r[n + 1][j] = -big
    r[n + 1][m + 1] = r[n][m]
    e = [[0.0] * (m + 2) for _ in range(n + 2)]
    e[n + 1][m + 1] = 1.0
    padded = [[0.0] * (m + 2) for _ in range(n + 2)]
    for i in range(n):
        padded[i + 1][1 : m + 1] = cost[i]
    for j in range(m, 0, -1):
        for i in range(n, 0, -1):
            a = math.exp((r[i + 1][j] - r[i][j] - padded[i + 1][j]) / gamma)
            b = math.exp((r[i][j + 1] - r[i][j] - padded[i][j + 1]) / gamma)
            c = math.exp((r[i + 1][j + 1] - r[i][j] - padded[i + 1][j + 1]) / gamma)
            e[i][j] = e[i + 1][j] * a + e[i][j + 1] * b + e[i + 1][j + 1] * c
    return r[n][m], [row[1 : m + 1] for row in e[1 : n + 1]]


def torch_loop(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """A double loop of tensor ops over the batch, autograd through the loop (the common naive port)."""
    b, n, m = cost.shape
    inf = cost.new_full((b,), math.inf)
    r = [[inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = cost.new_zeros(b)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = torch.stack((r[i - 1][j], r[i][j - 1], r[i - 1][j - 1]))
            r[i][j] = cost[:, i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return r[n][m]


def time_ours(batch: int, n: int, m: int, device: str, repeat: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of forward + backward over ``repeat`` runs."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, n, 16, device=device), torch.randn(batch, m, 16, device=device)
    cost = pairwise_cost(x, y).detach()
    walls, cpus = [], []
    for _ in range(repeat):
        c = cost.clone().requires_grad_(True)
        if device == "cuda":
            torch.cuda.synchronize()
        t, tc = time.perf_counter(), time.process_time()
        soft_dtw(c, 1.0).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - tc)
    return statistics.median(walls), statistics.median(cpus)


def memory_per_cell(batch: int, side: int) -> dict:
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    cost = torch.rand(batch, side, side, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        soft_dtw(cost, 1.0)
    cells = batch * side * side
    transient = batch * (side + 2) ** 2 * 4  # the forward's R table (float32), freed when the forward returns
    return {
        "batch": batch,
        "side": side,
        "cells": cells,
        "saved_bytes": sum(saved),
        "saved_bytes_per_cell": round(sum(saved) / cells, 3),
        "forward_peak_bytes_per_cell": round((sum(saved) + transient) / cells, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--python-pairs", type=int, default=32)
    ap.add_argument("--torch-side", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, s = args.batch, args.side
    out: dict = {
        "shape": [b, s, s],
        "gamma": 1.0,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }

    wall, cpu = time_ours(b, s, s, "cpu", args.repeat)
    out["ours_cpu_wall_s"], out["ours_cpu_cpu_s"] = round(wall, 3), round(cpu, 3)
    print(f"ours, cpu: {wall:.3f} s wall, {cpu:.3f} s CPU")
    if torch.cuda.is_available():
        time_ours(b, s, s, "cuda", 1)  # warm-up
        out["ours_cuda_s"] = round(time_ours(b, s, s, "cuda", args.repeat)[0], 4)
        print(f"ours, cuda: {out['ours_cuda_s']} s")

    torch.manual_seed(0)
    cost = pairwise_cost(torch.randn(args.python_pairs, s, 16), torch.randn(args.python_pairs, s, 16)).double()
    walls, cpus = [], []
    for c in cost:
        pair = c.tolist()
        t, tc = time.perf_counter(), time.process_time()
        value, grad = python_loop_pair(pair, 1.0)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - tc)
    per_pair, per_pair_cpu = statistics.median(walls), statistics.median(cpus)
    check = cost[-1:].clone().requires_grad_(True)
    ours = soft_dtw(check, 1.0)
    (ours_grad,) = torch.autograd.grad(ours.sum(), check)
    out["python_loop"] = {
        "measured_pairs": args.python_pairs,
        "seconds_per_pair": round(per_pair, 3),
        "cpu_seconds_per_pair": round(per_pair_cpu, 3),
        "measured_total_wall_s": round(sum(walls), 1),
        "batch_wall_s": round(per_pair * b, 1),
        "batch_cpu_s": round(per_pair_cpu * b, 1),
        "extrapolated": args.python_pairs != b,
        "max_abs_value_diff": abs(value - float(ours.detach())),
        "max_abs_grad_diff": float((torch.tensor(grad, dtype=torch.float64) - ours_grad[0]).abs().max()),
    }
    print(f"python double loop: median {per_pair:.2f} s per pair ({per_pair_cpu:.2f} CPU), {sum(walls):.0f} s in all")

    ts = args.torch_side
    c = pairwise_cost(torch.randn(b, ts, 16), torch.randn(b, ts, 16)).detach().requires_grad_(True)
    t, tc = time.perf_counter(), time.process_time()
    torch_loop(c, 1.0).sum().backward()
    small, small_cpu = time.perf_counter() - t, time.process_time() - tc
    scale = (s * s) / (ts * ts)
    out["torch_loop"] = {
        "measured_shape": [b, ts, ts],
        "measured_s": round(small, 2),
        "extrapolated_batch_wall_s": round(small * scale, 1),
        "extrapolated_batch_cpu_s": round(small_cpu * scale, 1),
    }
    print(f"torch double loop: {small:.2f} s at {b}x{ts}x{ts} -> {small * scale:.0f} s (extrapolated)")

    py, tl = out["python_loop"], out["torch_loop"]
    out["speedup_vs_python_loop"] = {
        "wall": round(py["batch_wall_s"] / out["ours_cpu_wall_s"], 1),
        "cpu": round(py["batch_cpu_s"] / out["ours_cpu_cpu_s"], 1),
    }
    out["speedup_vs_torch_loop"] = {
        "wall": round(tl["extrapolated_batch_wall_s"] / out["ours_cpu_wall_s"], 1),
        "cpu": round(tl["extrapolated_batch_cpu_s"] / out["ours_cpu_cpu_s"], 1),
    }
    out["memory"] = [memory_per_cell(b, side) for side in (128, 256, 512, 1024)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "softdtw.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "softdtw.md").write_text(render(out))
    print(render(out))


def render(r: dict) -> str:
    b, s, _ = r["shape"]
    py, tl = r["python_loop"], r["torch_loop"]
    lines = [
        "# softdtw",
        "",
        f"Forward + backward, batch {b} x {s} x {s}, γ = {r['gamma']}, torch {r['torch']}, "
        f"{r['cpu_threads']} CPU thread(s), shared 2-core machine (other jobs running). Medians: ours over "
        "repeated runs, the Python loop per pair x the batch.",
        "",
        "| implementation | wall s | CPU s | how | speed-up of ours (wall / CPU) |",
        "|---|---|---|---|---|",
        f"| trainers.softdtw (CPU) | {r['ours_cpu_wall_s']} | {r['ours_cpu_cpu_s']} | measured | 1x |",
    ]
    if r.get("ours_cuda_s") is not None:
        lines.append(f"| trainers.softdtw ({r['cuda']}) | {r['ours_cuda_s']} | | measured | |")
    how = "extrapolated x" + str(b) if py["extrapolated"] else "measured in full"
    sp, st = r["speedup_vs_python_loop"], r["speedup_vs_torch_loop"]
    lines += [
        f"| Python double loop, floats | {py['batch_wall_s']} | {py['batch_cpu_s']} | {py['measured_pairs']} pairs "
        f"({how}, {py['measured_total_wall_s']} s in all) | {sp['wall']}x / {sp['cpu']}x |",
        f"| torch double loop + autograd | {tl['extrapolated_batch_wall_s']} | {tl['extrapolated_batch_cpu_s']} | "
        f"{tl['measured_s']} s at {'x'.join(map(str, tl['measured_shape']))}, extrapolated by cells | "
        f"{st['wall']}x / {st['cpu']}x |",
        "",
        f"Agreement with the Python loop on one {s} x {s} pair (float64): value {py['max_abs_value_diff']:.2e}, "
        f"gradient {py['max_abs_grad_diff']:.2e} (max abs difference).",
        "",
        "Memory (float32; bytes kept for the backward, and forward peak incl. the transient table):",
        "",
        "| batch x side² | cells | saved MB | saved B/cell | forward peak B/cell |",
        "|---|---|---|---|---|",
    ]
    for mrow in r["memory"]:
        lines.append(
            f"| {mrow['batch']} x {mrow['side']}² | {mrow['cells']:,} | {mrow['saved_bytes'] / 2**20:.0f} | "
            f"{mrow['saved_bytes_per_cell']} | {mrow['forward_peak_bytes_per_cell']} |"
        )
    if r.get("cuda") is None:
        lines += ["", "No GPU was lent to this run: the CUDA figure is not recorded."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
