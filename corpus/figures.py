"""The headline figures of a build, defined once and read from its tables: the build summary, the report and
``surgcorpus status`` all print these, so they never disagree.

- ``duplicate_videos``: videos whose ``dup_of`` is set (an exact or near copy of another video);
- ``duplicate_clips``: clips whose ``dup_of`` is set, i.e. every clip left out of the shards as a duplicate (the
  clips of a duplicate video included, not only clip-level matches);
- ``sharded_clips``: distinct clips in the shard index (which has a row per tar member).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from corpus.build_dir import BuildDir


def build_figures(build_dir: str | Path | BuildDir) -> dict[str, float | int]:
    """Videos, clips, duplicates, sharded clips, hours, source frames and error rows of a build dir."""
    bd = build_dir if isinstance(build_dir, BuildDir) else BuildDir(build_dir)
    videos = bd.read_table("videos", ["dup_of", "duration_s", "n_frames"])
    clips = bd.read_table("clips", ["dup_of"])
    shards = bd.read_table("shards", ["clip_id"])
    errors = bd.read_table("errors", ["stage"])

    def not_null(table, column: str) -> int:
        return 0 if table is None else table.num_rows - table[column].null_count

    def total(table, column: str) -> float:
        return 0 if table is None or table.num_rows == 0 else (pc.sum(table[column]).as_py() or 0)

    return {
        "videos": 0 if videos is None else videos.num_rows,
        "clips": 0 if clips is None else clips.num_rows,
        "duplicate_videos": not_null(videos, "dup_of"),
        "duplicate_clips": not_null(clips, "dup_of"),
        "sharded_clips": 0 if shards is None else pc.count_distinct(shards["clip_id"]).as_py(),
        "hours": total(videos, "duration_s") / 3600,
        "source_frames": int(total(videos, "n_frames")),
        "errors": 0 if errors is None else errors.num_rows,
    }
