"""Soft-DTW against a naive double-loop reference: values, gradients, float64 gradcheck, lengths, γ, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.softdtw import pairwise_cost, soft_dtw, soft_dtw_divergence

GAMMAS = (0.01, 0.1, 1.0, 10.0)


def naive_value(cost: list[list[float]], gamma: float) -> float:
    """Cuturi & Blondel's recursion as written: a Python double loop with infinite borders."""
    n, m = len(cost), len(cost[0])
    r = [[math.inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = (r[i - 1][j], r[i][j - 1], r[i - 1][j - 1])
            low = min(prev)
            r[i][j] = cost[i - 1][j - 1] + low - gamma * math.log(sum(math.exp(-(v - low) / gamma) for v in prev))
    return r[n][m]


def naive_torch(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """The same recursion on tensors (autograd through the loop): the reference gradient."""
    n, m = cost.shape
    inf = torch.tensor(math.inf, dtype=cost.dtype)
    r = [[inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = torch.zeros((), dtype=cost.dtype)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = torch.stack((r[i - 1][j], r[i][j - 1], r[i - 1][j - 1]))
            r[i][j] = cost[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return r[n][m]


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("shape", [(5, 7), (7, 3), (1, 4), (6, 6)])
def test_values_match_the_double_loop(shape, gamma):
    torch.manual_seed(0)
    cost = torch.rand(3, *shape, dtype=torch.float64) * 2
    got = soft_dtw(cost, gamma)
    want = torch.tensor([naive_value(c.tolist(), gamma) for c in cost], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_gradient_matches_autograd_through_the_double_loop(gamma):
    torch.manual_seed(1)
    cost = torch.rand(2, 6, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(soft_dtw(cost, gamma).sum(), cost)
    for b in range(2):
        (want,) = torch.autograd.grad(naive_torch(cost[b], gamma), cost)
        torch.testing.assert_close(grad[b], want[b], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_float64_gradcheck(gamma):
    torch.manual_seed(2)
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(pairwise_cost(a, b), gamma), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw_divergence(a, b, gamma, cost="cosine"), (x, y))


def test_padded_batch_equals_separate_calls():
    torch.manual_seed(3)
    cost = torch.rand(3, 8, 6, dtype=torch.float64, requires_grad=True)
    n_len, m_len = torch.tensor([8, 3, 5]), torch.tensor([2, 6, 4])
    padded = cost.detach().clone()
    padded[1, 3:] = float("nan")  # whatever the padding holds must not leak in
    padded.requires_grad_(True)
    got = soft_dtw(padded, 0.5, x_lengths=n_len, y_lengths=m_len)
    (grad,) = torch.autograd.grad(got.sum(), padded)
    for b in range(3):
        n, m = int(n_len[b]), int(m_len[b])
        one = cost[b : b + 1, :n, :m]
        want = soft_dtw(one, 0.5)
        torch.testing.assert_close(got[b], want[0])
        (g,) = torch.autograd.grad(want.sum(), one)
        torch.testing.assert_close(grad[b, :n, :m], g[0])
        outside = torch.ones(8, 6, dtype=torch.bool)
        outside[:n, :m] = False
        assert bool((grad[b][outside] == 0).all())  # no gradient into padding


@pytest.mark.parametrize("cost", ["sqeuclidean", "cosine"])
def test_divergence_zero_for_identical_positive_otherwise(cost):
    torch.manual_seed(4)
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    same = soft_dtw_divergence(x, x.clone(), 1.0, cost=cost)
    torch.testing.assert_close(same, torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    y = torch.randn(4, 6, 5, dtype=torch.float64)  # another length
    assert bool((soft_dtw_divergence(x, y, 1.0, cost=cost) > 1e-6).all())
    # a time-warped copy is closer than a reversed one
    warped = x.repeat_interleave(2, dim=1)
    assert bool(
        (soft_dtw_divergence(x, warped, 0.1, cost=cost) < soft_dtw_divergence(x, x.flip(1), 0.1, cost=cost)).all()
    )


def test_long_sequences_in_float32_stay_finite_and_match_float64():
    torch.manual_seed(5)
    x, y = torch.randn(2, 600, 4), torch.randn(2, 530, 4)
    for gamma in (0.01, 10.0):
        c32 = pairwise_cost(x, y).requires_grad_(True)
        c64 = pairwise_cost(x.double(), y.double()).requires_grad_(True)
        v32, v64 = soft_dtw(c32, gamma), soft_dtw(c64, gamma)
        (g32,), (g64,) = torch.autograd.grad(v32.sum(), c32), torch.autograd.grad(v64.sum(), c64)
        assert torch.isfinite(v32).all() and torch.isfinite(g32).all()
        torch.testing.assert_close(v32.double(), v64, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(g32.double(), g64, rtol=0, atol=3e-3)
        # each gradient is an expected alignment: the path runs from (1, 1) to (N, M)
        assert float(g64[0, 0, 0]) == pytest.approx(1.0) and float(g64[0, -1, -1]) == pytest.approx(1.0)


def test_bad_arguments_name_the_problem():
    cost = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="lengths must lie in 1..3"):
        soft_dtw(cost, x_lengths=torch.tensor([4, 2]))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        soft_dtw(cost, 0.0)
    with pytest.raises(ValueError, match="B x N x M"):
        soft_dtw(cost[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    torch.manual_seed(6)
    cost = torch.rand(4, 520, 512, dtype=torch.float64)
    got = soft_dtw(cost.cuda().requires_grad_(True), 0.1)
    torch.testing.assert_close(got.cpu(), soft_dtw(cost, 0.1))
