"""The weighted shard sampler honours source and clip weights through a DataLoader with 2 workers.

Corpus: source A has 60 clips over 3 shards, B 12 and C 12 clips sharing a fourth shard with A's remainder (so the
B/C streams are split by key across workers, A's by shard). Target: A 0.5, B 0.25, C 0.25 of the samples
(before weighting A is 60/84 = 71%); inside A, clips A00-A29 weigh twice as much as A30-A59. Tolerance: 3
percentage points per source over 4000 samples (about 4 standard deviations); A's heavy/light ratio within 2 +- 0.35.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import webdataset as wds

from corpus.balance import CLIP_BALANCE
from corpus.ids import sample_key
from corpus.sampling import sampler_from_build
from corpus.schemas import table_path, write_rows, write_table


def make_sharded_corpus(build: Path, mp4: bytes) -> None:
    clips, index, balance = [], [], []
    layout = {f"A/v/{i:09d}": i // 20 for i in range(60)}  # shards 0, 1, 2
    layout |= {f"{s}/v/{i:09d}": 3 for s in "BC" for i in range(12)}
    layout |= {f"A/w/{i:09d}": 3 for i in range(4)}  # A clips outside the selection (weight 0) in shard 3
    by_shard: dict[int, list[str]] = {}
    for cid, shard in layout.items():
        by_shard.setdefault(shard, []).append(cid)
    (build / "shards/train").mkdir(parents=True)
    for shard, cids in sorted(by_shard.items()):
        name = f"toy-train-{shard:06d}.tar"
        with wds.TarWriter(str(build / "shards/train" / name), mtime=0) as tw:
            for cid in sorted(cids):
                source = cid.split("/")[0]
                meta = {"clip_id": cid, "source": source}
                tw.write({"__key__": sample_key(cid), "mp4": mp4, "json": json.dumps(meta).encode()})
                clips.append({"clip_id": cid, "video_id": cid.rsplit("/", 1)[0], "source": source,
                              "domain": "d", "split": "train", "key": sample_key(cid), "shard": name})  # fmt: skip
                index.append({"clip_id": cid, "key": sample_key(cid), "split": "train", "shard": name})
    for cid in layout:
        source, vid, n = cid.split("/")
        if vid == "w":
            w = 0.0
        elif source == "A":
            w = 0.5 * (2 / 90 if int(n) < 30 else 1 / 90)
        else:
            w = 0.25 / 12
        balance.append({"clip_id": cid, "cluster": "0/0", "rank": 0, "balanced": w > 0, "weight": w, "reason": ""})
    write_rows(build, "clips", clips, sort_by=("clip_id",))
    write_rows(build, "shards", index, sort_by=("clip_id",))
    write_table(pa.Table.from_pylist(balance, schema=CLIP_BALANCE), table_path(build, "clip_balance"))


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sampled")
    mp4 = root / "c.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=5", "-t", "1",
                    "-pix_fmt", "yuv420p", str(mp4)], check=True)  # fmt: skip
    make_sharded_corpus(root, mp4.read_bytes())
    return root


def keys_through_loader(ds, workers: int = 2) -> list[str]:
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [s["__key__"] for s in loader]


def test_source_and_clip_weights_hold_over_two_workers(build: Path) -> None:
    ds = sampler_from_build(build, by="source", seed=1, samples_per_epoch=4000)
    assert ds.probs == pytest.approx({"A": 0.5, "B": 0.25, "C": 0.25})
    keys = keys_through_loader(ds)
    assert len(keys) == 4000
    sources = Counter(k.split("__")[0] for k in keys)
    for s, target in {"A": 0.5, "B": 0.25, "C": 0.25}.items():
        assert abs(sources[s] / 4000 - target) <= 0.03, sources
    assert not any(k.startswith("A__w") for k in keys)  # weight 0 never sampled
    heavy = sum(1 for k in keys if k.startswith("A__v") and int(k.split("__")[-1]) < 30)
    light = sources["A"] - heavy
    assert abs(heavy / light - 2.0) <= 0.35, (heavy, light)
    seen = set(keys)
    assert all(f"B__v__{i:09d}" in seen for i in range(12))  # every B clip reached, though B is split by key


def test_same_seed_and_epoch_same_stream_other_epoch_differs(build: Path) -> None:
    ds = sampler_from_build(build, seed=3, samples_per_epoch=300)
    first, again = keys_through_loader(ds), keys_through_loader(ds)
    assert first == again
    ds.set_epoch(1)
    assert keys_through_loader(ds) != first


def test_group_weights_override_and_every_worker_mixes(build: Path) -> None:
    ds = sampler_from_build(build, group_weights={"A": 1, "B": 1, "C": 2}, seed=0, samples_per_epoch=2000)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    per_worker: dict[int, Counter] = {0: Counter(), 1: Counter()}
    for i, s in enumerate(loader):  # the DataLoader alternates workers sample by sample with batch_size=None
        per_worker[i % 2][s["__key__"].split("__")[0]] += 1
    for counts in per_worker.values():
        total = sum(counts.values())
        assert abs(counts["C"] / total - 0.5) <= 0.05 and abs(counts["A"] / total - 0.25) <= 0.05, counts
