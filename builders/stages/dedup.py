"""dedup: exact (sha256) and near-duplicate clusters, at video level and at clip level. Nothing is deleted.

Signatures come from the clip stage: 64-bit perceptual hashes of small grey frames sampled at fixed positions of
the resampled timeline (4 per clip). A video's signature is its hash sequence in time order.

- Video level: exact duplicates share a sha256; near duplicates (re-encoded, resized, brightness/contrast changed,
  trimmed) have a time offset at which the mean Hamming distance of the overlapping hashes is at most
  ``video_threshold`` over at least ``min_match_fraction`` of the shorter sequence. Candidate pairs, and the offsets
  to try, come from a faiss binary-index range search of sampled hashes against all hashes, never from all pairs.
- Clip level: clips of a duplicate video point to the representative's clip nearest in time; among the other
  clips, exact (same clip sha256) and near duplicates across different videos.

A cluster's representative is its longest member (ties: smallest id); the others get ``dup_of`` and ``dup_kind``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from corpus.manifest import DedupSpec
from corpus.unionfind import UnionFind

MAX_HITS = 64  # a query hash near this many other items (a black frame, a test card) says nothing: skip it
QUERIES_PER_ITEM = 64
EXACT_INDEX_LIMIT = 200_000  # up to this many hashes, an exact (flat) index; above, an IVF index (nprobe 32)


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
        tried = sorted({o + d for o in offsets for d in (-1, 0, 1)})
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


def _binary_index(codes: np.ndarray):
    """A faiss index over 64-bit hashes: exact up to ``EXACT_INDEX_LIMIT`` codes, inverted lists above."""
    import faiss

    data = np.ascontiguousarray(codes).view(np.uint8).reshape(-1, 8)
    if len(data) <= EXACT_INDEX_LIMIT:
        index = faiss.IndexBinaryFlat(64)
    else:
        train = min(len(data), 262_144)
        nlist = int(min(4 * np.sqrt(len(data)), train / 40))  # faiss wants >= 39 training points per list
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(64), 64, nlist)
        index.train(data[np.random.default_rng(0).choice(len(data), train, replace=False)])
        index.nprobe = 32
    index.add(data)
    return index


def candidate_pairs(
    signatures: dict[str, np.ndarray], radius: int, min_votes: int = 2
) -> dict[tuple[str, str], Counter]:
    """Pairs of ids whose hashes come within ``radius`` bits, with the offsets at which they do; never all pairs.

    All hashes go into one faiss binary index; up to ``QUERIES_PER_ITEM`` evenly spaced hashes of each item are
    range-searched in it. A pair needs ``min_votes`` query hits (fewer when an item has fewer hashes). The result
    maps ``(a, b)`` (a < b) to a Counter of offsets ``position in a - position in b``, for the alignment.
    """
    keys = sorted(k for k, v in signatures.items() if len(v))
    if len(keys) < 2:
        return {}
    codes = np.concatenate([signatures[k] for k in keys]).astype(np.uint64)
    owner = np.concatenate([np.full(len(signatures[k]), i) for i, k in enumerate(keys)])
    position = np.concatenate([np.arange(len(signatures[k])) for k in keys])
    query_rows = np.concatenate(
        [
            np.flatnonzero(owner == i)[np.unique(np.linspace(0, len(signatures[k]) - 1, QUERIES_PER_ITEM).astype(int))]
            for i, k in enumerate(keys)
        ]
    )
    index = _binary_index(codes)
    queries = np.ascontiguousarray(codes[query_rows]).view(np.uint8).reshape(-1, 8)
    lims, _, hits = index.range_search(queries, radius)
    votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
    seen: set[tuple[int, int]] = set()  # a hash pair found from both sides votes once
    for q, row in enumerate(query_rows):
        found = hits[lims[q] : lims[q + 1]]
        others = owner[found]
        keep = others != owner[row]
        if len(np.unique(others[keep])) > MAX_HITS:
            continue
        for hit in found[keep]:
            pair = (min(int(row), int(hit)), max(int(row), int(hit)))
            if pair in seen:
                continue
            seen.add(pair)
            a, b = int(owner[row]), int(owner[hit])
            pos_a, pos_b = int(position[row]), int(position[hit])
            if a > b:
                a, b, pos_a, pos_b = b, a, pos_b, pos_a
            votes[(a, b)][pos_a - pos_b] += 1
    out = {}
    for (a, b), offsets in votes.items():
        need = min(min_votes, len(signatures[keys[a]]), len(signatures[keys[b]]))
        # copies agree on one offset (give or take a hash); chance hits scatter over many
        if max(sum(offsets.get(o + d, 0) for d in (-1, 0, 1)) for o in offsets) >= need:
            out[(keys[a], keys[b])] = offsets
    return out


def video_signatures(clips: list[dict]) -> dict[str, np.ndarray]:
    """Each video's hash sequence in time order, rebuilt from its clips' hashes (4 per clip, fixed positions)."""
    by_pos: dict[str, dict[int, int]] = defaultdict(dict)
    step = _hash_step_s(clips)
    for c in clips:
        hashes = c.get("phash") or []
        if not hashes:
            continue
        first = round(c["start_s"] / step)
        for i, h in enumerate(hashes):
            by_pos[c["video_id"]][first + i] = h
    return {v: np.array([p[k] for k in sorted(p)], dtype=np.uint64) for v, p in by_pos.items()}


@dataclass
class DedupResult:
    video_dup: dict[str, tuple[str, str]]  # video_id -> (representative, kind)
    clip_dup: dict[str, tuple[str, str]]  # clip_id -> (representative clip, kind)
    rows: list[dict]  # dedup.parquet rows


def _representative(members: list[str], size: dict[str, float]) -> str:
    return sorted(members, key=lambda m: (-size.get(m, 0), m))[0]


def dedup(videos: list[dict], clips: list[dict], spec: DedupSpec) -> DedupResult:
    """Cluster videos and clips; see the module docstring."""
    rows: list[dict] = []
    video_dup: dict[str, tuple[str, str]] = {}
    clip_dup: dict[str, tuple[str, str]] = {}
    if not spec.enabled:
        return DedupResult(video_dup, clip_dup, rows)
    vids = sorted(v["video_id"] for v in videos)
    sha = {v["video_id"]: v["sha256"] for v in videos}
    size = {v["video_id"]: float(v.get("n_frames") or 0) / max(float(v.get("fps") or 1), 1e-6) for v in videos}
    uf = UnionFind()
    edge: dict[tuple[str, str], tuple[str, float, float]] = {}
    by_sha: dict[str, list[str]] = defaultdict(list)
    for v in vids:
        by_sha[sha[v]].append(v)
    for same in by_sha.values():
        for other in same[1:]:
            uf.union(same[0], other)
            edge[(same[0], other)] = ("exact", 0.0, 0.0)
    sigs = video_signatures(clips)
    step_s = _hash_step_s(clips)
    radius = int(spec.video_threshold) + 2  # a little looser than the mean threshold: single frames vary
    for (a, b), offsets in sorted(candidate_pairs(sigs, radius).items()):
        if uf.find(a) == uf.find(b):
            continue
        m = best_alignment(sigs[a], sigs[b], spec.min_match_fraction, [o for o, _ in offsets.most_common(3)])
        if m is not None and m.distance <= spec.video_threshold:
            uf.union(a, b)
            edge[(a, b)] = ("near", m.distance, m.offset * step_s)
    offsets: dict[str, float] = {}
    for members in uf.groups(vids).values():
        if len(members) < 2:
            continue
        rep = _representative(members, size)
        for m in sorted(members):
            if m == rep:
                kind, dist, off = "representative", 0.0, 0.0
            elif sha[m] == sha[rep]:
                kind, dist, off = "exact", 0.0, 0.0
            else:
                match = best_alignment(
                    sigs.get(rep, np.zeros(0, np.uint64)), sigs.get(m, np.zeros(0, np.uint64)), spec.min_match_fraction
                )
                kind = "near"
                dist, off = (match.distance, match.offset * step_s) if match else (float("nan"), 0.0)
                offsets[m] = off
            if m != rep:
                video_dup[m] = (rep, kind)
            rows.append(
                {
                    "level": "video",
                    "cluster_id": rep,
                    "member_id": m,
                    "video_id": m,
                    "is_representative": m == rep,
                    "kind": kind,
                    "distance": dist,
                    "offset_s": off,
                }
            )
    _clip_level(clips, video_dup, offsets, spec, clip_dup, rows)
    return DedupResult(video_dup, clip_dup, rows)


def _hash_step_s(clips: list[dict]) -> float:
    """Seconds between hashed frames, from a clip with the most hashes (a tail clip may hold fewer)."""
    full = max((c for c in clips if c.get("phash")), key=lambda c: len(c["phash"]), default=None)
    if full is None:
        return 1.0
    return (full["end_s"] - full["start_s"]) / len(full["phash"])


def _clip_level(clips, video_dup, offsets, spec, clip_dup, rows) -> None:
    by_video: dict[str, list[dict]] = defaultdict(list)
    for c in clips:
        by_video[c["video_id"]].append(c)
    for vid, (rep, kind) in sorted(video_dup.items()):
        rep_clips = by_video.get(rep, [])
        if not rep_clips:
            continue
        starts = np.array([c["start_s"] for c in rep_clips])
        for c in by_video.get(vid, []):
            target = c["start_s"] + offsets.get(vid, 0.0)
            nearest = rep_clips[int(np.argmin(np.abs(starts - target)))]
            clip_dup[c["clip_id"]] = (nearest["clip_id"], f"video-{kind}")
    rest = [c for c in clips if c["video_id"] not in video_dup]
    uf = UnionFind()
    by_sha: dict[str, list[str]] = defaultdict(list)
    for c in sorted(rest, key=lambda c: c["clip_id"]):
        by_sha[c["sha256"]].append(c["clip_id"])
    for same in by_sha.values():
        for other in same[1:]:
            uf.union(same[0], other)
    info = {c["clip_id"]: c for c in rest}
    sigs = {c["clip_id"]: np.array(c["phash"], dtype=np.uint64) for c in rest if c.get("phash")}
    radius = int(spec.clip_threshold) + 2
    for a, b in sorted(candidate_pairs(sigs, radius, min_votes=1)):
        if info[a]["video_id"] == info[b]["video_id"] or uf.find(a) == uf.find(b):
            continue
        n = min(len(sigs[a]), len(sigs[b]))
        if n and float(hamming(sigs[a][:n], sigs[b][:n]).mean()) <= spec.clip_threshold:
            uf.union(a, b)
    for members in uf.groups(info).values():
        if len(members) < 2:
            continue
        rep = sorted(members, key=lambda m: (-(info[m]["end_s"] - info[m]["start_s"]), m))[0]
        for m in sorted(members):
            exact = info[m]["sha256"] == info[rep]["sha256"]
            n = min(len(sigs.get(m, [])), len(sigs.get(rep, [])))
            dist = 0.0 if exact or not n else float(hamming(sigs[m][:n], sigs[rep][:n]).mean())
            kind = "representative" if m == rep else ("exact" if exact else "near")
            if m != rep:
                clip_dup[m] = (rep, kind)
            rows.append(
                {
                    "level": "clip",
                    "cluster_id": rep,
                    "member_id": m,
                    "video_id": info[m]["video_id"],
                    "is_representative": m == rep,
                    "kind": kind,
                    "distance": dist,
                    "offset_s": 0.0,
                }
            )
