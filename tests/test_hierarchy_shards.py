"""Hierarchical shards from generated videos: every level, matching keys, byte-identical rebuilds, task exports."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import ffmpeg
import pytest
import webdataset as wds
from PIL import Image

from builders.hierarchy_shards import ShardSettings, write_hierarchy_shards
from corpus.hierarchy.build import load_hierarchy
from corpus.hierarchy.exports import export_task
from corpus.schemas import read_rows, table_path

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from builders.hierarchy_demo import make_demo_hierarchy

    return make_demo_hierarchy(tmp_path_factory.mktemp("demo") / "opensurgery")


def _read(build: Path, level: str) -> list[dict]:
    tars = sorted(str(p) for p in (build / "shards" / level).glob("*/*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))


def _digests(build: Path) -> dict[str, str]:
    return {
        str(p.relative_to(build)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((build / "shards").rglob("*.tar"))
    }


def test_demo_tables_and_split(demo):
    h = load_hierarchy(demo)
    assert len(h.videos) == 6 and len({v["surgery_type"] for v in h.videos}) == 3
    assert sorted(v["split"] for v in h.videos) == ["test", "test", "train", "train", "train", "train"]
    assert len(h.operations) == 22 and len(h.frames) == 44
    assert read_rows(demo, "errors") == []


def test_every_level_has_samples_with_matching_keys(demo):
    h = load_hierarchy(demo)
    split = {v["video_id"]: v["split"] for v in h.videos}
    videos, ops, frames = _read(demo, "video"), _read(demo, "operation"), _read(demo, "frame")
    assert sorted(s["__key__"] for s in videos) == sorted(v["key"] for v in h.videos)
    assert sorted(s["__key__"] for s in ops) == sorted(o["key"] for o in h.operations)
    assert sorted(s["__key__"] for s in frames) == sorted(f["key"] for f in h.frames.to_pylist())
    video_keys = {s["__key__"] for s in videos}
    for s in ops + frames:
        assert "." not in s["__key__"]
        assert s["__key__"].split("__op-")[0].split("__t-")[0] in video_keys
    for level in ("video", "operation", "frame"):
        for tar in (demo / "shards" / level).glob("*/*.tar"):
            assert tar.name.startswith(f"opensurgery-{level}-{tar.parent.name}-")
            for s in wds.WebDataset(str(tar), shardshuffle=False):
                assert json.loads(s["json"])["split"] == tar.parent.name == split[json.loads(s["json"])["video_id"]]


def test_video_samples(demo):
    h = load_hierarchy(demo)
    for s in _read(demo, "video"):
        meta = json.loads(s["json"])
        jpgs = sorted(k for k in s if k.endswith(".jpg"))
        assert jpgs == [f"{i:03d}.jpg" for i in range(8)]
        assert Image.open(io.BytesIO(s["000.jpg"])).size == (160, 120)
        vops = sorted((o for o in h.operations if o["video_id"] == meta["video_id"]), key=lambda o: o["index"])
        assert [o["text"] for o in meta["operations"]] == [o["text"] for o in vops]
        assert s["txt"].decode() == next(v["description"] for v in h.videos if v["key"] == s["__key__"])
        same = [
            v["key"]
            for v in h.videos
            if v["surgery_type"] == meta["surgery_type"] and v["split"] == meta["split"] and v["key"] != s["__key__"]
        ]
        assert meta["hard_negatives"]["same_surgery_type_videos"] == sorted(same)
        assert meta["frame_times_s"][0] < meta["frame_times_s"][-1] < meta["duration_s"]


def test_operation_samples(demo, tmp_path):
    h = load_hierarchy(demo)
    table = {o["key"]: o for o in h.operations}
    for s in _read(demo, "operation"):
        meta, row = json.loads(s["json"]), table[s["__key__"]]
        assert s["txt"].decode() == row["text"] == meta["text"]
        assert meta["order"]["index"] == row["index"]
        neighbours = {o["index"]: o for o in h.operations if o["video_id"] == row["video_id"]}
        assert (meta["prev"] or {}).get("text") == (neighbours.get(row["index"] - 1) or {}).get("text")
        assert (meta["next"] or {}).get("text") == (neighbours.get(row["index"] + 1) or {}).get("text")
        assert s["__key__"] not in meta["hard_negatives"]["same_video_operations"]
        clip = tmp_path / f"{s['__key__']}.mp4"
        clip.write_bytes(s["mp4"])
        duration = float(ffmpeg.probe(str(clip))["format"]["duration"])
        assert abs(duration - (row["end_s"] - row["start_s"])) <= 2 / 10 + 1e-6  # two frames at 10 fps


def test_frame_samples_and_shard_index(demo):
    h = load_hierarchy(demo)
    table = {f["key"]: f for f in h.frames.to_pylist()}
    for s in _read(demo, "frame"):
        meta = json.loads(s["json"])
        assert s["txt"].decode() == table[s["__key__"]]["caption"] == meta["caption"]
        assert meta["operation_key"].endswith(f"__op-{table[s['__key__']]['op_index']:03d}")
        assert Image.open(io.BytesIO(s["jpg"])).size == (160, 120)
    index = read_rows(demo, "hier_shards") if table_path(demo, "hier_shards").exists() else []
    assert len(index) == 6 + 22 + 44
    for row in index:
        assert (demo / row["shard"]).is_file() and f"{row['key']}.json" in row["members"]


def test_rebuild_is_byte_identical_and_missing_media_is_an_error(demo, tmp_path):
    before = _digests(demo)
    write_hierarchy_shards(demo, settings=ShardSettings(size=None, n_frames=8))
    assert _digests(demo) == before

    copy = tmp_path / "copy"
    shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("shards", "catalog.duckdb"))
    media = copy / "media"
    gone = media / "os-003.mp4"
    gone.unlink()
    # videos without a usable path fall back to <media>/<video-key>.mp4
    import pyarrow.parquet as pq

    videos = pq.read_table(table_path(copy, "hier_videos")).to_pylist()
    for v in videos:
        v["path"] = None
    from corpus.hierarchy.schemas import write_hier_table

    write_hier_table(copy, "hier_videos", videos)
    for p in media.glob("*.mp4"):
        p.rename(media / f"opensurgery__{p.name}")
    counts = write_hierarchy_shards(copy, media=media, settings=ShardSettings(size=96, n_frames=4))
    assert sum(n for k, n in counts.items() if k.startswith("video/")) == 5
    [err] = read_rows(copy, "errors")
    assert err["kind"] == "missing_file" and err["video_id"] == "opensurgery/os-003"
    s = _read(copy, "video")[0]
    assert len([k for k in s if k.endswith(".jpg")]) == 4
    assert min(Image.open(io.BytesIO(s["000.jpg"])).size) == 96


def test_task_exports(demo, tmp_path):
    h = load_hierarchy(demo)
    tal = json.loads(export_task(demo, "tal", tmp_path / "tal.json").read_text())
    assert set(tal["database"]) == {v["video_id"] for v in h.videos}
    assert {d["subset"] for d in tal["database"].values()} == {"training", "testing"}
    assert sum(len(d["annotations"]) for d in tal["database"].values()) == len(h.operations)
    assert len(tal["taxonomy"]) == len({o["label"] for o in h.operations})

    pairs = [
        json.loads(line) for line in export_task(demo, "retrieval", tmp_path / "r.jsonl").read_text().splitlines()
    ]
    levels = {lvl: [p for p in pairs if p["level"] == lvl] for lvl in ("video", "operation", "frame")}
    assert [len(levels[k]) for k in ("video", "operation", "frame")] == [6, 22, 44]
    assert {p["key"] for p in levels["operation"]} == {o["key"] for o in h.operations}

    with export_task(demo, "recognition", tmp_path / "rec.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 22
    ids = {r["label"]: r["label_id"] for r in rows}
    assert sorted(ids, key=lambda k: int(ids[k])) == sorted(ids)


def test_cli_import_split_shard_export(tmp_path):
    from typer.testing import CliRunner

    from cli.hierarchy import app

    media = tmp_path / "media" / "os"
    media.mkdir(parents=True)
    for name, pattern in (("a", "testsrc2"), ("b", "smptebars"), ("c", "testsrc")):
        ffmpeg.input(f"{pattern}=size=96x64:rate=8:duration=3", f="lavfi").output(
            str(media / f"{name}.mp4"), vcodec="libx264", pix_fmt="yuv420p"
        ).global_args("-loglevel", "error", "-y").run()
    (tmp_path / "v.csv").write_text(
        "video_id,title,url,duration_s,surgery_type\nos/a,A,u,3,x\nos/b,B,u,3,x\nos/c,C,u,3,y\n"
    )
    (tmp_path / "o.csv").write_text(
        "video_id,start_s,end_s,label,text\nos/a,0,1.5,cut,first\nos/a,1.5,3,sew,second\n"
        "os/b,2,1,cut,backwards\nos/c,0,2,cut,only\n"
    )
    (tmp_path / "f.csv").write_text("video_id,t_s,label,caption\nos/a,1,cut,a frame\nos/c,2.5,,late frame\n")
    b = str(tmp_path / "b")
    runner = CliRunner()
    steps = [
        [
            "import",
            "--videos",
            str(tmp_path / "v.csv"),
            "--operations",
            str(tmp_path / "o.csv"),
            "--frames",
            str(tmp_path / "f.csv"),
            "--out",
            b,
        ],
        ["split", "--build", b, "--test-fraction", "0.34"],
        ["shard", "--build", b, "--media", str(tmp_path / "media"), "--size", "0", "--n-frames", "3"],
        ["export", "--build", b, "--task", "recognition", "--out", str(tmp_path / "rec.csv")],
    ]
    outputs = []
    for args in steps:
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
        outputs.append(res.output)
    assert "3 operations, 2 frames, 1 error rows" in outputs[0]
    assert len(_read(tmp_path / "b", "operation")) == 3 and len(_read(tmp_path / "b", "frame")) == 2
    assert len((tmp_path / "rec.csv").read_text().splitlines()) == 4


def test_manifest_route_plans_the_demo_media_with_matching_ids(demo, tmp_path):
    import yaml

    from corpus.manifest import load_manifest

    repo = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((repo / "manifests" / "opensurgery.yaml").read_text())
    assert load_manifest(repo / "manifests" / "opensurgery.yaml").sources[0].domain == "open"
    data["sources"][0]["root"] = str(demo / "media")
    (tmp_path / "opensurgery.yaml").write_text(yaml.safe_dump(data))
    manifest = load_manifest(tmp_path / "opensurgery.yaml")
    from corpus.resolve import plan_videos

    plan, errors = plan_videos(manifest)
    assert not errors
    assert sorted(r["video_id"] for r in plan) == sorted(v["video_id"] for v in load_hierarchy(demo).videos)
