"""The SurgRec-16 linear probe on frozen, cached features: SurgRec's protocol reproduced, and corrected.

Head (as SurgRec's ``modeling_finetune_videomaev2.py``): features (mean over all tokens, done by the encoder) →
LayerNorm without affine parameters (SurgRec's ``fc_norm`` stays frozen at weight 1, bias 0) → Linear, initialised
trunc-normal std 0.02 times ``init_scale``. AdamW (betas 0.9/0.999, weight decay on the weight matrix only), a
per-step cosine schedule with linear warm-up from ``min_lr``. Each epoch, every training clip contributes one of its
cached views, drawn with the run's seed. Test: the softmax of every view (5 temporal x 3 spatial) is averaged per
clip, argmax is the prediction.

Two configurations (:data:`PUBLISHED`, :data:`FIXED`):

=================== ============================================= ===============================================
                    published (reproduced on request)              fixed (default)
=================== ============================================= ===============================================
steps               50 epochs of ``N // 64`` steps (drop_last):    50 epochs, and at least 1000 optimiser steps
                    1-4 steps per epoch on small sets
head init           x 0.001                                        x 1
lr                  5e-4 x 64 / 256                                1e-3
model selection     the last epoch                                 best val accuracy (a real val split, never test)
head size           published (AutoLaparo 14, SurgicalActions160   one output per class of the labels
                    3, widened when labels need more)
result keys         ``basename.split('.')[0]`` (colliding clips    one result per clip path
                    merge, the first clip's label is kept)
=================== ============================================= ===============================================

Not reproduced (frozen cached features): RandAugment, random resized crops, mixup/cutmix and label smoothing of
SurgRec's training pipeline, and fp16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import PurePosixPath
from typing import Literal

import numpy as np

from eval.baselines import baselines, collapse_reason
from eval.metrics import accuracy, macro_prf, video_jaccard

# SurgRec's head sizes where they disagree with the labels (published protocol only), by published folder.
PUBLISHED_HEAD_SIZES: dict[str, int] = {"AutoLaparo": 14, "SurgicalActions160": 3}


@dataclass(frozen=True)
class ProbeConfig:
    name: str
    epochs: int = 50
    batch_size: int = 64
    lr: float = 5e-4 * 64 / 256
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    init_scale: float = 1e-3
    min_steps: int = 0
    drop_last: bool = True
    select: Literal["last", "val"] = "last"
    key_by_basename: bool = False
    seed: int = 0


PUBLISHED = ProbeConfig("published", key_by_basename=True)
FIXED = ProbeConfig("fixed", lr=1e-3, init_scale=1.0, min_steps=1000, drop_last=False, select="val")
CONFIGS = {"published": PUBLISHED, "fixed": FIXED}


@dataclass
class Split:
    """One split's clips: keys (clip paths), labels, ``(N, V, D)`` features and optional source video ids."""

    keys: list[str]
    labels: np.ndarray
    features: np.ndarray
    videos: list[str] | None = None


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    baselines: dict[str, float]
    collapsed: str | None
    n: dict[str, int]
    head_size: int
    steps: int
    best_epoch: int
    predictions: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    probabilities: np.ndarray | None = None  # (test keys, head size): view-averaged softmax


def _schedule(cfg: ProbeConfig, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * step / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _probs(head, feats: np.ndarray):
    import torch

    with torch.no_grad():
        x = torch.from_numpy(feats.astype(np.float32))
        n, v, d = x.shape
        return torch.softmax(head(x.reshape(n * v, d)), dim=-1).reshape(n, v, -1).mean(dim=1).numpy()


def _merge_by_basename(keys: Sequence[str], labels: np.ndarray, probs: np.ndarray):
    """SurgRec's result keys: clips whose basenames agree up to the first dot merge; the first one's label stays."""
    order: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(PurePosixPath(k).name.split(".")[0], []).append(i)
    idx = [ix[0] for ix in order.values()]
    return list(order), labels[idx], np.stack([probs[ix].mean(axis=0) for ix in order.values()]), idx


def run_probe(
    train: Split, val: Split | None, test: Split, cfg: ProbeConfig, head_size: int | None = None
) -> ProbeResult:
    """Train the head on ``train``, select on ``val`` (``cfg.select == "val"``), score ``test``; see module doc."""
    import torch

    # A linear head on cached features is a tiny workload: intra-op threads only add synchronisation (30 s instead
    # of 2 s for 300 steps on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_probe(train, val, test, cfg, head_size)
    finally:
        torch.set_num_threads(threads)


def _run_probe(train: Split, val: Split | None, test: Split, cfg: ProbeConfig, head_size: int | None) -> ProbeResult:
    import torch

    classes = np.unique(np.concatenate([train.labels, test.labels] + ([val.labels] if val and len(val.keys) else [])))
    needed = int(classes.max()) + 1
    size = max(head_size or 0, needed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    dim = train.features.shape[-1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False), torch.nn.Linear(dim, size))
    with torch.no_grad():
        lin = head[1]
        torch.nn.init.trunc_normal_(lin.weight, std=0.02)
        torch.nn.init.trunc_normal_(lin.bias, std=0.02)
        lin.weight.mul_(cfg.init_scale)
        lin.bias.mul_(cfg.init_scale)
    opt = torch.optim.AdamW(
        [{"params": [lin.weight], "weight_decay": cfg.weight_decay}, {"params": [lin.bias], "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    n = len(train.keys)
    bs = min(cfg.batch_size, n) if not cfg.drop_last else cfg.batch_size
    per_epoch = n // bs if cfg.drop_last else math.ceil(n / bs)
    epochs = cfg.epochs
    if cfg.min_steps and per_epoch:
        epochs = max(epochs, math.ceil(cfg.min_steps / per_epoch))
    total, warmup = per_epoch * epochs, per_epoch * cfg.warmup_epochs
    y_train = torch.from_numpy(train.labels.astype(np.int64))
    step, best, best_epoch, best_state = 0, -1.0, epochs - 1, None
    use_val = cfg.select == "val" and val is not None and len(val.keys) > 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        view = rng.integers(0, train.features.shape[1], n)
        x_all = torch.from_numpy(train.features[np.arange(n), view].astype(np.float32))
        for b in range(per_epoch):
            idx = torch.from_numpy(order[b * bs : (b + 1) * bs])
            for g in opt.param_groups:
                g["lr"] = _schedule(cfg, step, total, warmup)
            loss = torch.nn.functional.cross_entropy(head(x_all[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        if use_val:
            acc = accuracy(val.labels, _probs(head, val.features).argmax(axis=1))
            if acc > best:
                best, best_epoch = acc, epoch
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)

    probs = _probs(head, test.features)
    keys, labels, videos = list(test.keys), test.labels, test.videos
    if cfg.key_by_basename:
        keys, labels, probs, idx = _merge_by_basename(keys, labels, probs)
        videos = [videos[i] for i in idx] if videos else None
    pred = probs.argmax(axis=1)
    metrics = {"accuracy": accuracy(labels, pred), **{f"macro_{k}": v for k, v in macro_prf(labels, pred).items()}}
    top5 = np.argsort(-probs, axis=1)[:, : min(5, probs.shape[1])]
    metrics["top5_accuracy"] = float(np.mean([labels[i] in top5[i] for i in range(len(labels))]))
    if videos:
        metrics["video_jaccard"] = video_jaccard(labels, pred, videos)
    return ProbeResult(
        metrics=metrics,
        baselines=baselines(train.labels.tolist(), labels.tolist(), len(classes)),
        collapsed="not trained: no optimiser step (train set smaller than one batch)"
        if step == 0
        else collapse_reason(labels, pred),
        n={"train": n, "val": len(val.keys) if val else 0, "test": len(test.keys), "test_keys": len(keys)},
        head_size=size,
        steps=step,
        best_epoch=best_epoch,
        predictions=[
            {"clip": k, "label": int(t), "prediction": int(p), "confidence": float(probs[i, p])}
            for i, (k, t, p) in enumerate(zip(keys, labels, pred, strict=True))
        ],
        config=asdict(cfg),
        probabilities=probs,
    )


def config_for(splits: str, seed: int = 0) -> ProbeConfig:
    if splits not in CONFIGS:
        raise ValueError(f"unknown probe protocol {splits!r}: use {' or '.join(CONFIGS)}")
    return replace(CONFIGS[splits], seed=seed)
