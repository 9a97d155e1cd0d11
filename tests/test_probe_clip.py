"""probe and clip stages on real surgical clips and on generated fixtures (real ffmpeg, real files)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from builders.stages.clip import ClipStage, split_clip_rows
from builders.stages.probe import ProbeStage, probe_video
from corpus.errors import EmptyVideo, ProbeError
from corpus.manifest import ClipSpec
from corpus.testing import SCOPE_MASK, count_frames, make_video

DECODER_NAMES = ("ffmpeg", "decord")
DECODERS = pytest.mark.parametrize("decoder", DECODER_NAMES)
CHOLEC = "Moshintha20__CholecT50-Cholec80-Task-Phase-Groupings/dataset/similarity score above 0.975/group 20"


def _row(path, **facts):
    return {
        "video_id": "t/v",
        "source": "t",
        "domain": "laparoscopy",
        "path": str(path),
        "sha256": "0" * 64,
        "uri": str(path),
        **facts,
    }


def test_probe_real_cholect50_clip(real):
    facts = probe_video(str(real / CHOLEC / "VID26_213_and_VID29_2129_a.mp4"))
    assert (facts["codec"], facts["width"], facts["height"], facts["fps"]) == ("h264", 854, 480, 25.0)
    assert facts["n_frames"] == 800 and facts["duration_s"] == pytest.approx(32.0)


def test_probe_real_jigsaws_avi(real):
    facts = probe_video(str(real / "anidhi__homework3_JIGSAWS/JIGSAW/Suturing/video/Suturing_D005_capture2.avi"))
    assert (facts["codec"], facts["n_frames"], facts["width"]) == ("mpeg4", 1792, 640)


def test_empty_262_byte_mp4_is_an_error_row_not_a_crash(real):
    path = real / CHOLEC / "VID47_13_and_VID43_301_b.mp4"
    assert path.stat().st_size == 262
    with pytest.raises(EmptyVideo):
        probe_video(str(path))
    res = ProbeStage().process(_row(path))
    assert res.rows == [] and [e.kind for e in res.errors] == ["zero_frames"] and str(path) in res.errors[0].message


def test_truncated_file_trusts_decoding_over_header(tmp_path):
    full = make_video(
        tmp_path / "full.mp4",
        4,
        codec=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
    )
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    facts = probe_video(str(cut))  # headers only: the clip pass counts
    assert facts["n_frames_header"] == facts["n_frames"] == 100 and not facts["frames_counted"]
    assert ProbeStage().process(_row(cut)).errors == []
    counted = probe_video(str(cut), count="packets")
    assert counted["frames_counted"] and counted["n_frames"] == count_frames(cut) < 100
    res, measured = _cut_measured(tmp_path, cut, ClipSpec(fps=5, size=32, seconds=0.4))
    assert measured["n_frames"] == count_frames(cut) and measured["frames_counted"]
    assert measured["duration_s"] == pytest.approx(count_frames(cut) / 25)
    assert [e.kind for e in res.errors] == ["truncated"] and "cut.mp4" in res.errors[0].message


def _corrupt_last_packets(src, dest, n):
    """Zero the payload of the last ``n`` video packets: the index still lists them, they no longer decode."""
    import json

    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pos,size", "-of", "json", src],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = bytearray(src.read_bytes())
    for p in json.loads(out)["packets"][-n:]:
        pos, size = int(p["pos"]), int(p["size"])
        data[pos : pos + size] = bytes(size)
    dest.write_bytes(data)
    return dest


def test_packets_matching_the_header_that_do_not_decode_are_not_counted(tmp_path):
    good = make_video(tmp_path / "good.mp4", 4)
    bad = _corrupt_last_packets(good, tmp_path / "bad.mp4", 10)
    counted = probe_video(str(bad), count="packets")  # packets agree with the header: the old check trusted it
    assert counted["n_frames_header"] == counted["n_frames"] == 100 and not counted["frames_counted"]
    assert probe_video(str(bad), count="frames")["n_frames"] == count_frames(bad) == 90
    res, measured = _cut_measured(tmp_path, bad, ClipSpec(fps=5, size=32, seconds=1))
    assert (measured["n_frames"], measured["frames_counted"]) == (90, True)
    assert len(res.rows) == 3 and [e.kind for e in res.errors] == ["truncated"]


def test_corrupt_file_raises_probe_error_naming_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(ProbeError, match="bad.mp4"):
        probe_video(str(bad))


def _cut_measured(tmp_path, src, spec):
    """The clip stage's result with clip rows only, and the video facts its pass measured."""
    facts = probe_video(str(src))
    stage = ClipStage(str(tmp_path / "build"), spec)
    stage.setup()
    res = stage.process(_row(src, **facts))
    res.rows, measured = split_clip_rows(res.rows)
    return res, measured.get("t/v")


def _cut(tmp_path, src, spec):
    return _cut_measured(tmp_path, src, spec)[0]


@DECODERS
def test_clips_have_exact_frame_counts_and_times(decoder, tmp_path):
    src = make_video(tmp_path / "v.mp4", 5.0)
    res = _cut(tmp_path, src, ClipSpec(fps=8, size=64, seconds=1, decoder=decoder))
    assert [r["start_s"] for r in res.rows] == [0, 1, 2, 3, 4]
    for r in res.rows:
        assert r["n_frames"] == 8 and r["width"] == r["height"] == 64
        assert count_frames(tmp_path / "build" / r["path"]) == 8
        assert len(r["phash"]) == 4 and r["clip_id"].startswith("t/v/")


@DECODERS
def test_overlapping_stride_and_tail(decoder, tmp_path):
    src = make_video(tmp_path / "v.mp4", 5.0)
    res = _cut(tmp_path, src, ClipSpec(fps=8, size=64, seconds=2, stride=1, decoder=decoder))
    assert [r["start_s"] for r in res.rows] == [0, 1, 2, 3]
    res = _cut(tmp_path, src, ClipSpec(fps=8, size=64, seconds=2, keep_tail=True, decoder=decoder))
    assert [(r["start_s"], r["n_frames"]) for r in res.rows] == [(0, 16), (2, 16), (4, 8)]


@DECODERS
def test_jpg_frames_and_no_crop_keeps_aspect(decoder, tmp_path):
    src = make_video(tmp_path / "v.mp4", 2.0, size="320x180")
    res = _cut(tmp_path, src, ClipSpec(fps=4, size=90, seconds=1, format="jpg", crop="none", decoder=decoder))
    assert len(res.rows) == 2
    frames = sorted((tmp_path / "build" / res.rows[0]["path"]).glob("*.jpg"))
    assert [f.name for f in frames] == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    assert (res.rows[0]["width"], res.rows[0]["height"]) == (160, 90)


@DECODERS
def test_circular_mask_is_cropped(decoder, tmp_path):
    circle = SCOPE_MASK
    src = make_video(tmp_path / "endo.mp4", 2.0, size="320x240", source="testsrc2=size=320x240:rate=25", vf=circle)
    from builders.stages.clip import detect_mask_crop

    crop = detect_mask_crop(str(src), 50, "circle")
    assert crop is not None and crop.w < 240 and crop.h < 240 and 40 < crop.x < 120
    res = _cut(tmp_path, src, ClipSpec(fps=4, size=64, seconds=1, mask="circle", decoder=decoder))
    assert len(res.rows) == 2 and not res.errors


@DECODERS
def test_real_clip_is_cut(decoder, real, tmp_path):
    res = _cut(
        tmp_path,
        real / "YimingRen111__LighTDiff-surgical-lowlight/dataset/video/train/high/video01_000.mp4",
        ClipSpec(fps=5, size=128, seconds=1, decoder=decoder),
    )
    assert len(res.rows) == 5 and all(r["n_frames"] == 5 for r in res.rows)


def test_probe_reports_audio_stream(tmp_path):
    path = tmp_path / "av.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x64:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    facts = probe_video(str(path))
    assert facts["has_audio"] and facts["n_frames"] == 20 and facts["fps"] == 10
    assert not probe_video(str(make_video(tmp_path / "silent.mp4", 1)))["has_audio"]


def test_mask_detection_falls_back_to_ffmpeg_when_decord_fails(tmp_path, monkeypatch):
    import decord

    from builders.stages.clip import detect_mask_crop

    circle = SCOPE_MASK
    src = make_video(tmp_path / "endo.mp4", 2.0, size="320x240", source="testsrc2=size=320x240:rate=25", vf=circle)
    expected = detect_mask_crop(str(src), 50, "black-border")

    def refuse(*args, **kwargs):
        raise decord.DECORDError("cannot open")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    assert detect_mask_crop(str(src), 50, "black-border") == expected is not None


@DECODERS
def test_source_mask_overrides_the_corpus_setting(decoder, tmp_path):
    import decord

    src = make_video(tmp_path / "endo.mp4", 1.0, size="320x240", source="testsrc2=size=320x240:rate=25", vf=SCOPE_MASK)
    facts = probe_video(str(src))
    stage = ClipStage(str(tmp_path / "build"), ClipSpec(fps=4, size=64, seconds=1, decoder=decoder))  # corpus: no mask
    corners = {}
    for mask in ("none", "circle"):
        clips, _ = split_clip_rows(stage.process(_row(src, **facts, mask=mask)).rows)
        frame = decord.VideoReader(str(tmp_path / "build" / clips[0]["path"]))[0].asnumpy()
        corners[mask] = float(frame[:6, :6].mean())
    assert corners["none"] < 8 < corners["circle"]


def test_rotated_video_keeps_its_display_orientation(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", 2.0, size="320x180")
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)],
        check=True,
    )
    assert probe_video(str(rotated))["rotation"] in (90, 270)
    res = _cut(tmp_path, rotated, ClipSpec(fps=4, size=90, seconds=1, crop="none"))
    out = probe_video(str(tmp_path / "build" / res.rows[0]["path"]))
    assert (out["width"], out["height"]) == (90, 160) and (res.rows[0]["width"], res.rows[0]["height"]) == (90, 160)


def test_mask_on_a_rotated_video_is_found_in_display_orientation(tmp_path):
    from builders.stages.clip import detect_mask_crop

    src = make_video(
        tmp_path / "endo.mp4",
        1.0,
        size="320x240",
        source="testsrc2=size=320x240:rate=25",
        vf=f"{SCOPE_MASK},pad=320:320:0:0",
    )  # mask in the top part of a tall-ish frame
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)],
        check=True,
    )
    upright = detect_mask_crop(str(src), 25, "black-border")
    turned = detect_mask_crop(str(rotated), 25, "black-border", rotated=True)
    assert upright is not None and turned is not None
    assert (turned.w, turned.h) == (upright.h, upright.w)


def test_decord_plan_never_reads_past_the_decodable_frames():
    from builders.stages.decode import DecordPlan

    plan = DecordPlan.make(n_frames=60, src_fps=1.0, spec=ClipSpec(fps=1, seconds=10))  # header may claim 62
    assert plan.source_index.max() == 59 and plan.starts == [0, 10, 20, 30, 40, 50]
    plan = DecordPlan.make(n_frames=100, src_fps=25.0, spec=ClipSpec(fps=8, seconds=1, stride=0.5, keep_tail=True))
    assert plan.source_index.max() < 100 and plan.lengths[-1] < 8 and plan.starts[1] == 4


def test_decord_decoder_falls_back_to_ffmpeg_for_a_file_decord_cannot_open(tmp_path, caplog):
    full = make_video(
        tmp_path / "full.mp4",
        4,
        codec=("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])  # decord refuses it; ffmpeg decodes the rest
    facts = probe_video(str(cut), count="packets")
    assert facts["n_frames"] < facts["n_frames_header"]
    with caplog.at_level("INFO", logger="builders.stages.clip"):
        results = {d: _cut(tmp_path / d, cut, ClipSpec(fps=5, size=32, seconds=0.4, decoder=d)) for d in DECODER_NAMES}
    assert "cutting with ffmpeg" in caplog.text
    assert [r["sha256"] for r in results["decord"].rows] == [r["sha256"] for r in results["ffmpeg"].rows]
    assert results["decord"].rows[-1]["end_s"] <= facts["n_frames"] / facts["fps"] + 1e-6


def test_decoders_agree_on_timing_and_signatures(real, tmp_path):
    src = real / "YimingRen111__LighTDiff-surgical-lowlight/dataset/video/train/high/video01_000.mp4"
    rows = {d: _cut(tmp_path / d, src, ClipSpec(fps=8, size=64, seconds=1, decoder=d)).rows for d in DECODER_NAMES}
    assert [(r["start_s"], r["n_frames"]) for r in rows["ffmpeg"]] == [
        (r["start_s"], r["n_frames"]) for r in rows["decord"]
    ]
    a = np.array([h for r in rows["ffmpeg"] for h in r["phash"]], dtype=np.uint64)
    b = np.array([h for r in rows["decord"] for h in r["phash"]], dtype=np.uint64)
    assert len(a) == len(b) and float(np.bitwise_count(a ^ b).mean()) <= 6  # the same frames, scaled alike
