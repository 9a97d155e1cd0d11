"""Near-duplicate search on hash sequences at a scale where the inverted faiss index is used (no video needed)."""

from __future__ import annotations

import numpy as np

from builders.stages import dedup as dd


def _flip(codes: np.ndarray, rng: np.random.Generator, max_bits: int) -> np.ndarray:
    out = codes.copy()
    for i in range(len(out)):
        for bit in rng.choice(64, rng.integers(0, max_bits + 1), replace=False):
            out[i] ^= np.uint64(1) << np.uint64(int(bit))
    return out


def test_planted_trimmed_noisy_copies_are_found_among_many_videos():
    rng = np.random.default_rng(7)
    sigs = {f"v{i:04d}": rng.integers(0, 2**63, size=600, dtype=np.uint64) * 2 for i in range(400)}
    planted = {}
    for i in range(12):  # trimmed by `cut` hashes at the start, every hash a few bits off
        src = f"v{i * 30:04d}"
        cut = int(rng.integers(0, 200))
        sigs[f"copy{i:02d}"] = _flip(sigs[src][cut:], rng, 5)
        planted[(src, f"copy{i:02d}")] = cut
    assert sum(len(v) for v in sigs.values()) > dd.EXACT_INDEX_LIMIT  # the IVF path
    pairs = dd.candidate_pairs(sigs, radius=12)
    found = {}
    for (a, b), offsets in pairs.items():
        m = dd.best_alignment(sigs[a], sigs[b], 0.6, [o for o, _ in offsets.most_common(3)])
        if m is not None and m.distance <= 10:  # keys sort "copy.." first: offset of the original in the copy
            found[(b, a)] = -m.offset
    assert found == planted  # every copy at its exact offset, and no unrelated pair


def test_uninformative_hashes_do_not_make_everything_a_candidate():
    rng = np.random.default_rng(1)
    black = np.zeros(20, dtype=np.uint64)  # every video opens on black frames
    sigs = {f"v{i}": np.concatenate([black, rng.integers(0, 2**63, size=80, dtype=np.uint64)]) for i in range(100)}
    assert dd.candidate_pairs(sigs, radius=12) == {}
