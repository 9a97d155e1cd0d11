"""The one training loop: any recipe, on CPU, one GPU or ``torchrun`` (DDP), with exact resume.

Per optimizer step: ``accum`` micro-batches from the recipe's stream (a uint8 ``video`` is normalised on the device,
``trainers.data.normalize``), ``loss, metrics = model(batch)`` under bf16 autocast on CUDA (fp32 on CPU), backward
(DDP synchronises on the last micro-batch only), optional gradient clipping, AdamW step, warm-up + cosine learning
rate (and optional cosine weight decay), then ``recipe.after_step``.

Writes into ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (``trainers.metrics``),
``checkpoints/step-<N>.pt`` every ``run.ckpt_every`` steps and at the end, ``last.pt`` (``trainers.checkpoint``).
``resume=True`` continues from ``last.pt``: weights, optimizer, scheduler, the stream's epoch and batch and the RNG
states, so the run goes on with the losses the uninterrupted run would have had.

``stop_at`` ends the run after that optimizer step without changing the schedule (whose length is ``run.steps``),
so a run can be cut in pieces.

Example::

    from trainers.config import load_config
    from trainers.loop import train
    result = train(load_config("trainers/configs/mae-tiny.yaml"), "build/demo/corpus", "runs/mae")

Under DDP: ``torchrun --nproc_per_node=8 -m cli.main train mae --config ... --build ... --out ...``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from corpus.errors import ManifestError, MissingInput
from trainers.checkpoint import encoder_config, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from trainers.config import TrainConfig
from trainers.data import normalize
from trainers.metrics import MetricsLog
from trainers.recipe import get_recipe
from trainers.schedule import WarmupCosine, cosine


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    loss: float
    checkpoint: Path
    clips_per_s: float
    rank: int = 0


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Rank and world size from torchrun's environment; a process group only when the world has several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _mean_over_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
        values /= d.world_size
    return values


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from corpus.progress import console

    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
    progress.add_task("train", total=total, completed=done, info="")
    return progress


def train(
    cfg: TrainConfig,
    build_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> TrainResult:
    """Train ``cfg.recipe`` on ``build_dir``'s shards into ``out_dir``; see the module docstring."""
    build_dir, out_dir = Path(build_dir), Path(out_dir)
    d = init_distributed()
    dev = torch.device(device or (f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    total = cfg.run.steps
    stop_at = min(stop_at or total, total)
    recipe = get_recipe(cfg.recipe)

    torch.manual_seed(cfg.seed)
    model = recipe.build_model(cfg).to(dev)
    opt = torch.optim.AdamW(
        recipe.param_groups(model, cfg), lr=cfg.optim.lr, betas=cfg.optim.betas, fused=dev.type == "cuda"
    )
    for g in opt.param_groups:
        g["base_weight_decay"] = g["weight_decay"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.optim.warmup_steps, total, cfg.optim.min_lr / cfg.optim.lr)
    )
    stream = recipe.build_data(cfg, build_dir, rank=d.rank, world_size=d.world_size)
    step, epoch, batch_in_epoch = 0, 0, 0
    last = out_dir / "last.pt"
    if resume:
        if not last.exists():
            raise MissingInput(f"{last}: nothing to resume (run without --resume to start)")
        ckpt = read_checkpoint(last, mmap=False)
        saved = ckpt["config"]["kwargs"]["config"]
        mine = cfg.model_dump(mode="json")
        for section in ("recipe", "seed", "model", "objective", "data", "optim"):
            if saved.get(section) != mine.get(section):
                raise ManifestError(f"{last}: --resume with a different '{section}' than the checkpoint's")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        # run.steps may change on resume (e.g. to train longer): the schedule follows the new length from here on
        sched.lr_lambdas[0] = WarmupCosine(cfg.optim.warmup_steps, total, cfg.optim.min_lr / cfg.optim.lr)
        step, epoch, batch_in_epoch = (ckpt["position"][k] for k in ("step", "epoch", "batch"))
        set_rng_state(ckpt["rng"])
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    log = MetricsLog(out_dir / "metrics.jsonl", resume_step=step if resume else None) if d.main else None

    ddp = model
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda" and cfg.run.precision == "bf16")
    clips_per_batch = cfg.data.batch_size * d.world_size

    def checkpoint() -> Path | None:
        if not d.main:
            return None
        payload = {
            "model": model.state_dict(),
            "config": encoder_config(cfg),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "position": {"step": step, "epoch": epoch, "batch": batch_in_epoch},
            "rng": rng_state(),
        }
        return save_checkpoint(out_dir, step, payload, keep=cfg.run.keep_checkpoints)

    model.train()
    t_start = t_log = time.perf_counter()
    wait_since_log, clips_since_log, loss_value, rate = 0.0, 0, float("nan"), 0.0
    ckpt_path = last
    micro, losses, extra = 0, [], {}  # an optimizer step's micro-batches may span an epoch boundary
    with _progress(progress and d.main, stop_at, step) as bar:
        while step < stop_at:
            if batch_in_epoch >= stream.batches_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            stream.set_position(epoch, batch_in_epoch)
            batches = iter(stream.loader(pin_memory=dev.type == "cuda"))
            while step < stop_at:
                t0 = time.perf_counter()
                batch = next(batches, None)
                wait_since_log += time.perf_counter() - t0
                if batch is None:
                    break
                batch_in_epoch += 1
                micro += 1
                batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                if "video" in batch:  # uint8 from the workers (trainers.data.normalize)
                    batch["video"] = normalize(batch["video"], cfg.data.mean, cfg.data.std)
                sync = micro == cfg.run.accum or d.world_size == 1
                with autocast, contextlib.nullcontext() if sync else ddp.no_sync():
                    loss, metrics = ddp(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step + 1}: loss is {loss.item()} (lower optim.lr or check data)")
                (loss / cfg.run.accum).backward()
                losses.append(loss.detach())
                extra = metrics
                clips_since_log += clips_per_batch
                if micro < cfg.run.accum:
                    continue
                if cfg.optim.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                if cfg.optim.weight_decay_end is not None:
                    wd = cosine(step, total, cfg.optim.weight_decay, cfg.optim.weight_decay_end)
                    for g in opt.param_groups:
                        g["weight_decay"] = wd if g["base_weight_decay"] > 0 else 0.0
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                recipe.after_step(model, step, total)
                micro = 0
                if step % cfg.run.log_every == 0 or step == stop_at:
                    vals = torch.stack([torch.stack(losses).mean().float()] + [v.float() for v in extra.values()])
                    vals = _mean_over_ranks(vals, d).tolist()
                    now = time.perf_counter()
                    rate = clips_since_log / (now - t_log)
                    loss_value = vals[0]
                    if log is not None:
                        row = {"step": step, "epoch": epoch, "loss": loss_value, "lr": lr, "clips_per_s": rate,
                               "data_wait": wait_since_log / (now - t_log), "time": now - t_start}  # fmt: skip
                        if dev.type == "cuda":
                            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
                        log.write(row | dict(zip(extra, vals[1:], strict=True)))
                    if bar is not None:
                        bar.update(bar.task_ids[0], completed=step, info=f"loss {loss_value:.4f} {rate:.1f} clips/s")
                    t_log, wait_since_log, clips_since_log = now, 0.0, 0
                losses = []
                if step % cfg.run.ckpt_every == 0 or step == stop_at:
                    ckpt_path = checkpoint() or ckpt_path
            del batches
    if log is not None:
        log.close()
    if d.world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0's last checkpoint is on disk before any rank returns
        dist.destroy_process_group()
    return TrainResult(out_dir, step, loss_value, ckpt_path, rate, d.rank)


def describe(cfg: TrainConfig) -> dict[str, Any]:
    """Parameter counts of a config's model (total and the eval encoder's), without training."""
    with torch.device("meta"):  # counts without allocating the weights
        model = get_recipe(cfg.recipe).build_model(cfg)
    return {
        "recipe": cfg.recipe,
        "params": sum(p.numel() for p in model.parameters()),
        "encoder_params": sum(p.numel() for p in model.eval_encoder.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
