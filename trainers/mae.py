"""SurgRec-MAE: VideoMAE pretraining (tube masking 0.9, a 4-block decoder, MSE on per-patch normalised pixels).

Recipe facts kept from VideoMAE's code (``masking_generator.py``, ``modeling_pretrain.py``,
``engine_for_pretraining.py``): one random spatial mask per clip repeated over every time slot (``int(0.9 * 196) =
176`` of 196 masked per slot, 160 visible tokens of 1568); the encoder sees visible tokens only; a bias-free linear
maps them to the decoder width (S 192/3 heads, B 384/6, L 512/8), mask tokens are added, both get the decoder's fixed
positions, 4 decoder blocks, a layer norm and a linear head to ``3 * 2 * 16 * 16`` values per token predict the
masked tokens only. Targets: the clip back in [0, 1], each tubelet normalised per channel over its 2x16x16 pixels
(mean, unbiased std + 1e-6), flattened in (pixel, channel) order. Optimiser in ``configs/mae-vitb.yaml``: AdamW
(0.9, 0.95), weight decay 0.05, lr 1.5e-4 x batch / 256, cosine to 1e-5 after warm-up.

The mask is drawn in the data path (:class:`TubeMasking`, seeded per batch) and arrives as ``visible``/``masked``
token indices in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from trainers.config import TrainConfig, parse_section
from trainers.recipe import RecipeModel, VideoRecipe
from trainers.vit import Block, VideoViT, gather_tokens, init_weights, sincos_3d

DECODER_SIZES = {"tiny": (32, 2), "S": (192, 3), "B": (384, 6), "L": (512, 8)}  # width, heads


class MAEObjective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_ratio: float = Field(0.9, gt=0, lt=1)
    decoder_depth: int = Field(4, gt=0)
    decoder_dim: int | None = None  # default by encoder size (DECODER_SIZES)
    decoder_heads: int | None = None
    norm_pix_loss: bool = True


@dataclass(frozen=True)
class TubeMasking:
    """VideoMAE's tube mask for a token grid ``(t, h, w)``: ``int(ratio * h * w)`` spatial positions masked per clip,
    the same ones in every time slot. Returns sorted ``visible`` and ``masked`` token indices, ``(B, K)`` each."""

    grid: tuple[int, int, int]
    ratio: float

    def __call__(self, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        t, h, w = self.grid
        n_spatial = h * w
        n_masked = int(self.ratio * n_spatial)
        slots = torch.arange(t).view(t, 1) * n_spatial
        visible, masked = [], []
        for _ in range(batch["video"].shape[0]):
            perm = torch.randperm(n_spatial, generator=gen)
            masked.append((slots + perm[:n_masked].sort().values).flatten())
            visible.append((slots + perm[n_masked:].sort().values).flatten())
        return {"visible": torch.stack(visible), "masked": torch.stack(masked)}


def patch_targets(x: torch.Tensor, patch: int, tubelet: int, norm: bool = True) -> torch.Tensor:
    """Pixel targets per token, ``(B, N, tubelet * patch * patch * 3)`` in (pixel, channel) order: each token's
    pixels normalised per channel (mean, unbiased std + 1e-6) when ``norm``. ``x`` is in [0, 1]."""
    b, c, tt, hh, ww = x.shape
    x = x.view(b, c, tt // tubelet, tubelet, hh // patch, patch, ww // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)
    if norm:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


class MAEModel(RecipeModel):
    """Encoder (:class:`~trainers.vit.VideoViT` on visible tokens) + decoder; ``forward(batch) -> (loss, {})``."""

    def __init__(
        self,
        vit: dict[str, Any],
        *,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = VideoViT(**vit)
        self.norm_pix_loss = norm_pix_loss
        enc = self.encoder
        self.encoder_to_decoder = nn.Linear(enc.dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos", sincos_3d(decoder_dim, enc.grid), persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.head = nn.Linear(decoder_dim, enc.tubelet * enc.patch * enc.patch * 3)
        for m in (self.encoder_to_decoder, self.decoder_blocks, self.decoder_norm, self.head):
            m.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

    @property
    def eval_encoder(self) -> VideoViT:
        return self.encoder

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, visible, masked = batch["video"], batch["visible"], batch["masked"]
        h = self.encoder_to_decoder(self.encoder(x, keep=visible))
        pos = self.decoder_pos.to(h.dtype)
        d = torch.cat([h + pos[visible], self.mask_token.to(h.dtype) + pos[masked]], dim=1)
        for block in self.decoder_blocks:
            d = block(d)
        pred = self.head(self.decoder_norm(d[:, -masked.shape[1] :]))
        with torch.no_grad():
            pixels = (x.float() * self.std + self.mean).clamp_(0, 1)
            target = patch_targets(pixels, self.encoder.patch, self.encoder.tubelet, self.norm_pix_loss)
            target = gather_tokens(target, masked)
        loss = F.mse_loss(pred.float(), target)
        return loss, {"masked_tokens": torch.tensor(float(masked.shape[1]))}


class MAERecipe(VideoRecipe):
    name = "mae"

    def objective(self, cfg: TrainConfig) -> MAEObjective:
        return parse_section(MAEObjective, cfg.objective, f"recipe {self.name}")

    def collate(self, cfg: TrainConfig) -> TubeMasking:
        return TubeMasking(cfg.model.token_grid(), self.objective(cfg).mask_ratio)

    def build_model(self, cfg: TrainConfig) -> MAEModel:
        obj = self.objective(cfg)
        width, heads = DECODER_SIZES[cfg.model.size]
        return MAEModel(
            cfg.model.vit_kwargs(),
            decoder_dim=obj.decoder_dim or width,
            decoder_depth=obj.decoder_depth,
            decoder_heads=obj.decoder_heads or heads,
            mean=cfg.data.mean,
            std=cfg.data.std,
            norm_pix_loss=obj.norm_pix_loss,
        )


RECIPE = MAERecipe()
