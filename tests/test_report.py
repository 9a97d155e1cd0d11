"""The HTML build report: a tiny fake build dir (real tables, real ffmpeg clips) in, a static page with images out."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from corpus.report import write_report
from corpus.schemas import write_rows

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_MESSAGES = [
    "moov atom not found in clips/a.mp4",
    "checksum mismatch: expected 'ab12' & got \"cd34\" <sha256>",
]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def _mp4(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=2", "-pix_fmt", "yuv420p", str(path))
    return path


def _video(
    vid: str, split: str, path: str, duration_s: float, width: int = 64, height: int = 64, dup_of: str | None = None
) -> dict:
    source = vid.split("/")[0]
    domain = {"src_a": "laparoscopy", "src_b": "cataract"}[source]
    return dict(
        video_id=vid, source=source, domain=domain, native_id=vid.split("/")[1], uri=f"file://{path}", path=path,
        width=width, height=height, fps=10.0, duration_s=duration_s, n_frames=int(duration_s * 10), split=split,
        dup_of=dup_of,
    )  # fmt: skip


def _clip(vid: str, split: str, path: str, fmt: str = "mp4") -> dict:
    return dict(
        clip_id=f"{vid}/000000000", video_id=vid, source=vid.split("/")[0], split=split, start_s=0.0, end_s=2.0,
        n_frames=20, fps=10.0, width=64, height=64, format=fmt, path=path, shard=f"c-{split}-000000.tar",
    )  # fmt: skip


def _dup(cluster: str, member: str, rep: bool, kind: str, distance: float) -> dict:
    return dict(
        level="video", cluster_id=cluster, member_id=member, video_id=member, is_representative=rep, kind=kind,
        distance=distance, offset_s=0.0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """Two sources, five videos over three splits, two dedup clusters, two errors, two mp4 clips + one jpg clip.

    Cluster ``src_a/v1``: a/v1 (rep, mp4 clip), b/v1 (exact, mp4 clip), a/v2 (near, jpg-frames clip).
    Cluster ``src_b/v2``: b/v2 (rep, no clip: thumbnail from its source video), a/v3 (near, unreadable source video).
    """
    root = tmp_path_factory.mktemp("build") / "surg-build"
    _mp4(root / "clips/src_a-v1/000000000.mp4")
    clip_b = _mp4(root / "clips/src_b-v1/000000000.mp4")
    frames = root / "clips/src_a-v2/000000000"
    frames.mkdir(parents=True)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=0.3", str(frames / "%06d.jpg"))
    garbage = root.parent / "raw/a-v3.mp4"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a video at all" * 10)

    write_rows(root, "sources", [
        dict(source="src_a", domain="laparoscopy", n_videos=3),
        dict(source="src_b", domain="cataract", n_videos=2),
    ])  # fmt: skip
    write_rows(root, "videos", [
        _video("src_a/v1", "train", "/nonexistent/a1.mp4", 3600.0),
        _video("src_a/v2", "val", "/nonexistent/a2.mp4", 1800.0, dup_of="src_a/v1"),
        _video("src_a/v3", "test", str(garbage), 900.0, 1920, 1080, dup_of="src_b/v2"),
        _video("src_b/v1", "train", "/nonexistent/b1.mp4", 60.0, dup_of="src_a/v1"),
        _video("src_b/v2", "test", str(clip_b), 2.0),  # the source video file is a real mp4
    ])  # fmt: skip
    write_rows(root, "clips", [
        _clip("src_a/v1", "train", "clips/src_a-v1/000000000.mp4"),
        _clip("src_a/v2", "val", "clips/src_a-v2/000000000", fmt="jpg"),
        _clip("src_b/v1", "train", "clips/src_b-v1/000000000.mp4"),
    ])  # fmt: skip
    write_rows(root, "dedup", [
        _dup("src_a/v1", "src_a/v1", True, "exact", 0.0),
        _dup("src_a/v1", "src_b/v1", False, "exact", 0.0),
        _dup("src_a/v1", "src_a/v2", False, "near", 3.0),
        _dup("src_b/v2", "src_b/v2", True, "near", 0.0),
        _dup("src_b/v2", "src_a/v3", False, "near", 5.0),
        _dup("src_b/v9", "src_b/v9", True, "unique-representative", 0.0),
    ])  # fmt: skip
    write_rows(root, "errors", [
        dict(stage="probe", video_id="src_a/v4", uri="file:///a4.mp4", kind="unreadable", message=ERROR_MESSAGES[0]),
        dict(stage="fetch", video_id="src_b/v3", uri="https://x/b3.mp4", kind="checksum_mismatch",
             message=ERROR_MESSAGES[1]),
    ])  # fmt: skip
    write_rows(root, "shards", [
        dict(clip_id="src_a/v1/000000000", split="train", shard="c-train-000000.tar"),
        dict(clip_id="src_b/v1/000000000", split="train", shard="c-train-000000.tar"),
        dict(clip_id="src_a/v2/000000000", split="val", shard="c-val-000000.tar"),
    ])  # fmt: skip
    (root / "build.lock").write_text(json.dumps({"manifest_name": "tiny-corpus", "manifest_sha256": "00"}))
    return root


@pytest.fixture(scope="module")
def page(build: Path) -> tuple[Path, str]:
    out = write_report(build)
    return out, out.read_text(encoding="utf-8")


def _summary_value(text: str, label: str) -> str:
    m = re.search(rf"<tr><th>{re.escape(label)}</th><td class=\"num\">([^<]*)</td></tr>", text)
    assert m, f"no summary row {label!r}"
    return m.group(1)


def _thumb_of(text: str, member: str) -> str | None:
    m = re.search(rf'<img class="thumb" src="img/([^"]+)" alt="{re.escape(html.escape(member))}">', text)
    return m.group(1) if m else None


def test_page_written_with_name_sources_errors_and_members(build: Path, page: tuple[Path, str]) -> None:
    out, text = page
    assert out == build / "report" / "index.html" and out.is_file()
    assert "<h1>tiny-corpus</h1>" in text
    for source in ("src_a", "src_b", "laparoscopy", "cataract"):
        assert f"<td>{source}</td>" in text
    for msg in ERROR_MESSAGES:
        assert html.escape(msg) in text
    assert "<sha256>" not in text
    dedup = text[text.index("<h2>Duplicate clusters</h2>") : text.index("<h2>Errors</h2>")]
    for member in ("src_a/v1", "src_b/v1", "src_a/v2", "src_b/v2", "src_a/v3"):
        assert '<div class="member' in dedup and f">{member}<br>" in dedup
    assert "2 clusters with more than one member" in text
    assert "src_b/v9" not in text  # a single-member cluster is no duplicate


def test_summary_and_per_source_counts(page: tuple[Path, str]) -> None:
    _, text = page
    assert _summary_value(text, "sources") == "2"
    assert _summary_value(text, "videos") == "5"
    assert _summary_value(text, "hours of video") == f"{(3600 + 1800 + 900 + 60 + 2) / 3600:,.2f}"
    assert _summary_value(text, "source frames") == f"{(3600 + 1800 + 900 + 60 + 2) * 10:,}"
    assert _summary_value(text, "clips") == "3"
    assert _summary_value(text, "clips in train") == "2"
    assert _summary_value(text, "clips in val") == "1"
    assert _summary_value(text, "shards") == "2"
    assert _summary_value(text, "errors") == "2"
    assert _summary_value(text, "duplicate videos") == "3"
    # source, domain, videos, hours, frames, clips, videos in train/val/test, duplicates, errors
    cells = ["src_a", "laparoscopy", "3", "1.75", "63,000", "2", "1", "1", "1", "2", "1"]
    row = "".join(f"<td>{c}</td>" if i < 2 else f'<td class="num">{c}</td>' for i, c in enumerate(cells))
    assert row in text
    cells = ["src_b", "cataract", "2", "0.02", "620", "1", "1", "0", "1", "1", "1"]
    row = "".join(f"<td>{c}</td>" if i < 2 else f'<td class="num">{c}</td>' for i, c in enumerate(cells))
    assert row in text
    assert '<td>probe</td><td class="num">1</td>' in text and "<td>checksum_mismatch</td>" in text


def test_plots_are_valid_png_files(page: tuple[Path, str]) -> None:
    out, text = page
    pngs = re.findall(r'<img class="plot" src="(img/[^"]+\.png)"', text)
    assert len(pngs) == 5  # composition by source and by domain, clips per split, durations, resolutions
    for rel in pngs:
        data = (out.parent / rel).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
        with Image.open(out.parent / rel) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100


def test_thumbnails_from_clip_mp4_jpg_frames_and_source_video(page: tuple[Path, str]) -> None:
    out, text = page
    for member in ("src_a/v1", "src_b/v1", "src_a/v2", "src_b/v2"):
        name = _thumb_of(text, member)
        assert name, f"no thumbnail for {member}"
        path = out.parent / "img" / name
        assert path.read_bytes()[:2] == b"\xff\xd8"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (160, 160)  # 64x64 scaled to 160 wide
    # a/v3 has no clip and its source file is not a video: a placeholder, not a crash
    assert _thumb_of(text, "src_a/v3") is None
    assert text.count(">no thumbnail</div>") == 1
    blocks = re.findall(r'<div class="cluster">.*?</div></div>', text, flags=re.S)
    assert len(blocks) == 2
    first = blocks[0]
    assert first.index("src_a/v1") < first.index("src_a/v2") < first.index("src_b/v1")  # representative first
    assert "exact, near" in first and "near, distance 3" in first


def test_rerun_is_identical_and_custom_out_keeps_images_beside_page(build: Path, page: tuple, tmp_path: Path) -> None:
    out, text = page
    images = {p.name: p.read_bytes() for p in (out.parent / "img").iterdir()}
    (out.parent / "img" / "thumb-stale-0000.jpg").write_bytes(b"old")
    assert write_report(build).read_text(encoding="utf-8") == text
    assert {p.name: p.read_bytes() for p in (out.parent / "img").iterdir()} == images
    copy = write_report(build, tmp_path / "elsewhere" / "r.html")
    for rel in re.findall(r'src="(img/[^"]+)"', copy.read_text(encoding="utf-8")):
        assert (copy.parent / rel).is_file()


def test_script_values_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    write_rows(tmp_path, "sources", [dict(source=evil, domain=evil)])
    write_rows(tmp_path, "errors", [dict(stage=evil, video_id=f"{evil}/1", uri=evil, kind=evil, message=evil)])
    write_rows(tmp_path, "dedup", [_dup(evil, evil, True, "exact", 0.0), _dup(evil, "x/y", False, "exact", 1.0)])
    (tmp_path / "build.lock").write_text(json.dumps({"manifest_name": evil}))
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<script" not in text
    assert html.escape(evil) in text
    assert f"<h1>{html.escape(evil)}</h1>" in text


def test_empty_build_dir_says_nothing_yet(tmp_path: Path) -> None:
    build = tmp_path / "fresh-build"
    build.mkdir()
    out = write_report(build)
    text = out.read_text(encoding="utf-8")
    assert "<h1>fresh-build</h1>" in text  # no build.lock: the folder's name
    assert "Nothing built yet" in text
    for table in ("videos", "clips", "dedup", "errors"):
        assert f"The {table} table has not been written yet" in text
    assert "<img" not in text
    assert list((out.parent / "img").iterdir()) == []


def test_empty_tables_say_empty(tmp_path: Path) -> None:
    for name in ("sources", "videos", "clips", "dedup", "errors", "shards"):
        write_rows(tmp_path, name, [])
    (tmp_path / "build.lock").write_text("{not json")
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert f"<h1>{tmp_path.name}</h1>" in text  # unreadable build.lock: the folder's name
    assert "Nothing built yet" in text
    assert "The errors table is empty" in text and "The dedup table is empty" in text


def test_missing_build_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-build"):
        write_report(tmp_path / "no-such-build")
