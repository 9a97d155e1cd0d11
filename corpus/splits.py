"""Deterministic grouped splits: the one place where videos are assigned to splits.

Two assigners share the grouping (videos with one group key or linked as near duplicates form one component that
never straddles splits) and the seeded hash:

- :func:`assign_splits` (corpus builds): each component's split comes from a hash of its key, so adding a video
  never moves another one; official splits win.
- :func:`stratified_split` (the OpenSurgery EVAL split): an exact test count, apportioned over strata (surgery
  types), components taken in hash order while they fit their stratum's quota.

A video's group key is its video id, its source, or the first regex group of its native id (``group_by: group``,
e.g. ``^(.*)_capture\\d$`` keeps a JIGSAWS trial's two camera views together). Videos that share a group key or a
near-duplicate cluster form one component, and a component lands in one split: the official split of any member
(test over val over train, so nothing leaks into training), otherwise a hash of the component's smallest group key
with the seed. A video's split depends only on its own component, so adding a video never moves another one,
unless the new video joins two components (a near duplicate of both), which then must share a split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from corpus.unionfind import UnionFind

SPLITS = ("train", "val", "test")
_PRECEDENCE = {"test": 0, "val": 1, "train": 2}


def hash_unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from a seed and a key (sha256, stable across platforms and runs)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hashed_split(key: str, val: float, test: float, seed: int) -> str:
    u = hash_unit(seed, key)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def group_key(video: dict, group_by: str, pattern: str | None) -> str:
    if group_by == "source":
        return video["source"]
    if group_by == "group" and pattern:
        m = re.search(pattern, video["native_id"])
        if m and m.groups():
            return f"{video['source']}/{m.group(1)}"
    return video["video_id"]


def assign_splits(
    videos: Iterable[dict],
    *,
    val: float,
    test: float,
    seed: int,
    group_by: str = "video",
    patterns: dict[str, str | None] | None = None,
    official: dict[str, str] | None = None,
    linked: Iterable[tuple[str, str]] = (),
) -> dict[str, tuple[str, str]]:
    """video_id -> (split, reason). ``patterns``: per-source group regex; ``linked``: near-duplicate pairs."""
    videos = sorted(videos, key=lambda v: v["video_id"])
    patterns = patterns or {}
    official = official or {}
    keys = {v["video_id"]: group_key(v, group_by, patterns.get(v["source"])) for v in videos}
    out: dict[str, tuple[str, str]] = {}
    for members in components(keys, linked):
        given = sorted({official[m] for m in members if m in official}, key=_PRECEDENCE.__getitem__)
        if given:
            split, reason = given[0], "official"
        else:
            anchor = min(keys[m] for m in members)
            split, reason = hashed_split(anchor, val, test, seed), f"hash:{anchor}"
        for m in members:
            why = "official" if official.get(m) == split else reason
            out[m] = (split, why if len(members) == 1 or why == "official" else f"{why} (group of {len(members)})")
    return out


def components(keys: Mapping[str, str], linked: Iterable[tuple[str, str]] = ()) -> list[list[str]]:
    """Components of videos (``keys``: video_id -> group key) that share a group key or a ``linked`` pair."""
    uf = UnionFind()
    by_key: dict[str, str] = {}
    for vid, key in keys.items():
        uf.find(vid)
        if key in by_key:
            uf.union(by_key[key], vid)
        else:
            by_key[key] = vid
    for a, b in linked:
        if a in keys and b in keys:
            uf.union(a, b)
    return list(uf.groups(keys).values())


def _apportion(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Largest-remainder apportionment of ``total`` over strata in proportion to their sizes (ties by name)."""
    n = sum(sizes.values())
    exact = {s: total * k / n for s, k in sizes.items()} if n else {}
    quota = {s: math.floor(x) for s, x in exact.items()}
    rest = total - sum(quota.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - quota[s]), s))[:rest]:
        quota[s] += 1
    return quota


def stratified_split(
    videos: list[dict],
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    unknown: str = "unknown",
) -> dict[str, str]:
    """``video_id -> "train" | "test"`` with exactly ``round(test_fraction * n)`` test videos, stratified.

    ``videos`` rows need ``video_id`` and may have ``surgery_type`` (the stratum) and ``group_id``; ``groups``
    (video_id -> group, e.g. from the dedup table) takes precedence over ``group_id``. A component's stratum is its
    most common type; per stratum the test quota is apportioned by largest remainder, and components are taken
    into test in the order of their seeded hash while they fit.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1) (got {test_fraction})")
    groups = groups or {}
    keys = {v["video_id"]: groups.get(v["video_id"]) or v.get("group_id") or v["video_id"] for v in videos}
    by_id = {v["video_id"]: v for v in videos}
    comps = {min(keys[m] for m in c): sorted(c) for c in components(keys)}
    stratum_of: dict[str, str] = {}
    for g, ms in comps.items():
        counts = Counter(by_id[m].get("surgery_type") or unknown for m in ms)
        stratum_of[g] = min(counts, key=lambda t: (-counts[t], t))
    sizes: Counter[str] = Counter()
    for g, ms in comps.items():
        sizes[stratum_of[g]] += len(ms)
    quota = _apportion(sizes, math.floor(test_fraction * len(videos) + 0.5))
    split: dict[str, str] = {}
    for stratum in sorted(sizes):
        taken = 0
        for g in sorted((g for g in comps if stratum_of[g] == stratum), key=lambda g: (hash_unit(seed, g), g)):
            side = "test" if taken + len(comps[g]) <= quota[stratum] else "train"
            taken += len(comps[g]) if side == "test" else 0
            for m in comps[g]:
                split[m] = side
    return split
