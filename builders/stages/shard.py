"""shard: WebDataset tars per split, byte-identical across rebuilds, plus a shard index.

Samples are packed, in the clips table's order (video id, then time), into
``shards/<split>/<corpus>-<split>-%06d.tar`` until ``max_samples`` or ``max_bytes``; each sample is ``<key>.mp4``
(or ``<key>.NNN.jpg`` frames) plus ``<key>.json`` with the clip's metadata. Tar members carry a fixed mtime, owner
and mode; every tar is written under a temp name and renamed. Each shard is one unit of :class:`ShardStage` on the
build's executor, so shards are written in parallel by the workers and resume like every other stage. The driver
only plans them, streaming: a shard's member list is written as a plan part the moment the shard is full, and its
unit carries the part's path, never the samples.

Layout and additions: each split's shards are filled in video-id order, so an added video whose id sorts after its
split's existing videos (the usual case: datasets number their videos; also a new source whose name sorts last)
changes only that split's last shard; one that sorts in the middle rewrites its split's shards from its position
on. The other splits' shards stay byte-identical (adding a video never moves another video's split).
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

import pyarrow as pa
import pyarrow.parquet as pq

from builders.stages.base import Stage, UnitResult, stable_hash
from corpus.atomic import temp_sibling
from corpus.parts import part_relpath, write_part
from corpus.schemas import SHARDS

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


# The member list of one planned shard (a Parquet part per shard): units carry its path, never the samples.
SHARD_PLAN = pa.schema(
    [
        ("key", pa.string()),
        ("clip_id", pa.string()),
        ("split", pa.string()),
        ("members", pa.list_(pa.struct([("ext", pa.string()), ("path", pa.string()), ("data", pa.binary())]))),
        ("fingerprint", pa.string()),
    ]
)
PLAN_STAGE = "shard-plan"


class ShardPlanner:
    """Pack one series' samples, in the order added, into ``<folder>/<prefix>-%06d.tar`` shards that respect both
    limits (a sample is never split). Each full shard's member list is written at once as a plan part, so planning
    a corpus holds one shard's samples at a time; ``finish()`` returns the :class:`ShardStage` units.
    """

    def __init__(self, build_dir: str | Path, folder: str, prefix: str, max_samples: int, max_bytes: int) -> None:
        self.build_dir, self.folder, self.prefix = Path(build_dir), folder, prefix
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.units: list[dict] = []
        self._rows: list[dict] = []
        self._bytes = 0
        self._digest = hashlib.sha256()

    @property
    def current(self) -> str:
        """The name of the shard the next sample goes to (if it fits)."""
        return f"{self.folder}/{self.prefix}-{len(self.units):06d}.tar"

    def add(self, sample: Sample, nbytes: int, clip_id: str | None = None, split: str | None = None) -> str:
        """Plan ``sample`` (``nbytes`` of media); returns the shard it goes to."""
        if self._rows and (len(self._rows) >= self.max_samples or self._bytes + nbytes > self.max_bytes):
            self._close()
        members = [
            {"ext": ext, "path": None, "data": v} if isinstance(v, bytes) else {"ext": ext, "path": v, "data": None}
            for ext, v in sample.members
        ]
        self._rows.append(
            {
                "key": sample.key,
                "clip_id": clip_id,
                "split": split,
                "members": members,
                "fingerprint": sample.fingerprint,
            }
        )
        self._bytes += nbytes
        self._digest.update((sample.key + sample.fingerprint).encode())
        return self.current

    def _close(self) -> None:
        name = self.current
        plan = part_relpath(PLAN_STAGE, "plan", name)
        write_part(self.build_dir / plan, self._rows, SHARD_PLAN)
        unit = {"shard": name, "plan": plan, "fingerprint": self._digest.hexdigest(), "bytes": self._bytes}
        self.units.append(unit)
        self._rows, self._bytes, self._digest = [], 0, hashlib.sha256()

    def finish(self) -> list[dict]:
        """Close the last shard, remove this series' shards left from an earlier, larger build (they would be read
        as data), and return the units."""
        if self._rows:
            self._close()
        keep = {Path(u["shard"]).name for u in self.units}
        if (self.build_dir / self.folder).exists():
            for stale in (self.build_dir / self.folder).glob(f"{self.prefix}-*.tar"):
                if stale.name not in keep:
                    stale.unlink()
        return self.units


def read_plan(path: str | Path) -> list[tuple[Sample, dict]]:
    """A plan part's samples, each with its row (``clip_id``, ``split``)."""
    out = []
    for r in pq.read_table(path).to_pylist():
        members = tuple((m["ext"], m["data"] if m["path"] is None else m["path"]) for m in r["members"])
        out.append((Sample(r["key"], members, r["fingerprint"]), r))
    return out


class ShardStage(Stage):
    """One unit per shard: write its tar from the members its plan part lists; the rows are its index entries
    (the ``shards`` table, written as a part per shard).

    A shard whose samples are unchanged (keys and fingerprints) and whose tar is still there with its recorded size
    is skipped by the executor, like any finished unit.
    """

    name: ClassVar[str] = "shard"
    requires: ClassVar[tuple[str, ...]] = ("shard", "plan", "fingerprint", "bytes")
    outputs: ClassVar = {"shards": (SHARDS, ("offset",))}

    def __init__(self, build_dir: str | Path) -> None:
        self.build_dir = str(build_dir)

    def unit_id(self, row: dict) -> str:
        return row["shard"]

    def fingerprint(self, row: dict) -> str:
        return row["fingerprint"]

    def cost(self, row: dict) -> float:
        return float(row["bytes"])

    def process(self, row: dict) -> UnitResult:
        planned = read_plan(Path(self.build_dir) / row["plan"])
        info = {s.key: r for s, r in planned}
        index = write_shard(Path(self.build_dir) / row["shard"], [s for s, _ in planned])
        rows = [
            {
                "clip_id": info[e["key"]]["clip_id"],
                "key": e["key"],
                "split": info[e["key"]]["split"],
                "shard": row["shard"],
                "member": e["member"],
                "offset": e["offset"],
                "bytes": e["bytes"],
            }
            for e in index
        ]
        return UnitResult(rows=rows, files=[row["shard"]])


def write_series(
    build_dir: Path,
    series: list[tuple[str, str, list[tuple[Sample, int]]]],
    max_samples: int,
    max_bytes: int,
    executor: Executor | None = None,
) -> list[dict]:
    """Pack each series' (sample, size) pairs, in the given order, into ``<folder>/<prefix>-%06d.tar``
    (``series``: (folder, prefix, samples) triples) with :class:`ShardPlanner`, and write the tars as
    :class:`ShardStage` units on ``executor`` (default: in this process). For small series (benchmark cuts, the
    hierarchy); the corpus build streams its clips through :class:`ShardPlanner` itself.

    Returns one index row per tar member (``corpus.schemas.SHARDS``), in series and shard order.
    """
    from builders.executors.local import LocalExecutor

    units: list[dict] = []
    for folder, prefix, samples in series:
        planner = ShardPlanner(build_dir, folder, prefix, max_samples, max_bytes)
        for sample, nbytes in samples:
            planner.add(sample, nbytes)
        units += planner.finish()
    own = executor is None
    executor = executor or LocalExecutor(1, show_progress=False)
    try:
        out = executor.run(str(build_dir), ShardStage(build_dir), units)
    finally:
        if own:
            executor.close()
    order = {u["shard"]: i for i, u in enumerate(units)}
    return sorted(out.read(build_dir, "shards").to_pylist(), key=lambda r: (order[r["shard"]], r["offset"]))
