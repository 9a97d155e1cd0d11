"""The video ViT every recipe shares: tubelet patches, fixed 3D sin-cos positions, pre-norm blocks on SDPA.

A clip ``(B, 3, T, H, W)`` becomes ``T/tubelet * H/patch * W/patch`` tokens in (time, row, column) order; with the
defaults (16 frames, tubelet 2, 224 px, patch 16) that is 8 x 14 x 14 = 1568 tokens. Positions are a fixed 3D sin-cos
table (no cls token), as in V-JEPA; VideoMAE's 1D sinusoid over the flattened tokens is the same idea without the
grid. Layer norms use eps 1e-6, the qkv projection has a bias, the encoder ends with a layer norm.

``VideoViT.forward(x, keep)`` runs only the tokens listed in ``keep`` (``(B, K)`` indices into the token grid, the
same count per sample): MAE's visible tokens, JEPA's context. ``embed(x)`` mean-pools all tokens to ``(B, D)``.

>>> vit = VideoViT(**VIT_SIZES["S"])
>>> vit(torch.zeros(1, 3, 16, 224, 224)).shape
torch.Size([1, 1568, 384])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# width, depth, heads; "tiny" is for CPU tests only.
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 64, "depth": 2, "heads": 2},
    "S": {"dim": 384, "depth": 12, "heads": 6},
    "B": {"dim": 768, "depth": 12, "heads": 12},
    "L": {"dim": 1024, "depth": 24, "heads": 16},
}


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(len(pos), dim)``: sin on the first half, cos on the second, frequencies 1 / 10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(t*h*w, dim)`` positions for a (t, h, w) token grid: a quarter of the width for time, the rest split over
    rows and columns (V-JEPA's ``get_3d_sincos_pos_embed`` with ``uniform_power=False``)."""
    t, h, w = grid
    d_t = dim // 4 // 2 * 2
    d_s = (dim - d_t) // 2 // 2 * 2
    d_t = dim - 2 * d_s
    gt, gh, gw = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sincos_1d(d_t, gt.flatten()), sincos_1d(d_s, gh.flatten()), sincos_1d(d_s, gw.flatten())], 1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias, unit layer norms (VideoMAE's and V-JEPA's ``_init_weights``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b]]`` for ``x`` (B, N, D) and ``idx`` (B, K): (B, K, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class VideoViT(nn.Module):
    """A video ViT encoder (see the module docstring). ``grid`` is the token grid (t, h, w)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        num_frames: int = 16,
        image_size: int = 224,
        patch: int = 16,
        tubelet: int = 2,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if num_frames % tubelet or image_size % patch:
            raise ValueError(
                f"num_frames {num_frames} must be a multiple of tubelet {tubelet} and "
                f"image_size {image_size} of patch {patch}"
            )
        self.dim, self.patch, self.tubelet = dim, patch, tubelet
        self.num_frames, self.image_size = num_frames, image_size
        self.grid = (num_frames // tubelet, image_size // patch, image_size // patch)
        self.num_tokens = math.prod(self.grid)
        self.patch_embed = nn.Conv3d(3, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.register_buffer("pos_embed", sincos_3d(dim, self.grid), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_weights)
        w = self.patch_embed.weight.data  # as a linear layer over the flattened tubelet
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus positions, before any block: ``(B, N, D)``."""
        if tuple(x.shape[2:]) != (self.num_frames, self.image_size, self.image_size):
            raise ValueError(
                f"expected clips (B, 3, {self.num_frames}, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the tokens ``keep`` (``(B, K)`` indices; all when None) of clips ``x``: ``(B, K, D)``."""
        h = self.tokens(x)
        if keep is not None:
            h = gather_tokens(h, keep)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of all output tokens: ``(B, D)``, the frozen feature of ``embed --encoder`` and evaluation."""
        return self(x).mean(dim=1)


def build_vit(size: str = "B", **overrides: int) -> VideoViT:
    """A :class:`VideoViT` of a named size (``VIT_SIZES``), with ``num_frames``/``image_size``/... overrides."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}: use one of {', '.join(VIT_SIZES)}")
    return VideoViT(**{**VIT_SIZES[size], **overrides})
