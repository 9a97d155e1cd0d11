"""SurgRec-JEPA: V-JEPA pretraining (multi-block masks, EMA target encoder, predictor, L1 in latent space).

Recipe facts kept from V-JEPA's code (``src/masks/multiblock3d.py``, ``src/models/predictor.py``,
``app/vjepa/train.py``): two mask configs per clip, 8 blocks of spatial scale 0.15 and 2 blocks of 0.7, aspect
ratio in (0.75, 1.5), every block spanning all time slots. A config's block size is drawn once per batch, the block
positions per clip; the target is the union of the blocks, the context its complement; index lists are cut to the
batch's shortest so they stack, and a mask leaving no context is drawn again. The context encoder sees the context
tokens; the predictor (linear to 384, 12 blocks with the encoder's head count, one zero-initialised mask token per
mask config, fixed 3D positions, a layer norm, linear back) predicts the target tokens; the EMA target encoder sees
the full clip, its output goes through a layer norm without affine parameters, and the loss is the mean absolute
error at the target tokens, averaged over the mask configs. EMA momentum rises linearly from 0.998 to 1.0 over the
run. The target encoder is the one evaluated (``eval_encoder``, ``embed``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainers.config import TrainConfig, parse_section
from trainers.recipe import RecipeModel, VideoRecipe
from trainers.vit import Block, VideoViT, gather_tokens, init_weights, sincos_3d


class MaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_blocks: int = Field(gt=0)
    spatial_scale: float = Field(gt=0, le=1)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)


class JEPAObjective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    masks: tuple[MaskSpec, ...] = (
        MaskSpec(num_blocks=8, spatial_scale=0.15),
        MaskSpec(num_blocks=2, spatial_scale=0.7),
    )
    predictor_depth: int = Field(12, gt=0)
    predictor_dim: int = Field(384, gt=0)
    predictor_heads: int | None = None  # default: the encoder's
    ema: tuple[float, float] = (0.998, 1.0)


@dataclass(frozen=True)
class MultiBlockMasking:
    """V-JEPA's multi-block masks on a token grid ``(t, h, w)``: for mask config ``i`` the batch gets
    ``context_i`` and ``target_i`` token indices, ``(B, K)`` each (sorted, cut to the batch minimum)."""

    grid: tuple[int, int, int]
    specs: tuple[MaskSpec, ...]
    max_tries: int = 50

    def block_size(self, spec: MaskSpec, gen: torch.Generator) -> tuple[int, int]:
        _, gh, gw = self.grid
        keep = max(1, int(gh * gw * spec.spatial_scale))
        lo, hi = spec.aspect_ratio
        ar = lo + float(torch.rand(1, generator=gen)) * (hi - lo)
        h = min(gh, max(1, round(math.sqrt(keep * ar))))
        w = min(gw, max(1, round(math.sqrt(keep / ar))))
        return h, w

    def spatial_mask(self, spec: MaskSpec, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        """``(h*w,)`` bool, True on the union of ``num_blocks`` blocks; redrawn while it covers everything."""
        _, gh, gw = self.grid
        h, w = size
        for _ in range(self.max_tries):
            m = torch.zeros(gh, gw, dtype=torch.bool)
            for _ in range(spec.num_blocks):
                top = int(torch.randint(0, gh - h + 1, (1,), generator=gen))
                left = int(torch.randint(0, gw - w + 1, (1,), generator=gen))
                m[top : top + h, left : left + w] = True
            if not m.all():
                return m.flatten()
        raise ValueError(f"mask {spec}: {self.max_tries} draws of {h}x{w} blocks on a {gh}x{gw} grid left no context")

    def __call__(self, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        t, gh, gw = self.grid
        slots = torch.arange(t).view(t, 1) * (gh * gw)
        out = {}
        for i, spec in enumerate(self.specs):
            size = self.block_size(spec, gen)
            masks = [self.spatial_mask(spec, size, gen) for _ in range(batch["video"].shape[0])]
            tgt = [m.nonzero().flatten() for m in masks]
            ctx = [(~m).nonzero().flatten() for m in masks]
            # cut spatial lists (not the flattened ones) to the batch minimum, so every slot keeps the same positions
            n_t, n_c = min(map(len, tgt)), min(map(len, ctx))
            out[f"context_{i}"] = torch.stack([(slots + c[:n_c]).flatten() for c in ctx])
            out[f"target_{i}"] = torch.stack([(slots + c[:n_t]).flatten() for c in tgt])
        return out


class Predictor(nn.Module):
    """Context tokens + one mask token per target position -> predicted target features (encoder width)."""

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, grid: tuple[int, int, int], n_masks: int):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_tokens = nn.Parameter(torch.zeros(n_masks, 1, 1, dim))
        self.register_buffer("pos", sincos_3d(dim, grid), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, enc_dim)
        self.apply(init_weights)

    def forward(self, ctx: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor, mask: int) -> torch.Tensor:
        pos = self.pos.to(ctx.dtype)
        x = self.embed(ctx) + pos[ctx_idx]
        m = self.mask_tokens[mask].to(x.dtype) + pos[tgt_idx]
        z = torch.cat([x, m], dim=1)
        for block in self.blocks:
            z = block(z)
        return self.proj(self.norm(z[:, ctx_idx.shape[1] :]))


class JEPAModel(RecipeModel):
    def __init__(self, vit: dict[str, Any], *, predictor_dim: int, predictor_depth: int, predictor_heads: int,
                 n_masks: int, ema: tuple[float, float] = (0.998, 1.0)) -> None:  # fmt: skip
        super().__init__()
        self.ema = ema
        self.encoder = VideoViT(**vit)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = Predictor(
            self.encoder.dim, predictor_dim, predictor_depth, predictor_heads, self.encoder.grid, n_masks
        )
        self.n_masks = n_masks

    @property
    def eval_encoder(self) -> VideoViT:
        return self.target_encoder

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["video"]
        with torch.no_grad():
            h = self.target_encoder(x)
            h = F.layer_norm(h, (h.shape[-1],))
        losses = []
        for i in range(self.n_masks):
            ctx, tgt = batch[f"context_{i}"], batch[f"target_{i}"]
            pred = self.predictor(self.encoder(x, keep=ctx), ctx, tgt, i)
            losses.append((pred.float() - gather_tokens(h, tgt).float()).abs().mean())
        loss = torch.stack(losses).mean()
        return loss, {f"loss_mask{i}": v.detach() for i, v in enumerate(losses)}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        tgt = list(self.target_encoder.parameters())
        src = list(self.encoder.parameters())
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)


class JEPARecipe(VideoRecipe):
    name = "jepa"

    def objective(self, cfg: TrainConfig) -> JEPAObjective:
        return parse_section(JEPAObjective, cfg.objective, f"recipe {self.name}")

    def collate(self, cfg: TrainConfig) -> MultiBlockMasking:
        return MultiBlockMasking(cfg.model.token_grid(), self.objective(cfg).masks)

    def build_model(self, cfg: TrainConfig) -> JEPAModel:
        obj = self.objective(cfg)
        vit = cfg.model.vit_kwargs()
        return JEPAModel(
            vit,
            predictor_dim=obj.predictor_dim,
            predictor_depth=obj.predictor_depth,
            predictor_heads=obj.predictor_heads or vit["heads"],
            n_masks=len(obj.masks),
            ema=obj.ema,
        )

    def after_step(self, model: JEPAModel, step: int, total_steps: int) -> None:
        start, end = model.ema
        model.update_target(start + (end - start) * min(1.0, (step - 1) / max(1, total_steps)))


RECIPE = JEPARecipe()
