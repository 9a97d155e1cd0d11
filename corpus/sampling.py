"""A weighted, deterministic streaming sampler over a build's WebDataset shards, for the trainers.

Samples are drawn from groups (``by="source"``, ``"domain"`` or ``"cluster"``: the top level of the balance
clusters) with the groups' probabilities, and inside a group in proportion to each clip's ``weight`` from
``tables/clip_balance.parquet`` (uniform when the build was not balanced). Clips with weight 0 (not selected,
leaked) never appear.

How the weights survive shards and workers: every group has its own shard list (from ``tables/shards.parquet``; a
shard holding several groups is in each list, and each group's stream keeps only its own keys). Every
DataLoader worker (on every rank) runs all group streams and mixes them itself with the group probabilities, so the
mixture holds in each worker, not only on average. A group with at least as many shards as worker slots
(``world_size * num_workers``) splits its shards across the slots (one seeded permutation shared by all slots,
per pass); a group with fewer splits its keys by a stable hash, so no slot reads a sample another slot reads.
Inside a stream a clip is kept with probability ``weight / max weight of its group`` (rejection sampling before
any decoding). Streams cycle, so an epoch is ``samples_per_epoch`` samples, split over the slots.

Determinism: the sequence of each slot depends only on ``(seed, epoch, rank, worker)``; call ``set_epoch`` before
each epoch (before the DataLoader iterator is created, so that the workers get it). webdataset's ``RandomMix``
draws from the process-global ``random`` module, so the mixing here uses a seeded ``numpy`` generator instead.

Trainer use::

    from corpus.sampling import sampler_from_build
    ds = sampler_from_build("build/surgrec", split="train", by="source", seed=0, samples_per_epoch=100_000)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=8)  # raw samples: __key__, mp4, json
    for epoch in range(n_epochs):
        ds.set_epoch(epoch)
        for sample in loader:  # decode sample["mp4"] (decord), batch, train
            ...

Yielded samples are webdataset's raw dicts (``__key__``, ``__url__``, ``mp4``, ``json`` bytes); add decoding
and batching after the sampler (e.g. ``wds.DataPipeline(ds, wds.decode(...), wds.batched(...))``).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import webdataset as wds

from corpus.errors import MissingInput
from corpus.schemas import table_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupStream:
    """One group's share of the mixture: its shards and, per sample key, the probability of keeping it."""

    name: str
    prob: float
    shards: tuple[str, ...]
    accept: dict[str, float]


def _slot_of(key: str, n_slots: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n_slots


class WeightedShardSampler(torch.utils.data.IterableDataset):
    """Mix group streams with fixed probabilities, deterministically per ``(seed, epoch, rank, worker)``."""

    def __init__(
        self,
        groups: list[GroupStream],
        samples_per_epoch: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 0,
    ) -> None:
        groups = [g for g in groups if g.prob > 0]
        if not groups:
            raise ValueError("no group with positive probability to sample from")
        total = sum(g.prob for g in groups)
        self.groups = [GroupStream(g.name, g.prob / total, g.shards, g.accept) for g in groups]
        self.samples_per_epoch = samples_per_epoch
        self.seed, self.epoch, self.shuffle_buffer = seed, epoch, shuffle_buffer
        self.unbalanced = 0  # clips added after the last balance run (see ``sampler_from_build``)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def probs(self) -> dict[str, float]:
        return {g.name: g.prob for g in self.groups}

    def _stream(self, gi: int, slot: int, n_slots: int, rng: np.random.Generator) -> Iterator[dict]:
        g = self.groups[gi]
        split_shards = len(g.shards) >= n_slots
        keys = g.accept
        if not split_shards:
            mine = {k: a for k, a in g.accept.items() if _slot_of(k, n_slots) == slot}
            keys = mine or g.accept  # a group smaller than the slot count is read by every slot
        n_pass = 0
        while True:
            shared = np.random.default_rng([self.seed, self.epoch, gi, n_pass])  # same on every slot
            order = [g.shards[i] for i in shared.permutation(len(g.shards))]
            shards = order[slot::n_slots] if split_shards else order
            seen = 0
            for sample in wds.tariterators.tarfile_samples([{"url": u} for u in shards]):
                a = keys.get(sample["__key__"])
                if a is None:
                    continue
                seen += 1
                if a >= 1.0 or rng.random() < a:
                    yield sample
            if seen == 0:
                raise MissingInput(f"group {g.name!r}: none of its keys found in shards {list(shards)[:3]}...")
            n_pass += 1

    def __iter__(self) -> Iterator[dict]:
        rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
        n_slots, slot = world_size * num_workers, rank * num_workers + worker
        n = self.samples_per_epoch // n_slots + (1 if slot < self.samples_per_epoch % n_slots else 0)
        mix_rng = np.random.default_rng([self.seed, self.epoch, slot, 1 << 20])
        streams = [
            self._stream(i, slot, n_slots, np.random.default_rng([self.seed, self.epoch, slot, i]))
            for i in range(len(self.groups))
        ]
        probs = np.array([g.prob for g in self.groups])
        picks = mix_rng.choice(len(streams), size=n, p=probs)

        def mixed() -> Iterator[dict]:
            for i in picks:
                yield next(streams[i])

        if self.shuffle_buffer > 0:
            rng = random.Random(f"{self.seed}/{self.epoch}/{slot}")
            yield from wds.filters._shuffle(mixed(), self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)
        else:
            yield from mixed()


def sampler_from_build(
    build_dir: str | Path,
    split: str = "train",
    *,
    by: str = "source",
    group_weights: dict[str, float] | None = None,
    seed: int = 0,
    epoch: int = 0,
    samples_per_epoch: int | None = None,
    shuffle_buffer: int = 0,
    unbalanced: str = "error",
) -> WeightedShardSampler:
    """A sampler over ``split``'s shards. Group probabilities: ``group_weights`` when given (relative values per
    group name), else the summed clip weights of each group. ``samples_per_epoch`` defaults to the clips with
    positive weight.

    Clips added to the build after ``surgcorpus balance`` ran have no weight. ``unbalanced`` says what to do with
    them: ``"error"`` (default) stops with their count and the fix (re-run balance); ``"include"`` samples them
    at their group's median weight (with ``by="cluster"`` they have no cluster and are left out); ``"exclude"``
    leaves them out. The count is in ``sampler.unbalanced``.
    """
    build_dir = Path(build_dir)
    if unbalanced not in ("error", "include", "exclude"):
        raise ValueError(f"unbalanced must be error, include or exclude, got {unbalanced!r}")
    if by not in ("source", "domain", "cluster"):
        raise ValueError(f"by must be source, domain or cluster, got {by!r}")
    for name in ("shards", "clips"):
        if not table_path(build_dir, name).exists():
            raise MissingInput(f"{table_path(build_dir, name)}: missing; build and shard the corpus first")
    shards = pq.read_table(table_path(build_dir, "shards"), columns=["clip_id", "key", "split", "shard"]).to_pylist()
    shards = list({r["clip_id"]: r for r in shards if r["split"] == split}.values())  # the index has a row per member
    clip_rows = pq.read_table(table_path(build_dir, "clips"), columns=["clip_id", "source", "domain"]).to_pylist()
    clips = {r["clip_id"]: r for r in clip_rows}
    bal_path = table_path(build_dir, "clip_balance")
    weight: dict[str, float] = {}
    top: dict[str, str] = {}
    if bal_path.exists():
        for r in pq.read_table(bal_path, columns=["clip_id", "weight", "cluster"]).to_pylist():
            weight[r["clip_id"]] = r["weight"]
            top[r["clip_id"]] = (r["cluster"] or "").split("/")[0]
    elif by == "cluster":
        raise MissingInput(f"{bal_path}: by='cluster' needs a balance run (surgcorpus balance)")
    new = [r for r in shards if weight and r["clip_id"] not in weight]
    if new and unbalanced == "error":
        raise MissingInput(
            f"{bal_path}: {len(new)} clip(s) of split {split!r} were added after the last balance run and have no "
            f"weight (e.g. {new[0]['clip_id']}); re-run `surgcorpus balance --build {build_dir}`, or pass "
            "unbalanced='include' (group median weight) or 'exclude'"
        )
    if new:
        log.warning("%d clip(s) added after the last balance run: %sd", len(new), unbalanced)
    members: dict[str, list[tuple[str, str, float]]] = {}
    pending: list[tuple[str, dict]] = []
    for r in shards:
        clip = clips.get(r["clip_id"])
        if clip is None:
            raise MissingInput(f"{table_path(build_dir, 'shards')}: clip {r['clip_id']} is not in the clips table")
        if weight and r["clip_id"] not in weight:
            if unbalanced == "include" and by != "cluster":
                pending.append((clip[by], r))
            continue
        w = weight.get(r["clip_id"], 0.0) if weight else 1.0
        if w <= 0:
            continue
        group = top[r["clip_id"]] if by == "cluster" else clip[by]
        members.setdefault(group, []).append((r["key"], _shard_path(build_dir, split, r["shard"]), w))
    for group, r in pending:  # new clips join their group at its median weight (1.0 for a new group)
        w = float(np.median([w for _, _, w in members[group]])) if group in members else 1.0
        members.setdefault(group, []).append((r["key"], _shard_path(build_dir, split, r["shard"]), w))
    if not members:
        raise MissingInput(f"{build_dir}: no clip with positive weight in split {split!r}")
    groups = []
    for name in sorted(members):
        rows = members[name]
        w_max = max(w for _, _, w in rows)
        prob = sum(w for _, _, w in rows) if group_weights is None else float(group_weights.get(name, 0.0))
        groups.append(
            GroupStream(name, prob, tuple(sorted({s for _, s, _ in rows})), {k: w / w_max for k, _, w in rows})
        )
    n = samples_per_epoch if samples_per_epoch is not None else sum(len(v) for v in members.values())
    sampler = WeightedShardSampler(groups, n, seed=seed, epoch=epoch, shuffle_buffer=shuffle_buffer)
    sampler.unbalanced = len(new)
    return sampler


def _shard_path(build_dir: Path, split: str, shard: str) -> str:
    """A shard path from the index: absolute, relative to the build dir, or a bare name under shards/<split>/."""
    p = Path(shard)
    for cand in [p] if p.is_absolute() else [build_dir / p, build_dir / "shards" / split / p]:
        if cand.exists():
            return str(cand)
    raise MissingInput(f"{table_path(build_dir, 'shards')}: shard {shard!r} of split {split!r} not found")
