"""dedup: exact (sha256) and near-duplicate clusters, at video level and at clip level. Nothing is deleted.

Signatures come from the clip stage: 64-bit perceptual hashes of small grey frames sampled at fixed positions of
the resampled timeline (4 per clip). A video's signature is its hash sequence in time order. The stage reads the
``videos`` and ``clips`` tables as Arrow columns and works on numpy arrays: every hash of the corpus is one entry
of flat ``(codes, owner, position)`` arrays (:class:`Signatures`); only duplicates become Python objects.

- Video level: exact duplicates share a sha256; near duplicates (re-encoded, resized, brightness/contrast changed,
  trimmed) have a time offset at which the mean Hamming distance of the overlapping hashes is at most
  ``video_threshold`` over at least ``min_match_fraction`` of the shorter sequence. Candidate pairs, and the offsets
  to try, come from a faiss binary-index range search of sampled hashes against all hashes, never from all pairs
  (exact up to 200k hashes; multi-index hashing above, which finds every hash within 5 bits).
- Clip level: clips of a duplicate video point to the representative's clip nearest in time; among the other
  clips, exact (same clip sha256) and near duplicates across different videos: a mean Hamming distance of the
  aligned hashes (i-th with i-th) of at most ``clip_threshold``. Candidates are clips that share one band of an
  aligned hash exactly (multi-index hashing, see :func:`near_clip_pairs`): with ``k`` bands per hash, every pair
  whose aligned hashes differ in fewer than ``k`` bits per hash in total is found (pigeonhole), ``k`` = 8 up to
  1,024 clips, 4 at 100k, 3 at 3M: bands stay wide enough that chance collisions remain few.

A cluster's representative is its longest member (ties: smallest id); the others get ``dup_of`` and ``dup_kind``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.manifest import DedupSpec
from corpus.unionfind import UnionFind

log = logging.getLogger(__name__)

MAX_HITS = 64  # a query hash near this many other items (a black frame, a test card) says nothing: skip it
QUERIES_PER_ITEM = 64
EXACT_INDEX_LIMIT = 200_000  # up to this many hashes, an exact (flat) index; above, multi-index hashing
HASH_BANDS = 3  # bands of 21 bits: 12M hashes leave about 6 per bucket
MAX_BUCKET = 4 * MAX_HITS  # clips sharing one band value beyond this many: an uninformative frame, skipped
VIDEO_COLUMNS = ("video_id", "sha256", "n_frames", "fps")
CLIP_COLUMNS = ("clip_id", "video_id", "start_s", "end_s", "sha256", "phash")


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))


@dataclass(frozen=True)
class Match:
    distance: float
    offset: int  # b's hash index 0 aligns with a's index `offset`


def best_alignment(
    a: np.ndarray, b: np.ndarray, min_fraction: float, offsets: Iterable[int] | None = None
) -> Match | None:
    """Offset of ``b`` within ``a`` with the lowest mean Hamming distance over a long enough overlap.

    ``offsets`` restricts the search (each is tried with its two neighbours); by default every offset is tried.
    """
    if len(a) == 0 or len(b) == 0:
        return None
    need = max(1, int(np.ceil(min_fraction * min(len(a), len(b)))))
    if offsets is None:
        tried: Iterable[int] = range(-(len(b) - need), len(a) - need + 1)
    else:
        tried = sorted({int(o) + d for o in offsets for d in (-1, 0, 1)})
    best: Match | None = None
    for offset in tried:
        lo_a, lo_b = max(0, offset), max(0, -offset)
        n = min(len(a) - lo_a, len(b) - lo_b)
        if n < need:
            continue
        d = float(hamming(a[lo_a : lo_a + n], b[lo_b : lo_b + n]).mean())
        if best is None or d < best.distance:
            best = Match(d, offset)
    return best


@dataclass(frozen=True)
class Signatures:
    """Hash sequences of ``n`` items as flat arrays, item by item: item ``i`` holds ``codes[start[i]:start[i+1]]``.

    ``owner`` is each code's item, ``position`` its index in the item's sequence.
    """

    codes: np.ndarray  # uint64
    owner: np.ndarray  # int64, non-decreasing
    position: np.ndarray  # int64
    start: np.ndarray  # int64, n + 1 offsets

    @classmethod
    def from_owner(cls, codes: np.ndarray, owner: np.ndarray, n: int) -> Signatures:
        """From codes already grouped by item (``owner`` non-decreasing) in sequence order."""
        owner = np.asarray(owner, dtype=np.int64)
        start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=n), out=start[1:])
        position = np.arange(len(owner), dtype=np.int64) - start[owner]
        return cls(np.asarray(codes, dtype=np.uint64), owner, position, start)

    @classmethod
    def from_sequences(cls, sequences: Sequence[np.ndarray]) -> Signatures:
        lengths = [len(s) for s in sequences]
        codes = np.concatenate([np.asarray(s, dtype=np.uint64) for s in sequences]) if sequences else np.zeros(0)
        return cls.from_owner(codes, np.repeat(np.arange(len(sequences)), lengths), len(sequences))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.start)

    def of(self, item: int) -> np.ndarray:
        return self.codes[self.start[item] : self.start[item + 1]]


def _binary_index(codes: np.ndarray):
    """A faiss index over 64-bit hashes: exact up to ``EXACT_INDEX_LIMIT`` codes, multi-index hashing above.

    Above the limit, 3 bands of 21 bits each go into a hash table, probed with up to 1 bit of a band flipped: every
    code within 5 bits of a query is found (pigeonhole), farther ones when one band is within 1 bit. Adding is
    linear and a query reads a few hundred codes, so the cost stays linear in the corpus (an IVF index's query
    cost grows with the codes per list, its assignment cost with the lists: quadratic together).
    """
    import faiss

    data = np.ascontiguousarray(codes).view(np.uint8).reshape(-1, 8)
    if len(data) <= EXACT_INDEX_LIMIT:
        index = faiss.IndexBinaryFlat(64)
    else:
        index = faiss.IndexBinaryMultiHash(64, HASH_BANDS, 64 // HASH_BANDS)
        index.nflip = 1
    index.add(data)
    return index


def _query_rows(sigs: Signatures) -> np.ndarray:
    """Up to ``QUERIES_PER_ITEM`` evenly spaced codes of each item, as ascending code indices."""
    lengths = sigs.lengths
    parts = []
    for n in np.unique(lengths[lengths > 0]):  # one linspace per distinct length, not per item
        picked = np.unique(np.linspace(0, n - 1, QUERIES_PER_ITEM).astype(int))
        parts.append((sigs.start[:-1][lengths == n][:, None] + picked[None, :]).ravel())
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def candidate_pairs(sigs: Signatures, radius: int, min_votes: int = 2) -> dict[tuple[int, int], np.ndarray]:
    """Pairs of items whose hashes come within ``radius`` bits, with the offsets at which they do; never all pairs.

    All codes go into one faiss binary index; up to ``QUERIES_PER_ITEM`` evenly spaced codes of each item are
    range-searched in it. A hash pair found from both sides votes once, for the offset ``position in a - position
    in b``; a query near more than ``MAX_HITS`` other items votes not at all. A pair needs ``min_votes`` votes
    (fewer when an item has fewer codes) within one offset give or take one: copies agree on an offset, chance hits
    scatter. The result maps ``(a, b)`` (item indices, a < b) to its offsets, most votes first (ties: first found).
    """
    lengths = sigs.lengths
    if np.count_nonzero(lengths) < 2:
        return {}
    n_items, n_codes = len(lengths), len(sigs.codes)
    query_rows = _query_rows(sigs)
    queries = np.ascontiguousarray(sigs.codes[query_rows]).view(np.uint8).reshape(-1, 8)
    lims, _, hits = _binary_index(sigs.codes).range_search(queries, radius)
    # one entry per (query, hit), in the order faiss returns them: that order breaks ties between offsets
    query = np.repeat(np.arange(len(query_rows), dtype=np.int64), np.diff(lims).astype(np.int64))
    row, hit = query_rows[query], hits.astype(np.int64)
    other = sigs.owner[hit]
    keep = other != sigs.owner[row]
    query, row, hit, other = query[keep], row[keep], hit[keep], other[keep]
    near_items = np.bincount(np.unique(query * n_items + other) // n_items, minlength=len(query_rows))
    keep = near_items[query] <= MAX_HITS
    row, hit = row[keep], hit[keep]
    lo, hi = np.minimum(row, hit), np.maximum(row, hit)
    _, first = np.unique(lo * n_codes + hi, return_index=True)  # each hash pair once, where first found
    lo, hi = lo[first], hi[first]
    a, b = sigs.owner[lo], sigs.owner[hi]  # codes are laid out item by item, so a < b
    offset = sigs.position[lo] - sigs.position[hi]
    pair_keys, pair = np.unique(a * n_items + b, return_inverse=True)
    span = 2 * int(lengths.max()) + 1  # offsets lie in (-max length, max length): o - 1 and o + 1 stay in a pair
    vote_keys, vote, votes = np.unique(pair * span + offset + span // 2, return_inverse=True, return_counts=True)
    found_at = np.full(len(vote_keys), len(first), dtype=np.int64)
    np.minimum.at(found_at, vote, first)
    window = votes.copy()
    for d in (-1, 1):
        at = np.clip(np.searchsorted(vote_keys, vote_keys + d), 0, len(vote_keys) - 1)
        window += np.where(vote_keys[at] == vote_keys + d, votes[at], 0)
    vote_pair = vote_keys // span
    best = np.zeros(len(pair_keys), dtype=np.int64)
    np.maximum.at(best, vote_pair, window)
    item_a, item_b = pair_keys // n_items, pair_keys % n_items
    need = np.minimum(np.minimum(min_votes, lengths[item_a]), lengths[item_b])
    order = np.lexsort((found_at, -votes, vote_pair))  # per pair: most votes first, ties in the order found
    bounds = np.searchsorted(vote_pair[order], np.arange(len(pair_keys) + 1))
    offsets_sorted = (vote_keys % span - span // 2)[order]
    return {
        (int(item_a[p]), int(item_b[p])): offsets_sorted[bounds[p] : bounds[p + 1]]
        for p in np.flatnonzero(best >= need)
    }


@dataclass(frozen=True)
class ClipColumns:
    """The clips table's columns as numpy arrays, in (video, start) order; ids stay Arrow until needed."""

    clip_id: pa.Array
    sha256: pa.Array
    video: np.ndarray  # index into the sorted video ids
    start_s: np.ndarray
    end_s: np.ndarray
    hashes: Signatures  # owner = clip row

    @classmethod
    def from_table(cls, clips: pa.Table, video_ids: pa.Array) -> ClipColumns:
        video = pc.index_in(clips["video_id"], value_set=video_ids).to_numpy(zero_copy_only=False).astype(np.int64)
        start_s = clips["start_s"].to_numpy().astype(np.float64)
        order = np.lexsort((start_s, video))  # stable: the table's order where already sorted, as documented
        if (order != np.arange(len(order))).any():
            clips, video, start_s = clips.take(order), video[order], start_s[order]
        phash = clips["phash"].combine_chunks()
        n_hashes = pc.fill_null(pc.list_value_length(phash), 0).to_numpy().astype(np.int64)
        codes = pc.list_flatten(phash).to_numpy(zero_copy_only=False)
        codes = codes.view(np.uint64) if codes.dtype == np.int64 else codes.astype(np.uint64)  # int64: bit pattern
        return cls(
            clip_id=clips["clip_id"].combine_chunks(),
            sha256=clips["sha256"].combine_chunks(),
            video=video,
            start_s=start_s,
            end_s=clips["end_s"].to_numpy().astype(np.float64),
            hashes=Signatures.from_owner(codes, pc.list_parent_indices(phash).to_numpy(), len(n_hashes)),
        )

    def ids(self, rows: np.ndarray) -> list[str]:
        return self.clip_id.take(pa.array(rows, pa.int64())).to_pylist()


def hash_step_s(clips: ClipColumns) -> float:
    """Seconds between hashed frames, from a clip with the most hashes (a tail clip may hold fewer)."""
    lengths = clips.hashes.lengths
    if not len(lengths) or lengths.max() == 0:
        return 1.0
    i = int(np.argmax(lengths))
    return float((clips.end_s[i] - clips.start_s[i]) / lengths[i])


def video_signatures(clips: ClipColumns, n_videos: int, step_s: float) -> Signatures:
    """Each video's hash sequence in time order, rebuilt from its clips' hashes (fixed positions ``step_s`` apart).

    Overlapping clips hash the same positions; the later clip's hash wins.
    """
    h = clips.hashes
    video = clips.video[h.owner]
    slot = np.round(clips.start_s[h.owner] / step_s).astype(np.int64) + h.position
    order = np.lexsort((np.arange(len(slot)), slot, video))
    video, slot = video[order], slot[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (video[1:] != video[:-1]) | (slot[1:] != slot[:-1])
    return Signatures.from_owner(h.codes[order[last]], video[last], n_videos)


def band_layout(n_items: int) -> list[tuple[int, int]]:
    """(shift, width) of the bands a 64-bit hash is cut into: as many as keep chance collisions near 2 per item."""
    width = max(8, int(np.ceil(np.log2(max(n_items, 2)))) - 2)
    k = max(1, 64 // width)
    edges = np.linspace(0, 64, k + 1).astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _bucket_pairs(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of ``rows`` with equal ``keys``, from buckets of 2 to ``MAX_BUCKET`` members."""
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    out_a, out_b = [], []
    for m in np.unique(sizes[(sizes >= 2) & (sizes <= MAX_BUCKET)]):
        i, j = np.triu_indices(int(m), 1)
        first = starts[sizes == m][:, None]
        out_a.append(rows[(first + i).ravel()])
        out_b.append(rows[(first + j).ravel()])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


def near_clip_pairs(
    clips: ClipColumns, eligible: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate clip pairs of different videos: mean Hamming distance of aligned hashes <= ``threshold``.

    Multi-index hashing: each aligned hash (position ``i`` in its clip) is cut into bands (:func:`band_layout`);
    clips with an equal band at the same position and band index are candidates, checked on all their aligned
    hashes. With ``k`` bands per hash, a pair whose ``n`` aligned hashes differ in fewer than ``k * n`` bits shares
    a band (pigeonhole), so it is always found. Returns rows ``a < b`` and their mean distances.
    """
    h = clips.hashes
    lengths = h.lengths
    width = int(lengths.max()) if len(lengths) else 0
    grid = np.zeros((len(lengths), width), dtype=np.uint64)
    grid[h.owner, h.position] = h.codes
    found_a, found_b = [], []
    for pos in range(width):
        rows = np.flatnonzero(eligible & (lengths > pos))
        for shift, bits in band_layout(len(rows)):
            band = (grid[rows, pos] >> np.uint64(shift)) & np.uint64((1 << bits) - 1)
            a, b = _bucket_pairs(band, rows)
            keep = clips.video[a] != clips.video[b]
            a, b = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
            dist = _aligned_distance(grid, lengths, a, b)
            found_a.append(a[dist <= threshold])
            found_b.append(b[dist <= threshold])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    pairs = np.unique(np.stack([np.concatenate(found_a), np.concatenate(found_b)], axis=1), axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    return a, b, _aligned_distance(grid, lengths, a, b)


def _aligned_distance(grid: np.ndarray, lengths: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean Hamming distance of the first ``min(len a, len b)`` hashes of clips ``a`` and ``b`` (rows of ``grid``)."""
    n = np.minimum(lengths[a], lengths[b])
    bits = np.zeros(len(a), dtype=np.int64)
    for pos in range(grid.shape[1]):
        live = n > pos
        bits[live] += hamming(grid[a[live], pos], grid[b[live], pos])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, bits / np.maximum(n, 1), np.inf)


@dataclass
class DedupResult:
    video_dup: dict[str, tuple[str, str]]  # video_id -> (representative, kind)
    clip_dup: dict[str, tuple[str, str]]  # clip_id -> (representative clip, kind)
    rows: list[dict]  # dedup.parquet rows: cluster members only


def _row(level: str, rep: str, member: str, video: str, kind: str, distance: float, offset_s: float) -> dict:
    return {
        "level": level,
        "cluster_id": rep,
        "member_id": member,
        "video_id": video,
        "is_representative": member == rep,
        "kind": kind,
        "distance": distance,
        "offset_s": offset_s,
    }


def _require(table: pa.Table, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"dedup: the {name} table lacks column(s) {', '.join(missing)}")


def dedup(videos: pa.Table, clips: pa.Table, spec: DedupSpec) -> DedupResult:
    """Cluster videos and clips; see the module docstring.

    ``videos`` needs ``video_id, sha256, n_frames, fps``; ``clips`` needs ``clip_id, video_id, start_s, end_s,
    sha256, phash`` (a list of 64-bit hashes per clip, unsigned or their int64 bit pattern), sorted by
    ``video_id, start_s`` (other orders are sorted first).
    """
    if not spec.enabled:
        return DedupResult({}, {}, [])
    _require(videos, VIDEO_COLUMNS, "videos")
    _require(clips, CLIP_COLUMNS, "clips")
    ids = pc.unique(
        pa.chunked_array([c.cast(pa.string()) for t in (videos, clips) for c in t["video_id"].chunks], pa.string())
    )
    ids = ids.take(pc.sort_indices(ids))  # byte order of UTF-8 = code point order, as Python sorts
    t0 = time.perf_counter()
    cols = ClipColumns.from_table(clips, ids)
    step_s = hash_step_s(cols)
    sigs = video_signatures(cols, len(ids), step_s)
    t1 = time.perf_counter()
    video_dup, offsets, rows = _video_level(videos, ids.to_pylist(), sigs, step_s, spec)
    t2 = time.perf_counter()
    clip_dup = _clip_level(cols, ids, video_dup, offsets, spec, rows)
    log.info(
        "dedup: %d videos, %d clips, %d hashes: columns %.1f s; video level %.1f s, %d duplicates; "
        "clip level %.1f s, %d duplicates",
        len(videos),
        len(clips),
        len(cols.hashes.codes),
        t1 - t0,
        t2 - t1,
        len(video_dup),
        time.perf_counter() - t2,
        len(clip_dup),
    )
    return DedupResult(video_dup, clip_dup, rows)


def _video_level(
    videos: pa.Table, ids: list[str], sigs: Signatures, step_s: float, spec: DedupSpec
) -> tuple[dict[str, tuple[str, str]], dict[str, float], list[dict]]:
    vids = sorted(videos["video_id"].to_pylist())
    sha = dict(zip(videos["video_id"].to_pylist(), videos["sha256"].to_pylist(), strict=True))
    n_frames = pc.fill_null(pc.cast(videos["n_frames"], pa.float64()), 0).to_numpy()
    fps = pc.cast(videos["fps"], pa.float64()).to_numpy(zero_copy_only=False)
    fps = np.where(np.isnan(fps) | (fps == 0), 1.0, fps)  # unknown fps counts as 1, as a missing value did before
    size = dict(zip(videos["video_id"].to_pylist(), (n_frames / np.maximum(fps, 1e-6)).tolist(), strict=True))
    index = {v: i for i, v in enumerate(ids)}
    uf = UnionFind()
    by_sha: dict[str, list[str]] = {}
    for v in vids:
        if sha[v] is not None:  # an unknown checksum is no evidence of a copy
            by_sha.setdefault(sha[v], []).append(v)
    for same in by_sha.values():
        for other in same[1:]:
            uf.union(same[0], other)
    radius = int(spec.video_threshold) + 2  # a little looser than the mean threshold: single frames vary
    for (a, b), offsets in sorted(candidate_pairs(sigs, radius).items()):
        if uf.find(ids[a]) == uf.find(ids[b]):
            continue
        m = best_alignment(sigs.of(a), sigs.of(b), spec.min_match_fraction, offsets[:3])
        if m is not None and m.distance <= spec.video_threshold:
            uf.union(ids[a], ids[b])
    video_dup: dict[str, tuple[str, str]] = {}
    offset_s: dict[str, float] = {}
    rows: list[dict] = []
    empty = np.zeros(0, np.uint64)
    for members in uf.groups(vids).values():
        if len(members) < 2:
            continue
        rep = sorted(members, key=lambda m: (-size.get(m, 0), m))[0]
        for m in sorted(members):
            if m == rep:
                kind, dist, off = "representative", 0.0, 0.0
            elif sha[m] == sha[rep]:
                kind, dist, off = "exact", 0.0, 0.0
            else:
                rep_sig = sigs.of(index[rep]) if rep in index else empty
                match = best_alignment(rep_sig, sigs.of(index[m]), spec.min_match_fraction)
                kind = "near"
                dist, off = (match.distance, match.offset * step_s) if match else (float("nan"), 0.0)
                offset_s[m] = off
            if m != rep:
                video_dup[m] = (rep, kind)
            rows.append(_row("video", rep, m, m, kind, dist, off))
    return video_dup, offset_s, rows


def _nearest(starts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the first of ascending ``starts`` nearest each target (what ``argmin(|starts - t|)`` gives)."""
    hi = np.clip(np.searchsorted(starts, targets), 0, len(starts) - 1)
    lo = np.maximum(hi - 1, 0)
    pick = np.where(targets - starts[lo] <= np.abs(starts[hi] - targets), lo, hi)
    return np.searchsorted(starts, starts[pick])  # the first of equal starts


def _clip_level(
    cols: ClipColumns,
    ids: pa.Array,
    video_dup: dict[str, tuple[str, str]],
    offsets: dict[str, float],
    spec: DedupSpec,
    rows: list[dict],
) -> dict[str, tuple[str, str]]:
    clip_dup: dict[str, tuple[str, str]] = {}
    index = {v: i for i, v in enumerate(ids.to_pylist())}
    bounds = np.searchsorted(cols.video, np.arange(len(index) + 1))  # clips sorted by video: one range each
    for vid, (rep, kind) in sorted(video_dup.items()):
        r0, r1 = bounds[index[rep]], bounds[index[rep] + 1]
        v0, v1 = bounds[index[vid]], bounds[index[vid] + 1]
        if r0 == r1 or v0 == v1:
            continue
        nearest = r0 + _nearest(cols.start_s[r0:r1], cols.start_s[v0:v1] + offsets.get(vid, 0.0))
        for clip, target in zip(cols.ids(np.arange(v0, v1)), cols.ids(nearest), strict=True):
            clip_dup[clip] = (target, f"video-{kind}")
    dup_video = np.zeros(len(index), dtype=bool)
    dup_video[[index[v] for v in video_dup]] = True
    rest = ~dup_video[cols.video]
    # exact: equal clip sha256 among the rest
    encoded = pc.dictionary_encode(cols.sha256)
    sha_codes = pc.fill_null(encoded.indices, 0).to_numpy().astype(np.int64)
    known = rest & cols.sha256.is_valid().to_numpy(zero_copy_only=False)  # an unknown checksum matches nothing
    shared = np.bincount(sha_codes[known], minlength=len(encoded.dictionary)) >= 2
    exact_rows = np.flatnonzero(known & shared[sha_codes])
    near_a, near_b, _ = near_clip_pairs(cols, rest, spec.clip_threshold)
    involved = np.unique(np.concatenate([exact_rows, near_a, near_b]))
    if not len(involved):
        return clip_dup
    name = dict(zip(involved.tolist(), cols.ids(involved), strict=True))
    uf = UnionFind()
    by_sha: dict[int, list[str]] = {}
    for r in sorted(exact_rows.tolist(), key=name.__getitem__):
        by_sha.setdefault(int(sha_codes[r]), []).append(name[r])
    for same in by_sha.values():
        for other in same[1:]:
            uf.union(same[0], other)
    for a, b in zip(near_a.tolist(), near_b.tolist(), strict=True):
        uf.union(name[a], name[b])
    row_of = {n: r for r, n in name.items()}
    h = cols.hashes
    for members in uf.groups(sorted(name.values())).values():
        if len(members) < 2:
            continue
        rep = sorted(members, key=lambda m: (-(cols.end_s[row_of[m]] - cols.start_s[row_of[m]]), m))[0]
        rep_row = row_of[rep]
        for m in sorted(members):
            r = row_of[m]
            exact = cols.sha256[r].as_py() == cols.sha256[rep_row].as_py()
            n = min(h.lengths[r], h.lengths[rep_row])
            dist = 0.0 if exact or not n else float(hamming(h.of(r)[:n], h.of(rep_row)[:n]).mean())
            kind = "representative" if m == rep else ("exact" if exact else "near")
            if m != rep:
                clip_dup[m] = (rep, kind)
            rows.append(_row("clip", rep, m, ids[int(cols.video[r])].as_py(), kind, dist, 0.0))
    return clip_dup
