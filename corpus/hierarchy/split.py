"""The fixed EVAL split: by video, stratified by surgery type, deterministic, near-duplicate groups kept together.

Per surgery type, the test quota is apportioned from ``round(test_fraction * n_videos)`` by largest remainder, so
the total is exact (OpenSurgery-EVAL: 400 videos, 0.3 → 120 test). Within a type, groups (a near-duplicate cluster,
a patient, or the video alone) are ordered by ``sha256(seed, group)`` and taken into test while they fit the quota.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

import pyarrow.parquet as pq

from corpus.errors import AnnotationError

UNKNOWN_TYPE = "unknown"


def _order(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\x00{group}".encode()).hexdigest()


def _apportion(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Largest-remainder apportionment of ``total`` over strata in proportion to their sizes (ties by name)."""
    n = sum(sizes.values())
    exact = {s: total * k / n for s, k in sizes.items()} if n else {}
    quota = {s: math.floor(x) for s, x in exact.items()}
    rest = total - sum(quota.values())
    for s in sorted(exact, key=lambda s: (-(exact[s] - quota[s]), s))[:rest]:
        quota[s] += 1
    return quota


def assign_splits(
    videos: list[dict], *, test_fraction: float = 0.3, seed: int = 0, groups: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``video_id -> "train" | "test"``.

    ``videos`` rows need ``video_id`` and may have ``surgery_type`` and ``group_id``; ``groups`` (video_id → group,
    e.g. from the dedup table) takes precedence over ``group_id``. A group's stratum is its most common type.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1) (got {test_fraction})")
    groups = groups or {}
    members: dict[str, list[dict]] = defaultdict(list)
    for v in videos:
        members[groups.get(v["video_id"]) or v.get("group_id") or v["video_id"]].append(v)
    stratum_of: dict[str, str] = {}
    for g, vs in members.items():
        counts = Counter(v.get("surgery_type") or UNKNOWN_TYPE for v in vs)
        stratum_of[g] = min(counts, key=lambda t: (-counts[t], t))
    sizes: Counter[str] = Counter()
    for g, vs in members.items():
        sizes[stratum_of[g]] += len(vs)
    quota = _apportion(sizes, math.floor(test_fraction * len(videos) + 0.5))
    split: dict[str, str] = {}
    for stratum in sorted(sizes):
        taken = 0
        for g in sorted((g for g in members if stratum_of[g] == stratum), key=lambda g: _order(seed, g)):
            side = "test" if taken + len(members[g]) <= quota[stratum] else "train"
            taken += len(members[g]) if side == "test" else 0
            for v in members[g]:
                split[v["video_id"]] = side
    return split


def read_groups(path: str | Path) -> dict[str, str]:
    """video_id → group from a CSV ``video_id,group``, the pipeline's ``dedup`` table (video-level clusters) or any
    Parquet table with ``video_id`` and ``dup_of`` (a video's representative)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: group file not found")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not {"video_id", "group"} <= set(reader.fieldnames or []):
                raise AnnotationError(f"{path}: a group CSV needs columns video_id,group (got {reader.fieldnames})")
            return {r["video_id"]: r["group"] for r in reader if r["group"]}
    cols = set(pq.read_schema(path).names)
    if {"member_id", "cluster_id", "level"} <= cols:
        rows = pq.read_table(path, columns=["level", "member_id", "cluster_id"]).to_pylist()
        return {r["member_id"]: r["cluster_id"] for r in rows if r["level"] == "video" and r["cluster_id"]}
    if {"video_id", "dup_of"} <= cols:
        rows = pq.read_table(path, columns=["video_id", "dup_of"]).to_pylist()
        return {r["video_id"]: r["dup_of"] for r in rows if r["dup_of"]}
    raise AnnotationError(f"{path}: need a dedup table (level, member_id, cluster_id) or columns video_id, dup_of")
