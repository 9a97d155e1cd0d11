"""Hierarchical shards: per-video resume (skip unchanged videos, redo changed ones, same bytes) and per-sample
failures (a damaged or short media file loses only the operations/frames ffmpeg cannot produce)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from builders.hierarchy_shards import CACHE_DIR, ShardSettings, write_hierarchy_shards
from corpus.hierarchy.build import load_hierarchy
from corpus.hierarchy.schemas import write_hier_table
from corpus.schemas import read_rows, table_path
from corpus.testing import count_frames, make_video

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
SETTINGS = ShardSettings(size=None, n_frames=8)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from builders.hierarchy_demo import make_demo_hierarchy

    return make_demo_hierarchy(tmp_path_factory.mktemp("demo") / "opensurgery")


def _digests(build: Path) -> dict[str, str]:
    return {
        str(p.relative_to(build)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((build / "shards").rglob("*.tar"))
    }


def _cache_stamps(build: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in sorted((build / CACHE_DIR).glob("*.tar"))}


def _copy(demo: Path, dest: Path) -> Path:
    shutil.copytree(demo, dest)
    # media paths in the tables are absolute: point them at the copy's media
    videos = pq.read_table(table_path(dest, "hier_videos")).to_pylist()
    for v in videos:
        v["path"] = str(dest / "media" / Path(v["path"]).name)
    write_hier_table(dest, "hier_videos", videos)
    return dest


def _keys(build: Path, level: str) -> list[str]:
    tars = sorted(str(p) for p in (build / "shards" / level).glob("*/*.tar"))
    return [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False, empty_check=False)]


def test_resume_skips_unchanged_videos_and_redoes_changed_ones(demo, tmp_path):
    build = _copy(demo, tmp_path / "b")
    write_hierarchy_shards(build, settings=SETTINGS)
    shards, stamps = _digests(build), _cache_stamps(build)
    assert len(stamps) == 6

    write_hierarchy_shards(build, settings=SETTINGS)  # nothing changed: no video is decoded again
    assert _cache_stamps(build) == stamps and _digests(build) == shards

    media = build / "media" / "os-002.mp4"
    os.utime(media, ns=(media.stat().st_atime_ns, media.stat().st_mtime_ns + 10**9))  # input changed
    (build / CACHE_DIR / "opensurgery__os-004.tar").unlink()  # output gone
    ops = pq.read_table(table_path(build, "operations")).to_pylist()
    for o in ops:  # annotation times changed
        if o["video_id"] == "opensurgery/os-005" and o["index"] == 1:
            o["end_s"] -= 0.5
    write_hier_table(build, "operations", ops)
    write_hierarchy_shards(build, settings=SETTINGS)
    now = _cache_stamps(build)
    redone = sorted(k for k in now if now[k] != stamps.get(k))
    assert redone == ["opensurgery__os-002", "opensurgery__os-004", "opensurgery__os-005"]

    # a fresh build of the same tables and media gives the same bytes as the resumed one
    fresh = tmp_path / "fresh"
    shutil.copytree(build, fresh, ignore=shutil.ignore_patterns("shards", "cache", "_state", "catalog.duckdb"))
    write_hierarchy_shards(fresh, settings=SETTINGS, workers=2)  # worker processes: same bytes
    assert _digests(fresh) == _digests(build)
    changed = {k for k, d in _digests(build).items() if shards.get(k) != d}
    # os-005's shortened operation changes operation and video samples; redecoded os-002/os-004 give the same bytes
    assert changed and not any(k.startswith("shards/frame/") for k in changed)

    write_hierarchy_shards(build, settings=ShardSettings(size=None, n_frames=4))  # media settings: all redone
    assert all(_cache_stamps(build)[k] != now[k] for k in now)


def test_damaged_media_loses_only_the_samples_ffmpeg_cannot_make(demo, tmp_path):
    build = _copy(demo, tmp_path / "b")
    media = build / "media"
    # os-001: a download cut in half (moov first, so it opens; the second half of the frames is missing)
    full = tmp_path / "faststart.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media / "os-001.mp4"), "-c", "copy", "-movflags", "+faststart"]
        + [str(full)],
        check=True,
    )
    data = full.read_bytes()
    (media / "os-001.mp4").write_bytes(data[: len(data) // 2])
    # os-002: the media is 3 s long while the annotation says 7 s
    make_video(media / "os-002.mp4", 3, source="smptebars=size=160x120:rate=10")

    write_hierarchy_shards(build, settings=SETTINGS)
    h = load_hierarchy(build)
    errors = [e for e in read_rows(build, "errors") if e["stage"] == "hierarchy-shard"]
    assert {e["video_id"] for e in errors} == {"opensurgery/os-001", "opensurgery/os-002"}
    ops, frames = _keys(build, "operation"), _keys(build, "frame")

    short = [e for e in errors if e["video_id"] == "opensurgery/os-002"]
    assert sorted((e["kind"], e["clip_id"]) for e in short if "__op-" in (e["clip_id"] or "")) == [
        ("outside_media", "opensurgery__os-002__op-002"),
        ("outside_media", "opensurgery__os-002__op-003"),
    ]
    late = sorted(f["key"] for f in h.frames.to_pylist() if f["video_id"] == "opensurgery/os-002" and f["t_s"] > 3.5)
    assert sorted(e["clip_id"] for e in short if e["kind"] == "outside_media" and "__t-" in e["clip_id"]) == late
    assert [k for k in ops if "os-002" in k] == ["opensurgery__os-002__op-000", "opensurgery__os-002__op-001"]
    assert "opensurgery__os-002" in _keys(build, "video")

    cut = [e for e in errors if e["video_id"] == "opensurgery/os-001"]
    failed_ops = {e["clip_id"] for e in cut if "__op-" in (e["clip_id"] or "")}
    all_ops = {o["key"] for o in h.operations if o["video_id"] == "opensurgery/os-001"}
    written_ops = {k for k in ops if k.startswith("opensurgery__os-001__")}
    assert failed_ops and written_ops and failed_ops | written_ops == all_ops and not failed_ops & written_ops
    for e in cut:
        assert "opensurgery/os-001" in e["message"] and e["clip_id"] in e["message"]
    assert "opensurgery__os-001" not in _keys(build, "video")  # its late frames are missing: no video sample
    for s in wds.WebDataset(
        sorted(str(p) for p in (build / "shards" / "operation").glob("*/*.tar")), shardshuffle=False
    ):
        if s["__key__"] in written_ops:  # what was written decodes
            clip = tmp_path / "clip.mp4"
            clip.write_bytes(s["mp4"])
            assert count_frames(clip) > 0
    others = [o["key"] for o in h.operations if o["video_id"] not in ("opensurgery/os-001", "opensurgery/os-002")]
    assert set(others) <= set(ops)
    assert len(frames) + sum(e["clip_id"] is not None and "__t-" in e["clip_id"] for e in errors) == len(h.frames)
