"""shard: WebDataset tars per split, byte-identical across rebuilds, plus a shard index.

Samples are sorted by clip id and packed into ``shards/<split>/<corpus>-<split>-%06d.tar`` until ``max_samples``
or ``max_bytes``; each sample is ``<key>.mp4`` (or ``<key>.NNN.jpg`` frames) plus ``<key>.json`` with the clip's
metadata. Tar members carry a fixed mtime, owner and mode; every tar is written under a temp name and renamed.
Each shard is one unit of :class:`ShardStage` on the build's executor, so shards are written in parallel by the
workers (the driver only plans them) and resume like every other stage.
A shard whose member list and member checksums are unchanged is not rewritten. The index maps each clip to its
shard, member name, data offset and size, so DuckDB can answer "which shards hold X".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from builders.stages.base import Stage, UnitResult, stable_hash
from corpus.atomic import temp_sibling
from corpus.ids import check_unique

if TYPE_CHECKING:
    from builders.executors.base import Executor

SHARDS_DIR = "shards"
TAR_MTIME = 0.0  # fixed: shards must not depend on when they were built
TAR_MODE = 0o444
TAR_OWNER = "surgcorpus"  # user and group name of every member
METADATA_FIELDS = (
    "clip_id",
    "video_id",
    "source",
    "domain",
    "split",
    "start_s",
    "end_s",
    "n_frames",
    "fps",
    "width",
    "height",
    "format",
    "sha256",
)


@dataclass(frozen=True)
class Sample:
    """One WebDataset sample: key and members (extension -> path of a file, or bytes)."""

    key: str
    members: tuple[tuple[str, str | bytes], ...]
    fingerprint: str


def write_shard(path: Path, samples: Iterable[Sample]) -> list[dict]:
    """Write one tar atomically, members in sorted order with fixed metadata; return index rows (key, member...).

    The bytes are exactly those of ``webdataset.TarWriter(fh, user="surgcorpus", group="surgcorpus", mode=0o444,
    mtime=TAR_MTIME, encoder=False)`` (a stream-mode ``tarfile`` in the default format, each sample's members
    sorted by extension, ``<key>.<ext>`` names; ``tests/test_shard_tar.py`` compares them), written with the
    standard library: importing webdataset imports torch, about 2.5 s of CPU in every shard worker.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    with open(tmp, "wb") as fh, tarfile.open(fileobj=fh, mode="w|") as tar:
        for s in samples:
            for ext, value in sorted(s.members):
                info = tarfile.TarInfo(f"{s.key}.{ext}")
                info.mtime, info.mode, info.uname, info.gname = TAR_MTIME, TAR_MODE, TAR_OWNER, TAR_OWNER
                if isinstance(value, bytes):
                    info.size = len(value)
                    tar.addfile(info, io.BytesIO(value))
                else:
                    with open(value, "rb") as member:
                        info.size = os.fstat(member.fileno()).st_size
                        tar.addfile(info, member)
    index = []
    with tarfile.open(tmp) as tar:
        for info in tar.getmembers():
            key, ext = info.name.split(".", 1)
            index.append({"key": key, "member": info.name, "offset": info.offset_data, "bytes": info.size, "ext": ext})
    os.replace(tmp, path)
    return index


def plan_shards(samples: list[tuple[Sample, int]], max_samples: int, max_bytes: int) -> list[list[Sample]]:
    """Pack (sample, size) pairs, in order, into shards that respect both limits (a sample is never split)."""
    shards: list[list[Sample]] = []
    current: list[Sample] = []
    size = 0
    for sample, nbytes in samples:
        if current and (len(current) >= max_samples or size + nbytes > max_bytes):
            shards.append(current)
            current, size = [], 0
        current.append(sample)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def clip_sample(build_dir: Path, clip: dict) -> tuple[Sample, int]:
    """The sample of one clip row: the media members plus a .json with its metadata."""
    meta = {k: clip.get(k) for k in METADATA_FIELDS}
    media = build_dir / clip["path"]
    if clip["format"] == "mp4":
        members: list[tuple[str, str | bytes]] = [("mp4", str(media))]
    else:
        members = [(f"{p.stem}.jpg", str(p)) for p in sorted(media.glob("*.jpg"))]
    members.append(("json", json.dumps(meta, sort_keys=True).encode()))
    return Sample(clip["key"], tuple(members), stable_hash(meta, clip["sha256"])), int(clip["bytes"] or 0)


def shard_name(corpus: str, split: str, index: int) -> str:
    return f"{SHARDS_DIR}/{split}/{corpus}-{split}-{index:06d}.tar"


class ShardStage(Stage):
    """One unit per shard: write its tar from its samples' members; the rows are its index entries.

    A shard whose samples are unchanged (keys and fingerprints) and whose tar is still there with its recorded size
    is skipped by the executor, like any finished unit.
    """

    name: ClassVar[str] = "shard"
    requires: ClassVar[tuple[str, ...]] = ("shard", "samples", "bytes")

    def __init__(self, build_dir: str | Path) -> None:
        self.build_dir = str(build_dir)

    def unit_id(self, row: dict) -> str:
        return row["shard"]

    def fingerprint(self, row: dict) -> str:
        return hashlib.sha256("".join(s.key + s.fingerprint for s in row["samples"]).encode()).hexdigest()

    def cost(self, row: dict) -> float:
        return float(row["bytes"])

    def process(self, row: dict) -> UnitResult:
        index = write_shard(Path(self.build_dir) / row["shard"], row["samples"])
        return UnitResult(rows=[{**e, "shard": row["shard"]} for e in index], files=[row["shard"]])


def write_series(
    build_dir: Path,
    series: list[tuple[str, str, list[tuple[Sample, int]]]],
    max_samples: int,
    max_bytes: int,
    executor: Executor | None = None,
) -> list[dict]:
    """The one shard writer: pack each series' (sample, size) pairs, in the given order, into
    ``<folder>/<prefix>-%06d.tar`` (``series``: (folder, prefix, samples) triples), and write the tars as
    :class:`ShardStage` units on ``executor`` (default: in this process).

    Shards of a series left from an earlier, larger build are removed (they would be read as data). Returns one
    index row per tar member: ``key, shard, member, offset, bytes, ext``, in series and shard order.
    """
    from builders.executors.local import LocalExecutor

    units: list[dict] = []
    for folder, prefix, samples in series:
        names = []
        size_of = {s.key: n for s, n in samples}
        for i, group in enumerate(plan_shards(samples, max_samples, max_bytes)):
            name = f"{folder}/{prefix}-{i:06d}.tar"
            names.append(name)
            units.append({"shard": name, "samples": tuple(group), "bytes": sum(size_of[s.key] for s in group)})
        keep = {Path(n).name for n in names}
        if (build_dir / folder).exists():
            for stale in (build_dir / folder).glob(f"{prefix}-*.tar"):
                if stale.name not in keep:
                    stale.unlink()
    own = executor is None
    executor = executor or LocalExecutor(1, show_progress=False)
    try:
        out = executor.run(str(build_dir), ShardStage(build_dir), units)
    finally:
        if own:
            executor.close()
    order = {u["shard"]: i for i, u in enumerate(units)}
    return sorted(out.rows, key=lambda r: (order[r["shard"]], r["offset"]))


def corpus_series(build_dir: Path, corpus: str, split: str, clips: list[dict]) -> tuple[str, str, list]:
    """The shard series of one split of a corpus: its clips' samples sorted by clip id (keys checked unique)."""
    ordered = sorted(clips, key=lambda c: c["clip_id"])
    key_of = {c["clip_id"]: c["key"] for c in ordered}
    check_unique(key_of, key_of.__getitem__, f"shard keys of split {split!r}")  # never one sample over another
    return f"{SHARDS_DIR}/{split}", f"{corpus}-{split}", [clip_sample(build_dir, c) for c in ordered]
