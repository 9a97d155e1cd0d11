"""HierSKP: hierarchical video-text contrastive pretraining on an OpenSurgery-style hierarchy build.

Three levels in every batch (``trainers.hierarchy_data``, mixed by ``objective.levels``), one visual encoder (the
shared :class:`~trainers.vit.VideoViT`), one text encoder (MiniLM, ``trainers.text``, frozen or fine-tuned) and a
projection head per modality into a shared ``embed_dim`` space:

- **frame** ↔ caption: a frame is one tubelet (the image repeated ``tubelet`` times) at the first time slot's
  positions; **operation** clip ↔ operation text: the clip through the ViT, mean-pooled; **video** ↔ description:
  the video's frames encoded one by one (its *clip features*), their mean.
- Symmetric InfoNCE per level with a learned temperature per level (CLIP's log-scale, capped at 100). Captions that
  repeat within a batch are not counted as negatives of each other.
- Hard negatives (``hard_negatives: true``): each operation's text pool gets an operation text of the same surgery
  type from another video (the shards' ``same_surgery_type_videos``), as an extra column of the clip → text softmax.
- DTW alignment: the soft-DTW divergence (``trainers.softdtw``, cosine cost, ``dtw_gamma``) between a video's
  ordered operation-text embeddings and its frame features (``loss_dtw``), and a hinge that the true order aligns
  better than the same operations reversed or shuffled by ``order_margin`` (``loss_order``).

``loss = w_frame·loss_frame + w_operation·loss_operation + w_video·loss_video + w_dtw·loss_dtw + w_order·loss_order``;
every term, the temperatures and the mean divergences land in ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from trainers.config import TrainConfig, parse_section
from trainers.hierarchy_data import LEVELS, HierarchyStream
from trainers.recipe import RecipeModel, VideoRecipe
from trainers.softdtw import soft_dtw_divergence
from trainers.text import TEXT_DIM, ProjectionHead, TextEncoder
from trainers.vit import VideoViT


class HierSKPObjective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: dict[str, float] = Field(default_factory=lambda: {"video": 1.0, "operation": 2.0, "frame": 1.0})
    video_frames: int = Field(8, gt=0)  # frames per video sample (clip features for the DTW loss)
    embed_dim: int = Field(256, gt=0)
    proj_hidden: int = Field(0, ge=0)  # 0: linear projection heads
    text_frozen: bool = True
    text_max_length: int = Field(128, gt=0)
    temperature: float = Field(0.07, gt=0)  # initial; learned per level
    max_logit_scale: float = Field(100.0, gt=0)
    hard_negatives: bool = True
    dtw_gamma: float = Field(0.1, gt=0)
    order_margin: float = Field(0.1, ge=0)
    w_frame: float = Field(1.0, ge=0)
    w_operation: float = Field(1.0, ge=0)
    w_video: float = Field(1.0, ge=0)
    w_dtw: float = Field(0.1, ge=0)
    w_order: float = Field(0.1, ge=0)

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(LEVELS))
        if unknown or any(x < 0 for x in v.values()):
            raise ValueError(f"levels: keys among {', '.join(LEVELS)} with ratios >= 0 (got {v})")
        return v


def info_nce(
    vis: torch.Tensor,
    txt: torch.Tensor,
    scale: torch.Tensor,
    texts: list[str],
    extra: torch.Tensor | None = None,
    extra_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over matching rows of ``vis`` and ``txt`` (unit vectors). ``extra`` (one per row, where
    ``extra_valid``) are hard-negative texts added to each visual row's candidates; in-batch pairs with the same
    text are not negatives of each other."""
    n = vis.shape[0]
    logits = scale * vis @ txt.t()
    same = torch.tensor([[a == b for b in texts] for a in texts], device=vis.device)
    duplicate = same & ~torch.eye(n, dtype=torch.bool, device=vis.device)
    logits = logits.masked_fill(duplicate, float("-inf"))
    target = torch.arange(n, device=vis.device)
    v2t = logits
    if extra is not None and extra_valid is not None and bool(extra_valid.any()):
        hard = (scale * vis @ extra.t()).masked_fill(~extra_valid.view(1, -1), float("-inf"))
        own = torch.eye(n, dtype=torch.bool, device=vis.device)  # row i sees only its own hard negative
        v2t = torch.cat([logits, hard.masked_fill(~own, float("-inf"))], dim=1)
    return 0.5 * (F.cross_entropy(v2t, target) + F.cross_entropy(logits.t(), target))


def pad_sequences(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, max_len, D)`` zero-padded and the lengths ``(B,)``."""
    lengths = torch.tensor([len(s) for s in seqs], device=seqs[0].device)
    return nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


class HierSKPModel(RecipeModel):
    """ViT + MiniLM + two projection heads + a learned temperature per level; ``forward(batch) -> (loss, metrics)``."""

    def __init__(self, vit: dict[str, Any], obj: HierSKPObjective) -> None:
        super().__init__()
        self.obj = obj
        self.encoder = VideoViT(**vit)
        self.text = TextEncoder(frozen=obj.text_frozen, max_length=obj.text_max_length)
        self.vision_head = ProjectionHead(self.encoder.dim, obj.embed_dim, obj.proj_hidden)
        self.text_head = ProjectionHead(TEXT_DIM, obj.embed_dim, obj.proj_hidden)
        self.logit_scale = nn.Parameter(torch.full((len(LEVELS),), math.log(1.0 / obj.temperature)))

    @property
    def eval_encoder(self) -> VideoViT:
        return self.encoder

    def scale(self, level: str) -> torch.Tensor:
        return self.logit_scale[LEVELS.index(level)].exp().clamp(max=self.obj.max_logit_scale)

    def encode_clips(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, 3, T, S, S)`` -> projected ``(B, E)``."""
        return self.vision_head(self.encoder(x).mean(dim=1))

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, 1, S, S)`` -> projected ``(N, E)``: one tubelet at the first time slot's positions."""
        enc = self.encoder
        x = x.expand(-1, -1, enc.tubelet, -1, -1)
        h = enc.patch_embed(x).flatten(2).transpose(1, 2)
        h = h + enc.pos_embed[: h.shape[1]].to(h.dtype)
        for block in enc.blocks:
            h = block(h)
        return self.vision_head(enc.norm(h).mean(dim=1))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.text_head(self.text(texts))

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.obj
        zero = self.logit_scale.sum() * 0.0
        terms = {k: zero for k in ("loss_frame", "loss_operation", "loss_video", "loss_dtw", "loss_order")}
        # the same keys every step (ranks all-reduce them together); zero where a batch has no such level
        metrics: dict[str, torch.Tensor] = {"dtw_true_order": zero.detach(), "dtw_wrong_order": zero.detach()}

        if batch["frame_text"]:
            vis = self.encode_frames(batch["frame_image"])
            terms["loss_frame"] = info_nce(vis, self.encode_texts(batch["frame_text"]), self.scale("frame"),
                                           batch["frame_text"])  # fmt: skip

        if batch["operation_text"]:
            vis = self.encode_clips(batch["operation_clip"])
            txt = self.encode_texts(batch["operation_text"])
            extra = valid = None
            if o.hard_negatives:
                extra, valid = self.encode_texts(batch["operation_neg_text"]), batch["operation_neg_valid"]
            scale = self.scale("operation")
            terms["loss_operation"] = info_nce(vis, txt, scale, batch["operation_text"], extra, valid)

        if batch["video_text"]:
            frames = batch["video_frames"]  # (B, 3, F, S, S): each frame on its own
            b, _, f, s, _ = frames.shape
            per_frame = self.encode_frames(frames.transpose(1, 2).reshape(b * f, 3, 1, s, s)).view(b, f, -1)
            video = F.normalize(per_frame.mean(dim=1), dim=-1)
            terms["loss_video"] = info_nce(video, self.encode_texts(batch["video_text"]), self.scale("video"),
                                           batch["video_text"])  # fmt: skip
            ops, lengths = pad_sequences([self.encode_texts(t) for t in batch["video_ops"]])
            frame_len = torch.full((b,), f, device=ops.device)
            pos = soft_dtw_divergence(per_frame, ops, o.dtw_gamma, cost="cosine", x_lengths=frame_len,
                                      y_lengths=lengths)  # fmt: skip
            terms["loss_dtw"] = pos.mean()
            metrics["dtw_true_order"] = pos.detach().mean()
            valid = batch["video_neg_valid"]
            if bool(valid.any()):
                neg_ops, neg_len = pad_sequences([self.encode_texts(t) for t in batch["video_ops_neg"]])
                neg = soft_dtw_divergence(per_frame, neg_ops, o.dtw_gamma, cost="cosine", x_lengths=frame_len,
                                          y_lengths=neg_len)  # fmt: skip
                terms["loss_order"] = F.relu(o.order_margin + pos - neg)[valid].mean()
                metrics["dtw_wrong_order"] = neg.detach()[valid].mean()

        loss = (
            o.w_frame * terms["loss_frame"]
            + o.w_operation * terms["loss_operation"]
            + o.w_video * terms["loss_video"]
            + o.w_dtw * terms["loss_dtw"]
            + o.w_order * terms["loss_order"]
        )
        metrics = {k: v.detach() for k, v in terms.items()} | metrics
        for level in LEVELS:
            metrics[f"temperature_{level}"] = 1.0 / self.scale(level).detach()
        return loss, metrics


class HierSKPRecipe(VideoRecipe):
    name = "hierskp"

    def objective(self, cfg: TrainConfig) -> HierSKPObjective:
        return parse_section(HierSKPObjective, cfg.objective, f"recipe {self.name}")

    def build_model(self, cfg: TrainConfig) -> HierSKPModel:
        return HierSKPModel(cfg.model.vit_kwargs(), self.objective(cfg))

    def build_data(self, cfg: TrainConfig, build_dir: Path, *, rank: int = 0, world_size: int = 1) -> HierarchyStream:
        obj = self.objective(cfg)
        return HierarchyStream(
            build_dir,
            cfg.data,
            ratio=obj.levels,
            num_frames=cfg.model.num_frames,
            image_size=cfg.model.image_size,
            video_frames=obj.video_frames,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
        )


RECIPE = HierSKPRecipe()
