"""Near-duplicate search on hash sequences and the dedup stage on Arrow tables (synthetic hashes, no video needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from builders.stages import dedup as dd
from corpus.manifest import DedupSpec


def _flip(codes: np.ndarray, rng: np.random.Generator, max_bits: int) -> np.ndarray:
    out = codes.copy()
    for i in range(len(out)):
        for bit in rng.choice(64, rng.integers(0, max_bits + 1), replace=False):
            out[i] ^= np.uint64(1) << np.uint64(int(bit))
    return out


def test_planted_trimmed_noisy_copies_are_found_among_many_videos():
    rng = np.random.default_rng(7)
    seqs = [rng.integers(0, 2**63, size=600, dtype=np.uint64) * 2 for _ in range(400)]
    planted = {}
    for i in range(12):  # trimmed by `cut` hashes at the start, every hash a few bits off
        cut = int(rng.integers(0, 200))
        seqs.append(_flip(seqs[i * 30][cut:], rng, 5))
        planted[(i * 30, len(seqs) - 1)] = cut
    sigs = dd.Signatures.from_sequences(seqs)
    assert len(sigs.codes) > dd.EXACT_INDEX_LIMIT  # the multi-index hashing path
    found = {}
    for (a, b), offsets in dd.candidate_pairs(sigs, radius=12).items():
        m = dd.best_alignment(sigs.of(a), sigs.of(b), 0.6, offsets[:3])
        if m is not None and m.distance <= 10:
            found[(a, b)] = m.offset
    assert found == planted  # every copy at its exact offset, and no unrelated pair


def test_uninformative_hashes_do_not_make_everything_a_candidate():
    rng = np.random.default_rng(1)
    black = np.zeros(20, dtype=np.uint64)  # every video opens on black frames
    seqs = [np.concatenate([black, rng.integers(0, 2**63, size=80, dtype=np.uint64)]) for _ in range(100)]
    assert dd.candidate_pairs(dd.Signatures.from_sequences(seqs), radius=12) == {}


def test_offsets_come_most_voted_first():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    b = np.concatenate([a[5:30], a[:3]])  # 25 hashes at offset 5, 3 at offset -25
    pairs = dd.candidate_pairs(dd.Signatures.from_sequences([a, b]), radius=1)  # distances below 1
    assert list(pairs) == [(0, 1)]
    assert pairs[(0, 1)][0] == 5 and -25 in pairs[(0, 1)].tolist()


def _tables(hashes: list[np.ndarray], video_of: list[int], n_videos: int, clip_s: float = 4.0):
    """A clips table (one clip per entry of ``hashes``, in order, per video) and its videos table."""
    k = [sum(v == video_of[i] for v in video_of[:i]) for i in range(len(video_of))]
    clips = pa.table(
        {
            "clip_id": [f"v{v:03d}/{j:04d}" for v, j in zip(video_of, k, strict=True)],
            "video_id": [f"v{v:03d}" for v in video_of],
            "start_s": [j * clip_s for j in k],
            "end_s": [j * clip_s + clip_s for j in k],
            "sha256": [f"clip{i}" for i in range(len(hashes))],
            "phash": pa.array([h.tolist() for h in hashes], pa.list_(pa.uint64())),
        }
    )
    counts = np.bincount(video_of, minlength=n_videos)
    videos = pa.table(
        {
            "video_id": [f"v{v:03d}" for v in range(n_videos)],
            "sha256": [f"video{v}" for v in range(n_videos)],
            "n_frames": (counts * 100).tolist(),
            "fps": [25.0] * n_videos,
        }
    )
    return videos, clips


def _random_corpus(rng: np.random.Generator, n_videos: int, per_video: int):
    video_of = [v for v in range(n_videos) for _ in range(per_video)]
    hashes = [rng.integers(0, 2**63, size=4, dtype=np.uint64) * 2 for _ in video_of]
    return hashes, video_of


def _clip_clusters(result: dd.DedupResult) -> set[frozenset[str]]:
    clusters: dict[str, set[str]] = {}
    for r in result.rows:
        if r["level"] == "clip":
            clusters.setdefault(r["cluster_id"], set()).add(r["member_id"])
    return {frozenset(m) for m in clusters.values()}


def test_clip_copies_within_the_band_guarantee_are_all_found():
    """Each copy differs from its source in one bit of every band but one: the pigeonhole worst case."""
    rng = np.random.default_rng(11)
    hashes, video_of = _random_corpus(rng, 30, 30)
    bands = dd.band_layout(len(hashes))
    planted = set()
    sources = rng.choice(len(hashes), 40, replace=False)
    for src, dst in zip(sources[:20], sources[20:], strict=True):
        if video_of[src] == video_of[dst]:
            continue
        copy = hashes[src].copy()
        spared = int(rng.integers(0, 4 * len(bands)))  # the one band left intact
        for n, (shift, width) in enumerate((s, w) for _ in range(4) for s, w in bands):
            if n != spared:
                copy[n // len(bands)] ^= np.uint64(1) << np.uint64(shift + int(rng.integers(0, width)))
        hashes[dst] = copy
        planted.add(frozenset({f"v{video_of[src]:03d}/{src % 30:04d}", f"v{video_of[dst]:03d}/{dst % 30:04d}"}))
    assert len(bands) == 8 and len(planted) >= 15  # 8 bands: copies up to 31 bits off in all (mean 7.75)
    result = dd.dedup(*_tables(hashes, video_of, 30), DedupSpec())
    assert _clip_clusters(result) == planted
    assert result.video_dup == {}


def test_video_copies_exact_copies_and_their_clips():
    rng = np.random.default_rng(5)
    hashes, video_of = _random_corpus(rng, 12, 20)
    hashes += [_flip(h, rng, 3) for h in hashes[20 * 3 + 5 : 20 * 4]]  # v012: video 3 from its clip 5, re-encoded
    video_of += [12] * 15
    videos, clips = _tables(hashes, video_of, 13)
    exact = videos.slice(7, 1).set_column(0, "video_id", pa.array(["v012b"]))  # v007's bytes again, no clips
    videos = pa.concat_tables([videos, exact])
    result = dd.dedup(videos, clips, DedupSpec())
    assert result.video_dup == {"v012": ("v003", "near"), "v012b": ("v007", "exact")}
    (row,) = [r for r in result.rows if r["member_id"] == "v012"]
    assert row["offset_s"] == 20.0 and row["distance"] <= 3
    assert result.clip_dup == {f"v012/{j:04d}": (f"v003/{j + 5:04d}", "video-near") for j in range(15)}


def test_input_order_and_signed_hashes_do_not_change_the_result():
    rng = np.random.default_rng(2)
    hashes, video_of = _random_corpus(rng, 10, 12)
    hashes[30] = _flip(hashes[100], rng, 2) | np.uint64(1 << 63)  # a near copy with the top bit set
    hashes[100] = hashes[100] | np.uint64(1 << 63)
    videos, clips = _tables(hashes, video_of, 10)
    expected = dd.dedup(videos, clips, DedupSpec())
    assert _clip_clusters(expected) == {frozenset({"v002/0006", "v008/0004"})}
    signed = clips.set_column(
        5, "phash", pa.array([h.view(np.int64).tolist() for h in hashes], pa.list_(pa.int64()))
    )  # the bit pattern as int64
    shuffled = signed.take(rng.permutation(len(signed)))
    got = dd.dedup(videos.take(rng.permutation(len(videos))), shuffled, DedupSpec())
    assert (got.video_dup, got.clip_dup, got.rows) == (expected.video_dup, expected.clip_dup, expected.rows)


def test_missing_columns_are_named():
    videos, clips = _tables([np.zeros(4, np.uint64)], [0], 1)
    with pytest.raises(ValueError, match="clips table lacks column.*phash"):
        dd.dedup(videos, clips.drop_columns(["phash"]), DedupSpec())
