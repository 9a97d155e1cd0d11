"""Groups for the fixed EVAL split (near-duplicate clusters, patients) read from files.

The split itself is :func:`corpus.splits.stratified_split`: by video, stratified by surgery type, deterministic,
exact in total (OpenSurgery-EVAL: 400 videos, 0.3 → 120 test), groups kept together.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq

from corpus.errors import AnnotationError


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
