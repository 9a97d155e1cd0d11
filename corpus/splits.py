"""Deterministic grouped splits.

A video's group key is its video id, its source, or the first regex group of its native id (``group_by: group``,
e.g. ``^(.*)_capture\\d$`` keeps a JIGSAWS trial's two camera views together). Videos that share a group key or a
near-duplicate cluster form one component, and a component lands in one split: the official split of any member
(test over val over train, so nothing leaks into training), otherwise a hash of the component's smallest group key
with the seed. A video's split depends only on its own component, so adding a video never moves another one,
unless the new video joins two components (a near duplicate of both), which then must share a split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

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
    out: dict[str, tuple[str, str]] = {}
    for members in uf.groups(keys).values():
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
