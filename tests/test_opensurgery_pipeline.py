"""The OpenSurgery manifest route: the `opensurgery-hierarchy` adapter through a real pipeline build, and the
hierarchy split taking the build's near-duplicate clusters as groups."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from builders.hierarchy_demo import DEMO_VIDEOS, demo_records
from builders.pipeline import build
from corpus.hierarchy.build import import_hierarchy, load_hierarchy, split_hierarchy
from corpus.hierarchy.split import read_groups
from corpus.manifest import load_manifest
from corpus.sources import ADAPTERS
from corpus.splits import stratified_split
from corpus.testing import make_video

REPO = Path(__file__).resolve().parents[1]


def _table(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / "tables" / f"{name}.parquet").to_pylist()


def _demo_media(root: Path) -> Path:
    """The demo hierarchy's media and JSONL, plus os-007: a rescaled, re-encoded copy of os-001 (a near duplicate),
    and one bad operation in os-002 (end before start)."""
    for native, pattern, seconds, _ in DEMO_VIDEOS:
        make_video(root / "media" / f"{native}.mp4", seconds, source=f"{pattern}=size=160x120:rate=10")
    make_video(
        root / "media" / "os-007.mp4",
        8,
        source="testsrc2=size=160x120:rate=10",
        vf="scale=224:168,eq=brightness=0.04",
        codec=("-c:v", "libx264", "-crf", "34", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )
    records = demo_records(root)
    dup = copy.deepcopy(records[0])
    dup.update(video_id="opensurgery/os-007", path="../media/os-007.mp4", title="Re-upload of os-001")
    records.append(dup)
    records[1]["operations"][2]["end_s"] = records[1]["operations"][2]["start_s"] - 1
    (root / "annotations").mkdir()
    jsonl = root / "annotations" / "opensurgery.jsonl"
    jsonl.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return jsonl


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    root = tmp_path_factory.mktemp("os")
    jsonl = _demo_media(root)
    data = yaml.safe_load((REPO / "manifests" / "opensurgery.yaml").read_text())
    data["sources"][0]["root"] = str(root / "media")
    data["clips"].update(size=64, seconds=2)
    (root / "opensurgery.yaml").write_text(yaml.safe_dump(data))
    out = root / "build"
    summary = build(load_manifest(root / "opensurgery.yaml"), out, workers=1, show_progress=False)
    return root, jsonl, out, summary


def test_adapter_is_registered_and_parses_the_documented_format(route):
    _, jsonl, _, _ = route
    parsed = ADAPTERS["opensurgery-hierarchy"].parse(jsonl)
    assert len(parsed.videos) == 7 and parsed.videos[0]["native_id"] == "os-001"
    levels = [s["level"] for s in parsed.segments]
    # 22 demo operations + 4 of os-007, one rejected; 44 + 8 frames; 7 videos
    assert (levels.count("video"), levels.count("operation"), levels.count("frame")) == (7, 25, 52)
    [err] = parsed.errors
    assert err.kind == "end_before_start" and err.video_id == "opensurgery/os-002"
    assert f"{jsonl}:2" in err.message and "operations[2]" in err.message


def test_build_gives_videos_clips_shards_and_attached_segments(route):
    _, jsonl, out, summary = route
    assert summary.videos == 7 and summary.clips > 0 and summary.shards > 0
    assert list((out / "shards").rglob("*.tar"))
    records = {json.loads(line)["video_id"]: json.loads(line) for line in jsonl.read_text().splitlines()}
    segments = _table(out, "segments")
    assert {s["video_id"] for s in segments} == set(records)
    for vid, rec in records.items():
        ops = [s for s in segments if s["video_id"] == vid and s["level"] == "operation"]
        assert all(s["annotation_id"] == vid and s["source"] == "opensurgery" for s in ops)
        want = [(o["label"], o["text"]) for o in rec["operations"] if o["end_s"] > o["start_s"]]
        assert [(s["label"], s["text"]) for s in sorted(ops, key=lambda s: s["start_s"])] == want
        frames = [s for s in segments if s["video_id"] == vid and s["level"] == "frame"]
        assert sorted(s["text"] for s in frames) == sorted(f["caption"] for f in rec["frames"])
        [video] = [s for s in segments if s["video_id"] == vid and s["level"] == "video"]
        assert video["label"] == rec["surgery_type"] and video["end_s"] == rec["duration_s"]
    errors = _table(out, "errors")
    assert [(e["stage"], e["video_id"], e["kind"]) for e in errors] == [
        ("annotate", "opensurgery/os-002", "end_before_start")
    ]


def test_hierarchy_split_keeps_the_build_s_near_duplicates_together(route, tmp_path):
    _, jsonl, out, _ = route
    videos = {v["video_id"]: v for v in _table(out, "videos")}
    assert videos["opensurgery/os-007"]["dup_of"] == "opensurgery/os-001"
    dedup_groups = read_groups(out / "tables" / "dedup.parquet")
    assert dedup_groups["opensurgery/os-007"] == dedup_groups["opensurgery/os-001"]
    assert read_groups(out / "tables" / "videos.parquet")["opensurgery/os-007"] == "opensurgery/os-001"

    hier = tmp_path / "hier"
    import_hierarchy(hier, jsonl)
    plain = load_hierarchy(hier).videos
    # a seed under which the pair would be split apart without groups, so the groups are what keeps them together
    pair = ("opensurgery/os-001", "opensurgery/os-007")
    seed = next(s for s in range(200) if len({stratified_split(plain, seed=s)[v] for v in pair}) == 2)
    from cli.hierarchy import app

    res = CliRunner().invoke(
        app,
        ["split", "--build", str(hier), "--test-fraction", "0.3", "--seed", str(seed)]
        + ["--groups", str(out / "tables" / "dedup.parquet")],
    )
    assert res.exit_code == 0, res.output
    h = load_hierarchy(hier)
    split = {v["video_id"]: v["split"] for v in h.videos}
    assert split["opensurgery/os-001"] == split["opensurgery/os-007"]
    assert sum(s == "test" for s in split.values()) == 2  # round(0.3 * 7)
    group = {v["video_id"]: v["group_id"] for v in h.videos}
    assert group["opensurgery/os-007"] == group["opensurgery/os-001"] == dedup_groups["opensurgery/os-001"]
    assert {o["split"] for o in h.operations if o["video_id"] == "opensurgery/os-007"} == {split["opensurgery/os-001"]}
    # the videos table's dup_of gives the same pairing
    split_hierarchy(hier, test_fraction=0.3, seed=seed, groups=read_groups(out / "tables" / "videos.parquet"))
    split = {v["video_id"]: v["split"] for v in load_hierarchy(hier).videos}
    assert split["opensurgery/os-001"] == split["opensurgery/os-007"]
