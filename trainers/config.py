"""Training configs: one YAML file per run, parsed once into typed sections; defaults live here and nowhere else.

A config file (see ``trainers/configs/``) has the sections below; ``objective`` is the recipe's own section, parsed
by the recipe's ``Objective`` model, so a new recipe adds fields without touching this file::

    recipe: mae                     # a key of trainers.recipe.RECIPES
    seed: 0
    model: {size: B, num_frames: 16, image_size: 224, patch: 16, tubelet: 2}
    data: {split: train, by: source, batch_size: 32, num_workers: 8, samples_per_epoch: 100000, frame_stride: 1}
    optim: {lr: 1.5e-4, min_lr: 1.0e-5, betas: [0.9, 0.95], weight_decay: 0.05, warmup_steps: 2000}
    run: {steps: 100000, accum: 1, precision: bf16, log_every: 10, ckpt_every: 1000}
    objective: {mask_ratio: 0.9, decoder_depth: 4}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus.errors import ManifestError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """The shared video ViT (``trainers.vit``): a named size, optionally with width/depth/heads overridden."""

    size: Literal["tiny", "S", "B", "L"] = "B"
    num_frames: int = Field(16, gt=0)
    image_size: int = Field(224, gt=0)
    patch: int = Field(16, gt=0)
    tubelet: int = Field(2, gt=0)
    dim: int | None = None
    depth: int | None = None
    heads: int | None = None

    def vit_kwargs(self) -> dict[str, Any]:
        from trainers.vit import VIT_SIZES

        size = {**VIT_SIZES[self.size], **{k: v for k in ("dim", "depth", "heads") if (v := getattr(self, k))}}
        shape = {k: getattr(self, k) for k in ("num_frames", "image_size", "patch", "tubelet")}
        return {**size, **shape}

    def token_grid(self) -> tuple[int, int, int]:
        """(time slots, rows, columns) of the ViT's tokens: what the mask generators cover."""
        side = self.image_size // self.patch
        return self.num_frames // self.tubelet, side, side


class DataConfig(_Section):
    """How clips stream from the build (``corpus.sampling``) and are augmented (``trainers.data``)."""

    split: str = "train"
    by: Literal["source", "domain", "cluster"] = "source"  # the sampler's groups (weights from clip_balance)
    batch_size: int = Field(8, gt=0)  # per rank and micro-step
    num_workers: int = Field(2, ge=0)
    prefetch_factor: int = Field(2, gt=0)
    samples_per_epoch: int | None = None  # default: every clip of the split once
    shuffle_buffer: int = Field(64, ge=0)
    frame_stride: int = Field(1, gt=0)  # every k-th frame (clips are already at the build's fps)
    decoder: Literal["decord", "ffmpeg"] = "decord"  # see bench/results/loader.md
    crop_scale: tuple[float, float] = (0.3, 1.0)  # random resized crop: area fraction ...
    crop_ratio: tuple[float, float] = (0.75, 1.35)  # ... and aspect ratio
    hflip: float = Field(0.5, ge=0, le=1)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


class OptimConfig(_Section):
    """AdamW with a linear warm-up then a cosine decay to ``min_lr`` (per optimizer step)."""

    lr: float = Field(1.5e-4, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.05, ge=0)  # biases and 1-D parameters get none
    weight_decay_end: float | None = None  # cosine weight-decay schedule to this value (V-JEPA: 0.04 -> 0.4)
    clip_grad: float | None = None


class RunConfig(_Section):
    steps: int = Field(1000, gt=0)  # optimizer steps
    accum: int = Field(1, gt=0)  # micro-batches per optimizer step
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast applies on CUDA only
    log_every: int = Field(10, gt=0)
    ckpt_every: int = Field(500, gt=0)
    keep_checkpoints: int = Field(2, ge=1)  # step checkpoints kept besides last.pt


class TrainConfig(_Section):
    recipe: str
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    objective: dict[str, Any] = Field(default_factory=dict)  # the recipe's section


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Parse a YAML config; ``overrides`` are dotted keys (``{"run.steps": 40}``). Errors name the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a config is a mapping of sections, got {type(data).__name__}")
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ManifestError("\n".join(lines)) from e


def parse_section(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    """Validate a recipe's ``objective`` section, naming the section in the error."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [f"{where}: objective.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ManifestError("\n".join(lines)) from e
