"""What a recipe is, and the registry the loop and ``surgcorpus train <recipe>`` dispatch through.

A recipe is ONE module (``trainers/<name>.py``) holding its model, its objective and its config section, and exposing
``RECIPE``, an object with the :class:`Recipe` interface below. The loop (``trainers.loop``) knows no recipe: it
builds the model and the data through ``RECIPE``, calls ``model(batch)`` for ``(loss, metrics)``, steps AdamW with the
shared schedule, calls ``RECIPE.after_step`` and writes checkpoints and metrics. Adding a recipe is therefore:

1. ``trainers/<name>.py`` with a ``RecipeModel`` subclass, an ``Objective`` pydantic model for the config's
   ``objective:`` section, and ``RECIPE = <a Recipe>``;
2. one line in :data:`RECIPES` below;
3. ``trainers/configs/<name>-*.yaml``.

The interface (``trainers.mae`` is the worked example):

``RECIPE.name``
    the registry key.
``RECIPE.build_model(cfg: TrainConfig) -> RecipeModel``
    the whole trainable module. Its ``forward(batch) -> (loss, metrics)`` computes the objective (so DDP's hooks
    see every parameter use), ``embed(x)`` maps clips ``(B, 3, T, H, W)`` to ``(B, D)`` features, and
    ``eval_encoder`` is the video encoder used for frozen features (``trainers.checkpoint.load_encoder``).
``RECIPE.build_data(cfg, build_dir, *, rank, world_size) -> BatchStream``
    an ``IterableDataset`` of whole batches (dicts of tensors) with ``batches_per_epoch`` and
    ``set_position(epoch, batch)`` for exact resume, and ``loader(pin_memory)`` returning its DataLoader.
    Video recipes return ``trainers.data.ClipStream`` with their mask generator as ``collate``.
``RECIPE.param_groups(model, cfg) -> list[dict]``
    optimizer groups; :func:`decay_groups` (no weight decay on biases and 1-D parameters) unless overridden.
``RECIPE.after_step(model, step, total_steps) -> None``
    called after every optimizer step (JEPA's EMA target update); a no-op by default.

Checkpoints of every recipe satisfy the ``embed --encoder`` contract through one builder,
``trainers.recipe:model_from_config``, that rebuilds the model from the saved training config.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from trainers.config import TrainConfig

# name -> module exposing RECIPE; a plain dict, imported on use (importing a recipe never registers it).
RECIPES: dict[str, str] = {
    "mae": "trainers.mae",
    "jepa": "trainers.jepa",
    "hierskp": "trainers.hierskp",
}

CONFIG_DIR = Path(__file__).parent / "configs"


class RecipeModel(nn.Module):
    """Base of every recipe's model: ``forward(batch) -> (loss, metrics)``, ``embed`` and ``eval_encoder``."""

    @property
    def eval_encoder(self) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, 3, T, H, W)`` -> mean-pooled features ``(B, D)`` of :attr:`eval_encoder`."""
        return self.eval_encoder(x).mean(dim=1)


@runtime_checkable
class BatchStream(Protocol):
    batches_per_epoch: int

    def set_position(self, epoch: int, batch: int = 0) -> None: ...

    def loader(self, pin_memory: bool = False) -> torch.utils.data.DataLoader: ...


class Recipe(Protocol):
    name: str

    def build_model(self, cfg: TrainConfig) -> RecipeModel: ...

    def build_data(self, cfg: TrainConfig, build_dir: Path, *, rank: int, world_size: int) -> BatchStream: ...

    def param_groups(self, model: RecipeModel, cfg: TrainConfig) -> list[dict[str, Any]]: ...

    def after_step(self, model: RecipeModel, step: int, total_steps: int) -> None: ...


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters: weight decay on matrices, none on biases and 1-D tensors."""
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class VideoRecipe:
    """Defaults shared by the video recipes: clip stream with ``self.collate(cfg)``, :func:`decay_groups`."""

    name = ""

    def collate(self, cfg: TrainConfig):  # -> trainers.data.Collate | None
        return None

    def build_data(self, cfg: TrainConfig, build_dir: Path, *, rank: int = 0, world_size: int = 1) -> BatchStream:
        from trainers.data import ClipStream

        return ClipStream(
            build_dir,
            cfg.data,
            num_frames=cfg.model.num_frames,
            image_size=cfg.model.image_size,
            seed=cfg.seed,
            collate=self.collate(cfg),
            rank=rank,
            world_size=world_size,
        )

    def param_groups(self, model: RecipeModel, cfg: TrainConfig) -> list[dict[str, Any]]:
        return decay_groups(model, cfg.optim.weight_decay)

    def after_step(self, model: RecipeModel, step: int, total_steps: int) -> None:
        return None


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name`` (a clear error listing the known ones otherwise)."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}: known recipes are {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[name]).RECIPE


def default_config(name: str) -> Path:
    """``trainers/configs/<name>-tiny.yaml``: the CPU-sized config of a recipe."""
    return CONFIG_DIR / f"{name}-tiny.yaml"


def model_from_config(config: dict[str, Any]) -> RecipeModel:
    """Rebuild a recipe's model from a saved training config (the checkpoint ``builder`` of every recipe)."""
    cfg = TrainConfig.model_validate(config)
    return get_recipe(cfg.recipe).build_model(cfg)
