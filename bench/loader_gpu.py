"""Paper-size recipes on a GPU: clips/s, peak memory and GPU-idle fraction over a few hundred steps.

Runs ``trainers/configs/mae-vitb.yaml`` and ``jepa-vitl.yaml`` (or ``--configs``) through the training loop on a
build dir for ``--steps`` optimizer steps each and summarises their ``metrics.jsonl`` after ``--skip`` warm-up steps:
mean ``clips_per_s``, peak ``gpu_mem_gb`` and mean ``data_wait`` (the share of wall time the loop waited for a
batch, i.e. the GPU sat idle for want of data). Results: ``bench/results/loader_gpu.{json,md}``.

    .venv/bin/python bench/loader_gpu.py --build build/demo/corpus --steps 300 [--workers 12] [--batch 32]
    torchrun --nproc_per_node=8 bench/loader_gpu.py ...   # the same under DDP (rank 0 writes the results)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainers.config import load_config
from trainers.loop import train
from trainers.metrics import read_metrics
from trainers.recipe import CONFIG_DIR

RESULTS = Path(__file__).parent / "results"


def run_one(config: Path, build: Path, steps: int, skip: int, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = load_config(config, **{"run.log_every": 1, "run.ckpt_every": 10**9, **overrides})
    out = Path(tempfile.mkdtemp(prefix="loader-gpu-"))
    train(cfg, build, out, stop_at=steps, progress=False)
    rows = read_metrics(out / "metrics.jsonl")[skip:] if int(os.environ.get("RANK", "0")) == 0 else []
    shutil.rmtree(out, ignore_errors=True)  # the checkpoints of a bench run are not kept
    if not rows:
        return {}
    return {
        "config": config.name,
        "steps": steps,
        "batch_per_rank": cfg.data.batch_size,
        "accum": cfg.run.accum,
        "workers": cfg.data.num_workers,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "clips_per_s": statistics.fmean(r["clips_per_s"] for r in rows),
        "gpu_mem_gb_peak": max((r.get("gpu_mem_gb", 0.0) for r in rows), default=0.0),
        "gpu_idle_fraction": statistics.fmean(r["data_wait"] for r in rows),
        "loss_first": rows[0]["loss"],
        "loss_last": rows[-1]["loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", type=Path, default=Path("build/demo/corpus"))
    ap.add_argument(
        "--configs", nargs="+", type=Path, default=[CONFIG_DIR / "mae-vitb.yaml", CONFIG_DIR / "jepa-vitl.yaml"]
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip", type=int, default=20, help="warm-up steps left out of the means")
    ap.add_argument("--workers", type=int, default=None, help="override data.num_workers")
    ap.add_argument("--batch", type=int, default=None, help="override data.batch_size (per rank)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    overrides: dict[str, Any] = {}
    if args.workers is not None:
        overrides["data.num_workers"] = args.workers
    if args.batch is not None:
        overrides["data.batch_size"] = args.batch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no GPU: figures are not GPU figures)"
    runs = [run_one(c, args.build, args.steps, args.skip, overrides) for c in args.configs]
    if int(os.environ.get("RANK", "0")) != 0:
        return
    res = {"device": device, "torch": torch.__version__, "build": str(args.build), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader_gpu.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# Paper-size recipes (`bench/loader_gpu.py`)",
        "",
        f"{device}; torch {torch.__version__}; build `{args.build}`.",
        "",
        "| config | ranks | batch/rank x accum | steps | clips/s | peak GPU memory (GiB) | GPU idle (data wait) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['config']} | {r['world_size']} | {r['batch_per_rank']} x {r['accum']} | {r['steps']} | "
            f"{r['clips_per_s']:.1f} | {r['gpu_mem_gb_peak']:.1f} | {r['gpu_idle_fraction']:.3f} |"
            for r in runs
        ),
    ]
    (args.out / "loader_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
