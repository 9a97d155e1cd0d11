"""clips.timing: fast against exact on generated and real files (real ffmpeg; no timing asserted).

The generated sources carry their frame number in two flat bands at the top, above moving texture,
so the source frame behind every output JPEG is read back from the pixels, independently of the clip stage's own
bookkeeping (the showinfo taps) that it checks.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders.stages import clip as clip_module
from builders.stages.clip import ClipStage, error_histogram, split_clip_rows
from builders.stages.probe import probe_video
from builders.stages.timing import DecodeChoice, choose_decode
from corpus.manifest import ClipSpec

RATE = 25
IDENT = (  # two flat bands on top: 16 + 8 (n mod 25) and 16 + 40 floor(n / 25); moving texture below
    "format=gray,geq=lum='if(lt(Y,H/8),16+8*mod(N,25),if(lt(Y,H/4),16+40*floor(N/25),"
    "128+60*sin(X/5+N/3)*cos(Y/7)))',format=yuv420p"
)
X264_B = ("-c:v", "libx264", "-preset", "veryfast", "-x264-params", "bframes=3:b-adapt=0", "-pix_fmt", "yuv420p")
X264_NO_B = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
MPEG4_AVI = ("-c:v", "mpeg4", "-bf", "2", "-q:v", "2", "-pix_fmt", "yuv420p")
SPEC = {"fps": 5, "size": 64, "seconds": 1, "format": "jpg"}
LIGHTDIFF = "YimingRen111__LighTDiff-surgical-lowlight/dataset/video/train"


def _source(path: Path, codec: tuple[str, ...], vfr: bool = False, size: str = "160x120") -> tuple[Path, np.ndarray]:
    """A 4 s source whose frame n shows its number (``IDENT``); returns it and each frame's time in seconds
    (as ffprobe reads it for ``vfr``: frame steps of 1.4, 1.4 and 0.2 frame periods)."""
    vf = IDENT + (",settb=1/1000,setpts='(N+0.4*mod(N,3))/25/TB'" if vfr else "")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=size={size}:rate={RATE}"]
    cmd += ["-frames:v", str(4 * RATE), "-vf", vf, *(("-fps_mode", "vfr", "-enc_time_base", "1:1000") if vfr else ())]
    subprocess.run([*cmd, *codec, str(path)], check=True, capture_output=True)
    if not vfr:
        return path, np.arange(4 * RATE) / RATE
    probe = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time"]
    out = subprocess.run([*probe, "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    times = np.array([float(t.strip(",")) for t in out.split()])
    return path, times - times[0]


def _row(path: Path) -> dict:
    facts = probe_video(str(path))
    return {
        "video_id": "t/v",
        "source": "t",
        "domain": "x",
        "path": str(path),
        "sha256": "0",
        "uri": str(path),
        **facts,
    }


def _cut(build: Path, src: Path, timing: str, **spec) -> tuple[list[dict], dict, list]:
    stage = ClipStage(str(build), ClipSpec(**{**SPEC, **spec, "timing": timing}))
    res = stage.process(_row(src))
    clips, facts = split_clip_rows(res.rows)
    return clips, facts["t/v"], res.errors


def _frames(build: Path, clips: list[dict]) -> list[tuple[int, bytes, int]]:
    """(output frame index, JPEG bytes, source frame number read from the band) for every output frame."""
    out = []
    for c in clips:
        start = round(c["start_s"] * c["fps"])
        for i, f in enumerate(sorted((build / c["path"]).glob("*.jpg"))):
            luma = np.asarray(Image.open(f).convert("L"), dtype=float)
            h = luma.shape[0]  # bands: rows [0, h/8) and [h/8, h/4)
            fine, coarse = luma[h // 32 : h * 3 // 32].mean(), luma[h * 5 // 32 : h * 7 // 32].mean()
            out.append((start + i, f.read_bytes(), 25 * round((coarse - 16) / 40) + round((fine - 16) / 8)))
    return out


def _check_errors(build: Path, clips: list[dict], times: np.ndarray) -> np.ndarray:
    """Every output frame's true timestamp error is within its clip's recorded bound; returns the errors."""
    errors = []
    for c in clips:
        start = round(c["start_s"] * c["fps"])
        truth = [abs(times[n] - k / c["fps"]) for k, _, n in _frames(build, [c])]
        assert c["max_timestamp_error_s"] is not None
        assert max(truth) <= c["max_timestamp_error_s"] + 1e-6, (c["clip_id"], truth, c["max_timestamp_error_s"])
        assert c["max_timestamp_error_s"] <= 0.5 / c["fps"] + 1e-9
        errors += truth
        assert start == round(c["start_s"] * c["fps"])
    return np.array(errors)


@pytest.mark.parametrize(
    ("name", "codec", "vfr", "size", "decode", "used"),
    [
        ("h264_b.mp4", X264_B, False, "160x120", "noref", "noref"),
        ("h264_no_b.mp4", X264_NO_B, False, "160x120", "full", "full"),
        # MPEG-4 Part 2 B-frames are never references: noref keeps every third frame of "-bf 2", a median error of
        # one source frame at 5 fps, so the pass is redone at reduced resolution with every frame
        ("mpeg4.avi", MPEG4_AVI, False, "320x240", "noref+lowres1", "lowres1"),
        ("vfr.mkv", X264_B, True, "160x120", "noref", "noref"),
    ],
)
def test_fast_matches_exact_clip_counts_and_states_its_error(tmp_path, caplog, name, codec, vfr, size, decode, used):
    src, times = _source(tmp_path / name, codec, vfr=vfr, size=size)
    row = _row(src)
    assert choose_decode(row, SPEC["fps"], SPEC["size"]).name == decode
    exact, exact_facts, exact_errors = _cut(tmp_path / "exact", src, "exact")
    caplog.clear()  # only the fast pass's log below (an earlier test may have left the root logger at INFO)
    with caplog.at_level("INFO", logger="builders.stages.clip"):
        fast, fast_facts, fast_errors = _cut(tmp_path / "fast", src, "fast")
    assert [c["clip_id"] for c in fast] == [c["clip_id"] for c in exact] and len(exact) == 4
    assert f"t/v: {used} decode, 100 frames" in caplog.text
    assert exact_errors == fast_errors == []
    assert (exact_facts["n_frames"], exact_facts["frames_counted"]) == (100, True)
    assert fast_facts["n_frames"] == 100  # skipped frames are estimated from the decoded span, exact here
    exact_err = _check_errors(tmp_path / "exact", exact, times)
    fast_err = _check_errors(tmp_path / "fast", fast, times)
    if not vfr:  # exact takes the nearest source frame; fast stays within one source frame at the median
        assert exact_err.max() <= 0.5 / RATE + 1e-6
    assert np.median(fast_err) < 1 / RATE  # the goal: a median error under one source frame, per output frame
    logged = re.search(r"timestamp errors per output frame: (\{.*\})", caplog.text)  # what the benchmark reads
    assert logged and json.loads(logged.group(1)) == error_histogram(fast_err, RATE)  # ...agrees with the pixels
    by_k = {k: (data, n) for k, data, n in _frames(tmp_path / "exact", exact)}
    same = [(data, by_k[k][0]) for k, data, n in _frames(tmp_path / "fast", fast) if by_k[k][1] == n]
    assert same  # the frames both modes took from one source frame...
    if "lowres" not in decode:  # ...decode identically (a reduced-resolution decode differs in its pixels)
        assert all(a == b for a, b in same)


def _fallback(tmp_path, monkeypatch, choice: DecodeChoice, caplog) -> None:
    src, times = _source(tmp_path / "v.mp4", X264_B)
    monkeypatch.setattr(clip_module, "choose_decode", lambda *a: choice)  # only which options are tried
    exact, _, _ = _cut(tmp_path / "exact", src, "exact")
    with caplog.at_level("INFO", logger="builders.stages.clip"):
        fast, facts, errors = _cut(tmp_path / "fast", src, "fast")
    assert f"{choice.name} decode rejected" in caplog.text and errors == []
    assert (facts["n_frames"], facts["frames_counted"]) == (100, True)  # the full decode counted every frame
    assert [c["sha256"] for c in fast] == [c["sha256"] for c in exact]
    _check_errors(tmp_path / "fast", fast, times)


def test_a_failing_cheaper_decode_falls_back_to_the_full_one(tmp_path, monkeypatch, caplog):
    _fallback(tmp_path, monkeypatch, DecodeChoice("broken", ("-c:v", "no-such-decoder"), 0, 2.0), caplog)


def test_a_too_sparse_cheaper_decode_falls_back_to_the_full_one(tmp_path, monkeypatch, caplog):
    _fallback(tmp_path, monkeypatch, DecodeChoice("keyframes", ("-skip_frame", "nokey"), 0, 2.0), caplog)


def test_a_cheaper_decode_yielding_no_frame_falls_back_to_the_full_one(tmp_path, monkeypatch, caplog):
    _fallback(tmp_path, monkeypatch, DecodeChoice("nothing", ("-skip_frame", "all"), 0, 2.0), caplog)


@pytest.mark.parametrize("name", ["high/video01_000.mp4", "low/lum_contrastvideo01_003.mp4"])
def test_fast_on_real_clips_keeps_the_clip_count(real, tmp_path, name):
    src = real / LIGHTDIFF / name
    spec = {"fps": 2, "size": 112, "seconds": 1, "format": "mp4"}
    exact, exact_facts, _ = _cut(tmp_path / "exact", src, "exact", **spec)
    fast, fast_facts, _ = _cut(tmp_path / "fast", src, "fast", **spec)
    assert choose_decode(_row(src), 2, 112).name == "noref"
    assert [c["clip_id"] for c in fast] == [c["clip_id"] for c in exact] and len(exact) == 5
    assert exact_facts["n_frames"] == fast_facts["n_frames"] == 125
    assert all(c["max_timestamp_error_s"] <= 0.5 / RATE + 1e-6 for c in exact)
    assert all(c["max_timestamp_error_s"] <= 0.25 for c in fast)


def test_report_shows_the_timestamp_error_distribution(tmp_path):
    from corpus.report import write_report
    from corpus.schemas import write_rows

    write_rows(tmp_path, "videos", [{"video_id": "s/v", "source": "s", "fps": 25.0, "n_frames": 100}])
    errors = [0.02, 0.04, 0.04, None]
    clips = [
        {"clip_id": f"s/v/{i:09d}", "video_id": "s/v", "source": "s", "start_s": float(i), "max_timestamp_error_s": e}
        for i, e in enumerate(errors)
    ]
    write_rows(tmp_path, "clips", clips)
    page = write_report(tmp_path).read_text()
    section = page[page.index("<h2>Clip timing</h2>") :].split("<h2>")[1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", section)
    assert cells == ["s", "3", "40", "40", "40", "1", "1", "1"]  # median, p90, max in ms and in source frames
