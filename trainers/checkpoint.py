"""Checkpoints: one torch file that both resumes training exactly and loads as an encoder.

Layout (``torch.load(path, weights_only=True)`` reads it)::

    {"model": state_dict of the recipe model,
     "config": {"builder": "trainers.recipe:model_from_config", "kwargs": {"config": <training config>},
                "num_frames", "image_size", "mean", "std", "recipe"},          # the embed --encoder contract
     "optimizer": ..., "scheduler": ..., "scaler": None,
     "position": {"step", "epoch", "batch"},                                  # the sampler's place in its epoch
     "rng": {"torch", "cuda", "numpy", "python"}}

Written to ``<out>/checkpoints/step-<N>.pt`` (temp name then rename) and copied to ``<out>/last.pt``; the oldest
step files beyond ``keep`` are removed. ``config.yaml`` beside them is the resolved training config.

Frozen features for evaluation::

    from trainers.checkpoint import load_encoder
    encoder, config = load_encoder("runs/mae/last.pt")   # VideoViT in eval mode; config["image_size"], ...
    feats = encoder.embed(clips)                          # (B, 3, T, H, W) normalised with config mean/std -> (B, D)
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpus.errors import MissingInput
from trainers.config import TrainConfig

BUILDER = "trainers.recipe:model_from_config"


def encoder_config(cfg: TrainConfig) -> dict[str, Any]:
    """The ``config`` entry of a checkpoint (see the module docstring)."""
    return {
        "builder": BUILDER,
        "kwargs": {"config": cfg.model_dump(mode="json")},
        "recipe": cfg.recipe,
        "num_frames": cfg.model.num_frames,
        "image_size": cfg.model.image_size,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
    }


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(out_dir: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step-<step>.pt`` atomically, refresh ``last.pt``, prune old step files."""
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{step:08d}.pt"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    last_tmp = out_dir / f"last.pt.tmp{os.getpid()}"
    shutil.copyfile(path, last_tmp)
    os.replace(last_tmp, out_dir / "last.pt")
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def read_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """A checkpoint dict, with a clear error when the file is missing or not one of ours. ``mmap``: tensors are read
    on use (an encoder load never reads the optimizer state, 5 GB for ViT-L JEPA); resume reads everything."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise MissingInput(f"{path}: not a readable torch checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise MissingInput(f"{path}: not a trainer checkpoint (expected a dict with 'model' and 'config')")
    return ckpt


def load_model(path: str | Path):
    """The recipe model of a checkpoint, weights loaded, in eval mode, and the checkpoint's ``config``."""
    from trainers.recipe import model_from_config

    ckpt = read_checkpoint(path)
    config = dict(ckpt["config"])
    model = model_from_config(config["kwargs"]["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), config


def load_encoder(path: str | Path):
    """``(encoder, config)``: the checkpoint's video encoder (a :class:`~trainers.vit.VideoViT`, eval mode, no
    gradients needed) and its config (``num_frames``, ``image_size``, ``mean``, ``std``, ``recipe``, ``kwargs``).
    ``encoder(x)`` gives tokens ``(B, N, D)``, ``encoder.embed(x)`` their mean ``(B, D)``."""
    model, config = load_model(path)
    encoder = model.eval_encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, config
