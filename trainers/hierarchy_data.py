"""Batches for hierarchical video-text training, read from a hierarchy build dir (``surgcorpus hierarchy shard``).

:class:`HierarchyIndex` reads ``tables/hier_shards.parquet`` and indexes the members of every tar of one split
(offsets from the tar headers, ``tarfile``), so samples are read by key without streaming whole shards. It loads each
sample's ``.json`` and ``.txt`` up front (small) and keeps the hard-negative metadata the shards carry:

- **video**: the description (else title) and the ordered operation texts (``operations`` in the ``.json``);
- **operation**: its text, and ``hard_negatives.same_surgery_type_videos``: the operations of those videos (same
  surgery type, another video, same split) are its hard negative texts, minus any whose text equals its own (a
  negative must not be a paraphrase-free copy of the positive);
- **frame**: its caption (frames without a caption have no text to pair and are left out; ``skipped`` counts them).

:class:`HierarchyStream` mixes the levels in every batch in a configured ratio (``level_counts``): level ``l`` walks
its own endless sequence of epochs (a seeded permutation per pass), and batch ``g`` of a rank takes the next
``counts[l]`` items of each level. Every random draw (permutations, frame crops, the hard negative picked, the
shuffled order) comes from ``(seed, epoch, batch, rank)``, so ``set_position(epoch, batch)`` resumes exactly.

A batch::

    {"video_frames": (Bv, 3, F, S, S), "video_text": [str], "video_ops": [[str]], "video_ops_neg": [[str]],
     "video_neg_valid": (Bv,) bool, "video_keys": [str],
     "operation_clip": (Bo, 3, T, S, S), "operation_text": [str], "operation_neg_text": [str],
     "operation_neg_valid": (Bo,) bool, "operation_keys": [str],
     "frame_image": (Bf, 3, 1, S, S), "frame_text": [str], "frame_keys": [str]}

``video_ops_neg`` is the same video's operation texts reversed or shuffled (never equal to the true order; a video
with one operation, or whose texts read the same in every order, has ``video_neg_valid`` False).
"""

from __future__ import annotations

import json
import math
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corpus.errors import DecodeError, MissingInput
from corpus.hierarchy.schemas import read_hier_table
from trainers.config import DataConfig
from trainers.data import augment, batch_seed, decode_mp4_decord, decode_mp4_ffmpeg, make_loader

LEVELS = ("video", "operation", "frame")


@dataclass
class HierSample:
    level: str
    key: str
    video_id: str
    meta: dict[str, Any]
    text: str | None
    members: dict[str, tuple[Path, int, int]] = field(repr=False)  # extension -> (tar, offset, size)

    def read(self, ext: str) -> bytes:
        tar, offset, size = self.members[ext]
        with open(tar, "rb") as f:
            f.seek(offset)
            return f.read(size)


def _tar_members(path: Path) -> dict[str, dict[str, tuple[Path, int, int]]]:
    """sample key -> {extension: (tar, data offset, size)} from the tar's headers."""
    out: dict[str, dict[str, tuple[Path, int, int]]] = defaultdict(dict)
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    key, _, ext = info.name.partition(".")
                    out[key][ext] = (path, info.offset_data, info.size)
    except (OSError, tarfile.TarError) as e:
        raise MissingInput(f"{path}: not a readable hierarchy shard: {e}") from e
    return out


class HierarchyIndex:
    """Every sample of one split of a hierarchy build, by level; see the module docstring."""

    def __init__(self, build_dir: str | Path, split: str = "train") -> None:
        self.build_dir, self.split = Path(build_dir), split
        rows = [r for r in read_hier_table(self.build_dir, "hier_shards") if r["split"] == split]
        if not rows:
            raise MissingInput(
                f"{self.build_dir}/tables/hier_shards.parquet: no hierarchy shards for split {split!r} "
                "(run surgcorpus hierarchy shard)"
            )
        members: dict[str, dict[str, tuple[Path, int, int]]] = {}
        for shard in sorted({r["shard"] for r in rows}):
            members.update(_tar_members(self.build_dir / shard))
        self.samples: dict[str, list[HierSample]] = {level: [] for level in LEVELS}
        self.skipped: dict[str, int] = defaultdict(int)
        for r in sorted(rows, key=lambda r: (r["level"], r["key"])):
            got = members.get(r["key"])
            if got is None or "json" not in got:
                raise MissingInput(
                    f"{self.build_dir / r['shard']}: sample {r['key']} listed in hier_shards is missing"
                )
            sample = HierSample(r["level"], r["key"], r["video_id"], {}, None, got)
            sample.meta = json.loads(sample.read("json"))
            sample.text = sample.read("txt").decode() if "txt" in got else None
            if not sample.text:
                self.skipped[f"{r['level']}: no text"] += 1
                continue
            self.samples[r["level"]].append(sample)
        ops = self.samples["operation"]
        self.op_text = {s.key: s.text for s in ops}
        self.ops_of_video: dict[str, list[str]] = defaultdict(list)
        for s in sorted(ops, key=lambda s: (s.meta["video_key"], s.meta["index"])):
            self.ops_of_video[s.meta["video_key"]].append(s.key)

    def counts(self) -> dict[str, int]:
        return {level: len(s) for level, s in self.samples.items()}

    def operation_negatives(self, sample: HierSample) -> list[str]:
        """Texts of operations from other videos of the same surgery type (same split), unequal to its own text."""
        videos = sample.meta.get("hard_negatives", {}).get("same_surgery_type_videos", [])
        texts = {self.op_text[k] for v in videos if v != sample.meta["video_key"] for k in self.ops_of_video[v]}
        return sorted(t for t in texts if t != sample.text)

    @staticmethod
    def ordered_operation_texts(sample: HierSample) -> list[str]:
        """A video sample's operation texts in temporal order (``operations`` of its ``.json``)."""
        ops = sorted(sample.meta.get("operations", []), key=lambda o: o["index"])
        return [o.get("text") or o.get("label") or "" for o in ops]


def wrong_order(texts: list[str], gen: torch.Generator) -> list[str] | None:
    """The texts reversed or shuffled (a coin flip), never in the true order; None when no order differs."""
    n = len(texts)
    if n < 2 or len(set(texts)) < 2:
        return None
    if float(torch.rand(1, generator=gen)) < 0.5:
        candidates = [texts[::-1]]
    else:
        candidates = [[texts[i] for i in torch.randperm(n, generator=gen).tolist()] for _ in range(8)]
    candidates.append(texts[1:] + texts[:1])  # a rotation always differs when two texts differ
    return next(c for c in candidates if c != texts)


def level_counts(batch_size: int, ratio: dict[str, float]) -> dict[str, int]:
    """Samples per level in a batch of ``batch_size``: proportional to ``ratio`` (largest remainder, ties in level
    order), at least 2 for every level with a positive ratio (a contrastive loss needs a negative)."""
    active = [level for level in LEVELS if ratio.get(level, 0) > 0]
    if not active:
        raise ValueError(f"level ratio {ratio}: at least one of {', '.join(LEVELS)} must be positive")
    if batch_size < 2 * len(active):
        raise ValueError(f"batch size {batch_size} is too small for levels {active}: need 2 samples per level")
    total = sum(ratio[level] for level in active)
    exact = {level: batch_size * ratio[level] / total for level in active}
    counts = {level: max(2, math.floor(exact[level])) for level in active}
    while sum(counts.values()) > batch_size:  # the minimum of 2 overshot: take from the largest
        counts[max(active, key=lambda lv: (counts[lv], -active.index(lv)))] -= 1
    for level in sorted(active, key=lambda lv: (-(exact[lv] - math.floor(exact[lv])), active.index(lv))):
        if sum(counts.values()) == batch_size:
            break
        counts[level] += 1
    while sum(counts.values()) < batch_size:
        counts[active[0]] += 1
    return {level: counts.get(level, 0) for level in LEVELS}


class HierarchyStream(torch.utils.data.IterableDataset):
    """Mixed-level batches for one rank; see the module docstring. Give :meth:`loader` to the training loop."""

    def __init__(
        self,
        build_dir: str | Path,
        cfg: DataConfig,
        *,
        ratio: dict[str, float],
        num_frames: int,
        image_size: int,
        video_frames: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.index = HierarchyIndex(build_dir, cfg.split)
        self.cfg, self.num_frames, self.image_size = cfg, num_frames, image_size
        self.video_frames, self.seed, self.rank, self.world_size = video_frames, seed, rank, world_size
        self.counts = level_counts(cfg.batch_size, ratio)
        have = self.index.counts()
        for level, n in self.counts.items():
            if n and have[level] < 2:
                raise MissingInput(
                    f"{self.index.build_dir}: split {cfg.split!r} has {have[level]} {level} samples with text; "
                    f"the {level} level needs at least 2 (or set its ratio to 0)"
                )
        per_batch = {lv: n * world_size for lv, n in self.counts.items() if n}
        wanted = cfg.samples_per_epoch
        # an epoch: samples_per_epoch, else one pass over the largest level (in its share of the batches)
        passes = max(-(-have[lv] // c) for lv, c in per_batch.items())
        self.batches_per_epoch = max(1, wanted // (cfg.batch_size * world_size) if wanted else passes)
        self.epoch, self.skip = 0, 0
        self._perms: dict[tuple[str, int], list[int]] = {}

    def set_position(self, epoch: int, batch: int = 0) -> None:
        """Start the next iteration at batch ``batch`` of epoch ``epoch`` (call before creating the iterator)."""
        self.epoch, self.skip = epoch, batch

    def loader(self, pin_memory: bool = False) -> torch.utils.data.DataLoader:
        return make_loader(self, self.cfg, pin_memory)

    def _items(self, level: str, g: int) -> list[HierSample]:
        """Level ``level``'s samples in global batch ``g`` for this rank: positions of its endless permuted stream."""
        pool, n = self.index.samples[level], self.counts[level]
        start = (g * self.world_size + self.rank) * n
        out = []
        for pos in range(start, start + n):
            cycle, i = divmod(pos, len(pool))
            if (level, cycle) not in self._perms:
                gen = torch.Generator().manual_seed(batch_seed(self.seed, LEVELS.index(level), cycle))
                self._perms[(level, cycle)] = torch.randperm(len(pool), generator=gen).tolist()
            out.append(pool[self._perms[(level, cycle)][i]])
        return out

    def _frames(self, s: HierSample, count: int, gen: torch.Generator) -> torch.Tensor:
        import cv2

        names = sorted(k for k in s.members if k.endswith("jpg"))
        if not names:
            raise DecodeError(f"{s.members['json'][0]}: sample {s.key} has no .jpg frames")
        picks = np.linspace(0, len(names) - 1, count).round().astype(int)
        frames = []
        for name in (names[i] for i in picks):
            img = cv2.imdecode(np.frombuffer(s.read(name), np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise DecodeError(f"{s.members[name][0]}: sample {s.key}: {name} is not a readable JPEG")
            frames.append(img[..., ::-1])
        return augment(np.stack(frames), self.image_size, self.cfg, gen)

    def _clip(self, s: HierSample, gen: torch.Generator) -> torch.Tensor:
        decode = decode_mp4_decord if self.cfg.decoder == "decord" else decode_mp4_ffmpeg

        def spread(n: int) -> np.ndarray:  # the whole operation, evenly
            return np.linspace(0, max(n - 1, 0), self.num_frames).round().astype(int)

        frames = decode(s.read("mp4"), spread, f"{s.members['mp4'][0]}: sample {s.key}")
        return augment(frames, self.image_size, self.cfg, gen)

    def samples_for(self, epoch: int, b: int) -> dict[str, list[HierSample]]:
        """The samples of batch ``b`` of epoch ``epoch`` for this rank, by level (nothing decoded)."""
        g = epoch * self.batches_per_epoch + b
        return {level: self._items(level, g) if self.counts[level] else [] for level in LEVELS}

    def batch(self, epoch: int, b: int) -> dict[str, Any]:
        """Batch ``b`` of epoch ``epoch`` for this rank (a pure function of the position and the seed)."""
        gen = torch.Generator().manual_seed(batch_seed(self.seed, epoch, b, self.rank, 7))
        out: dict[str, Any] = {}
        picked = self.samples_for(epoch, b)
        videos, ops, frames = picked["video"], picked["operation"], picked["frame"]
        size = self.image_size
        out["video_frames"] = (
            torch.stack([self._frames(s, self.video_frames, gen) for s in videos])
            if videos
            else torch.zeros(0, 3, self.video_frames, size, size)
        )
        out["video_text"] = [s.text for s in videos]
        out["video_ops"] = [self.index.ordered_operation_texts(s) for s in videos]
        negs = [wrong_order(t, gen) for t in out["video_ops"]]
        out["video_ops_neg"] = [n if n is not None else t for n, t in zip(negs, out["video_ops"], strict=True)]
        out["video_neg_valid"] = torch.tensor([n is not None for n in negs], dtype=torch.bool)
        out["video_keys"] = [s.key for s in videos]
        out["operation_clip"] = (
            torch.stack([self._clip(s, gen) for s in ops]) if ops else torch.zeros(0, 3, self.num_frames, size, size)
        )
        out["operation_text"] = [s.text for s in ops]
        neg_text, neg_valid = [], []
        for s in ops:
            pool = self.index.operation_negatives(s)
            neg_text.append(pool[int(torch.randint(len(pool), (1,), generator=gen))] if pool else "")
            neg_valid.append(bool(pool))
        out["operation_neg_text"], out["operation_neg_valid"] = neg_text, torch.tensor(neg_valid, dtype=torch.bool)
        out["operation_keys"] = [s.key for s in ops]
        out["frame_image"] = (
            torch.stack([self._frames(s, 1, gen) for s in frames]) if frames else torch.zeros(0, 3, 1, size, size)
        )
        out["frame_text"] = [s.text for s in frames]
        out["frame_keys"] = [s.key for s in frames]
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the DataLoader takes batches from its workers in turn, starting with worker 0: worker w makes skip + w, ...
        for b in range(self.skip + worker, self.batches_per_epoch, n_workers):
            yield self.batch(self.epoch, b)
