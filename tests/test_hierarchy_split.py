"""The fixed EVAL split: exact test size, stratified by surgery type, deterministic, groups kept together."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.hierarchy.build import import_hierarchy, load_hierarchy, split_hierarchy
from corpus.hierarchy.split import read_groups
from corpus.schemas import DEDUP
from corpus.splits import stratified_split


def _eval_videos() -> list[dict]:
    """400 videos over 21 surgery types of uneven sizes (like OpenSurgery-EVAL), a few near-duplicate groups."""
    sizes = [60, 45, 40, 33, 30, 25, 22, 20, 18, 16, 15, 14, 12, 11, 10, 9, 7, 5, 4, 3, 1]
    assert sum(sizes) == 400
    videos = []
    for t, n in enumerate(sizes):
        for i in range(n):
            videos.append({"video_id": f"os/t{t:02d}-v{i:03d}", "surgery_type": f"type-{t:02d}"})
    return videos


def test_split_is_exactly_120_of_400_and_stratified():
    videos = _eval_videos()
    split = stratified_split(videos, test_fraction=0.3, seed=0)
    assert Counter(split.values()) == {"train": 280, "test": 120}
    per_type = defaultdict(Counter)
    for v in videos:
        per_type[v["surgery_type"]][split[v["video_id"]]] += 1
    for t, c in per_type.items():
        n = c["train"] + c["test"]
        assert math.floor(0.3 * n) <= c["test"] <= math.ceil(0.3 * n), (t, c)


def test_split_is_deterministic_and_seeded():
    videos = _eval_videos()
    a = stratified_split(videos, test_fraction=0.3, seed=0)
    assert a == stratified_split(list(reversed(videos)), test_fraction=0.3, seed=0)
    b = stratified_split(videos, test_fraction=0.3, seed=1)
    assert a != b and Counter(b.values()) == Counter(a.values())


def test_near_duplicate_groups_stay_together():
    videos = _eval_videos()
    groups = {}
    for v in videos[:60:3]:  # groups of 3 consecutive videos of the first type
        i = videos.index(v)
        for w in videos[i : i + 3]:
            groups[w["video_id"]] = f"dup-{i}"
    videos[100]["group_id"] = videos[101]["group_id"] = "patient-7"
    for seed in range(5):
        split = stratified_split(videos, test_fraction=0.3, seed=seed, groups=groups)
        sides = defaultdict(set)
        for vid, g in groups.items():
            sides[g].add(split[vid])
        assert all(len(s) == 1 for s in sides.values())
        assert split[videos[100]["video_id"]] == split[videos[101]["video_id"]]
        assert 110 <= Counter(split.values())["test"] <= 130


def test_read_groups_from_csv_dedup_and_videos_tables(tmp_path):
    csv = tmp_path / "g.csv"
    csv.write_text("video_id,group\nos/a,g1\nos/b,g1\nos/c,\n")
    assert read_groups(csv) == {"os/a": "g1", "os/b": "g1"}
    dedup = pa.table(
        {
            "level": ["video", "video", "clip"],
            "cluster_id": ["os/a", "os/a", "os/x/1"],
            "member_id": ["os/a", "os/b", "os/x/2"],
            "video_id": ["os/a", "os/b", "os/x"],
            "is_representative": [True, False, False],
            "kind": ["unique-representative", "near", "near"],
            "distance": [0.0, 3.0, 1.0],
            "offset_s": [0.0, 0.0, 0.0],
        },
        schema=DEDUP,
    )
    pq.write_table(dedup, tmp_path / "dedup.parquet")
    assert read_groups(tmp_path / "dedup.parquet") == {"os/a": "os/a", "os/b": "os/a"}
    pq.write_table(pa.table({"video_id": ["os/a", "os/b"], "dup_of": [None, "os/a"]}), tmp_path / "videos.parquet")
    assert read_groups(tmp_path / "videos.parquet") == {"os/b": "os/a"}


def test_split_column_on_every_level(tmp_path):
    lines = ["video_id,title,url,duration_s,surgery_type"]
    ops = ["video_id,start_s,end_s,label,text"]
    frames = ["video_id,t_s,label,caption"]
    for i in range(10):
        lines.append(f"os/v{i},V{i},https://x/{i},20,{'thyroidectomy' if i < 6 else 'appendectomy'}")
        ops += [f"os/v{i},0,10,incision,cut", f"os/v{i},10,20,closure,close"]
        frames.append(f"os/v{i},5,incision,knife")
    paths = []
    for name, rows in (("v.csv", lines), ("o.csv", ops), ("f.csv", frames)):
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        paths.append(tmp_path / name)
    import_hierarchy(tmp_path / "b", *paths)
    groups = {"os/v0": "g", "os/v1": "g"}
    counts = split_hierarchy(tmp_path / "b", test_fraction=0.3, seed=3, groups=groups)
    assert sum(counts.values()) == 10 and counts["test"] in (2, 3, 4)
    h = load_hierarchy(tmp_path / "b")
    split = {v["video_id"]: v["split"] for v in h.videos}
    assert split["os/v0"] == split["os/v1"]
    assert {v["group_id"] for v in h.videos if v["video_id"] in groups} == {"g"}
    assert all(o["split"] == split[o["video_id"]] for o in h.operations)
    assert all(f["split"] == split[f["video_id"]] for f in h.frames.to_pylist())
    assert len(h.operations) == 20 and len(h.frames) == 10


def test_bad_fraction_is_rejected():
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([{"video_id": "a"}], test_fraction=1.0)


def test_split_cli_runs(tmp_path):
    from typer.testing import CliRunner

    from cli.hierarchy import app

    (tmp_path / "v.csv").write_text(
        "video_id,title,url,duration_s,surgery_type\n"
        + "".join(f"os/v{i},t,u,10,{'a' if i % 2 else 'b'}\n" for i in range(10))
    )
    runner = CliRunner()
    res = runner.invoke(app, ["import", "--videos", str(tmp_path / "v.csv"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["split", "--build", str(tmp_path / "b"), "--test-fraction", "0.3", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert "test 3, train 7 videos" in res.output
    assert Counter(v["split"] for v in load_hierarchy(Path(tmp_path / "b")).videos) == {"train": 7, "test": 3}
