"""Soft-DTW (Cuturi & Blondel, 2017) and its divergence (Blondel, Mensch & Vert, 2021) in torch.

The dynamic programme runs over anti-diagonals: cells with ``i + j = k`` depend only on diagonals ``k - 1`` and
``k - 2``, so each of the ``N + M - 1`` sequential steps is one batched tensor operation over (batch, diagonal).
The padded ``(N + 2) x (M + 2)`` table is stored diagonal-major in one flat buffer, so every neighbour of a diagonal
is a contiguous slice. Following Blondel's reference, costs are divided by γ, the borders are a large finite value
(never ``inf``), and the forward keeps the soft-argmin probabilities ``P`` (3 per cell); the backward is then
``E[i, j] = Σ P · E`` over the three successors: products of probabilities only, no ``exp``, stable for any length.
Memory is ``B · (N + 2) · (M + 2) · 4`` values: linear in the number of cells. Works on any device and dtype
(float64 passes ``torch.autograd.gradcheck``).

Sequences in a batch may have different lengths (``x_lengths``/``y_lengths``): the value of each pair is read at
its own end cell, and padded cells never reach it (the recursion only looks up and left).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

BORDER = 1e10  # finite "infinity" on the table's borders (after division by γ)
SERIAL_BELOW = 1 << 20  # cells per diagonal step (x3 directions) under which the CPU loop runs on one thread
Cost = Literal["sqeuclidean", "cosine"]


@lru_cache(maxsize=32)
def _layout(n: int, m: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per diagonal ``k`` of the padded ``(n+2) x (m+2)`` table: its flat offset and its first row ``i``."""
    offsets, first = [], []
    pos = 0
    for k in range(n + m + 3):
        lo, hi = max(0, k - m - 1), min(n + 1, k)
        offsets.append(pos)
        first.append(lo)
        pos += hi - lo + 1
    return tuple(offsets), tuple(first)


@lru_cache(maxsize=32)
def _cell_index(n: int, m: int) -> Tensor:
    """Flat diagonal-major position of each cell ``(i, j)``, ``1 <= i <= n``, ``1 <= j <= m`` (row-major ``n * m``)."""
    return _position(n, m, torch.arange(1, n + 1).unsqueeze(1), torch.arange(1, m + 1).unsqueeze(0)).reshape(-1)


@lru_cache(maxsize=32)
def _border_index(n: int, m: int) -> Tensor:
    """Flat positions of the border cells (``i`` in ``{0, n+1}`` or ``j`` in ``{0, m+1}``)."""
    i = torch.arange(n + 2).unsqueeze(1).expand(n + 2, m + 2)
    j = torch.arange(m + 2).unsqueeze(0).expand(n + 2, m + 2)
    edge = (i == 0) | (i == n + 1) | (j == 0) | (j == m + 1)
    return _position(n, m, i[edge], j[edge])


@lru_cache(maxsize=32)
def _source_index(n: int, m: int) -> Tensor:
    """For each flat position: its row-major cell ``(i-1) * m + (j-1)`` (0 on borders, which are overwritten)."""
    src = torch.zeros(_layout(n, m)[0][-1] + 1, dtype=torch.long)
    src[_cell_index(n, m)] = torch.arange(n * m)
    return src


def _position(n: int, m: int, i: Tensor, j: Tensor) -> Tensor:
    offsets, first = _layout(n, m)
    k = i + j
    return torch.tensor(offsets, device=i.device)[k] + i - torch.tensor(first, device=i.device)[k]


def _lengths(lengths: Tensor | None, batch: int, full: int, device: torch.device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.shape != (batch,):
        raise ValueError(f"soft-DTW: lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > full).any()):
        raise ValueError(f"soft-DTW: lengths must lie in 1..{full}, got {lengths.tolist()}")
    return lengths


@contextmanager
def _serial_on_cpu(t: Tensor, cells_per_step: int):
    """One intra-op thread for the diagonal loop on CPU when a step's tensors are small: each of its ~10 ops per step
    would otherwise open an OpenMP region, and on a busy machine the threads' waits cost 5-30x the work."""
    if t.device.type != "cpu" or cells_per_step >= SERIAL_BELOW or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _forward_diagonals(r: Tensor, p: Tensor, n: int, m: int) -> None:
    """Fill R (``(cells, B)``, holding the scaled costs) and the soft-argmin probabilities P (``(3, cells, B)``)."""
    offsets, first = _layout(n, m)
    for k in range(2, n + m + 1):
        lo, hi = max(1, k - m), min(n, k - 1)
        length = hi - lo + 1
        o = offsets[k] + lo - first[k]
        up = offsets[k - 1] + (lo - 1) - first[k - 1]  # (i - 1, j)
        left = offsets[k - 1] + lo - first[k - 1]  # (i, j - 1)
        diag = offsets[k - 2] + (lo - 1) - first[k - 2]  # (i - 1, j - 1)
        probs = p[:, o : o + length]
        probs[0], probs[1], probs[2] = r[up : up + length], r[left : left + length], r[diag : diag + length]
        low = probs.amin(0)
        # exp(-80) ~ 1e-35 is still a normal float32; below -88 torch's exp takes a 10-30x slower path
        torch.sub(low, probs, out=probs).clamp_(min=-80.0).exp_()
        s = probs.sum(0)
        probs.div_(s)
        r[o : o + length].add_(low.sub_(s.log_()))  # not `+=`: that adds a self-copy


def _backward_diagonals(e: Tensor, p: Tensor, n: int, m: int) -> None:
    """``E[i, j] += Σ_successors P · E`` from the last diagonal to the first (E holds the seeds)."""
    offsets, first = _layout(n, m)
    for k in range(n + m, 1, -1):
        lo, hi = max(1, k - m), min(n, k - 1)
        length = hi - lo + 1
        o = offsets[k] + lo - first[k]
        down = offsets[k + 1] + (lo + 1) - first[k + 1]  # (i + 1, j), reached by its "up" move
        right = offsets[k + 1] + lo - first[k + 1]  # (i, j + 1), reached by its "left" move
        diag = offsets[k + 2] + (lo + 1) - first[k + 2]  # (i + 1, j + 1), reached by its "diagonal" move
        cell = e[o : o + length]
        cell.addcmul_(e[down : down + length], p[0, down : down + length])
        cell.addcmul_(e[right : right + length], p[1, right : right + length])
        cell.addcmul_(e[diag : diag + length], p[2, diag : diag + length])


class _SoftDTW(torch.autograd.Function):
    """Tables are ``(cells, batch)``: a diagonal's slice is one contiguous block for every pair of the batch."""

    @staticmethod
    def forward(ctx, cost: Tensor, gamma: float, n_len: Tensor, m_len: Tensor) -> Tensor:
        b, n, m = cost.shape
        size = _layout(n, m)[0][-1] + 1
        # R starts as the costs laid out diagonal-major (one gather), scaled by 1/γ, with the borders set; then each
        # diagonal adds its soft-min in place
        border = _border_index(n, m).to(cost.device)
        r = cost.reshape(b, n * m).t().contiguous().index_select(0, _source_index(n, m).to(cost.device))
        r.mul_(1.0 / gamma).index_fill_(0, border, BORDER)
        r[0] = 0.0
        p = cost.new_empty((3, size, b))  # soft-argmin over the (up, left, diagonal) predecessors
        p.index_fill_(1, border, 0.0)
        with _serial_on_cpu(cost, 3 * b * min(n, m)):
            _forward_diagonals(r, p, n, m)
        end = _position(n, m, n_len, m_len)
        value = r[end, torch.arange(b, device=cost.device)] * gamma
        ctx.save_for_backward(p, end)
        ctx.shape = (n, m)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        p, end = ctx.saved_tensors
        n, m = ctx.shape
        b = p.shape[2]
        e = p.new_zeros((p.shape[1], b))
        e[end, torch.arange(b, device=e.device)] = grad  # the seed: each pair's own end cell (E is linear in it)
        with _serial_on_cpu(p, 3 * b * min(n, m)):
            _backward_diagonals(e, p, n, m)
        # (cells, batch) -> a (batch, n, m) view, no transposing copy
        return e.index_select(0, _cell_index(n, m).to(e.device)).t().view(b, n, m), None, None, None


def soft_dtw(
    cost: Tensor,
    gamma: float = 1.0,
    *,
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
) -> Tensor:
    """Soft-DTW value of each cost matrix in ``cost`` (``B x N x M``): ``-γ log Σ_paths exp(-<A, C> / γ)``.

    ``x_lengths``/``y_lengths`` (``B``) give each pair's true lengths when the batch is padded; padded cells are
    ignored. Differentiable in ``cost`` (once).
    """
    if cost.dim() != 3:
        raise ValueError(f"soft-DTW: cost must be B x N x M, got shape {tuple(cost.shape)}")
    if not gamma > 0:
        raise ValueError(f"soft-DTW: gamma must be > 0, got {gamma}")
    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()  # the borders and the log-sum-exp need float32 range
    b, n, m = cost.shape
    n_len = _lengths(x_lengths, b, n, cost.device)
    m_len = _lengths(y_lengths, b, m, cost.device)
    if x_lengths is not None or y_lengths is not None:
        inside = (torch.arange(n, device=cost.device).view(1, n, 1) < n_len.view(b, 1, 1)) & (
            torch.arange(m, device=cost.device).view(1, 1, m) < m_len.view(b, 1, 1)
        )
        cost = cost.masked_fill(~inside, 0.0)  # padding may hold anything (even NaN); it must not reach P
    return _SoftDTW.apply(cost, float(gamma), n_len, m_len)


def pairwise_cost(x: Tensor, y: Tensor, cost: Cost = "sqeuclidean") -> Tensor:
    """``B x N x M`` costs between ``x`` (``B x N x D``) and ``y`` (``B x M x D``).

    ``sqeuclidean``: ``|x - y|²``; ``cosine``: ``1 - cos(x, y)``. Both make ``exp(-C/γ)`` a positive-definite kernel,
    so the divergence is zero only for identical sequences.
    """
    if cost == "sqeuclidean":
        return (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)
    if cost == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(1, 2)
    raise ValueError(f"soft-DTW: unknown cost {cost!r} (sqeuclidean or cosine)")


def soft_dtw_divergence(
    x: Tensor,
    y: Tensor,
    gamma: float = 1.0,
    *,
    cost: Cost = "sqeuclidean",
    x_lengths: Tensor | None = None,
    y_lengths: Tensor | None = None,
) -> Tensor:
    """``sdtw(x, y) - ½ sdtw(x, x) - ½ sdtw(y, y)`` per pair, from three calls, so ``N`` and ``M`` may differ.

    ``x``: ``B x N x D``, ``y``: ``B x M x D``. Non-negative, and zero when ``x`` equals ``y``.
    """
    xy = soft_dtw(pairwise_cost(x, y, cost), gamma, x_lengths=x_lengths, y_lengths=y_lengths)
    xx = soft_dtw(pairwise_cost(x, x, cost), gamma, x_lengths=x_lengths, y_lengths=x_lengths)
    yy = soft_dtw(pairwise_cost(y, y, cost), gamma, x_lengths=y_lengths, y_lengths=y_lengths)
    return xy - 0.5 * (xx + yy)
