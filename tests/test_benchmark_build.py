"""``benchmark build``: frame-exact clips (one ffmpeg per source video), shards and SurgRec CSVs."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from corpus.benchmark.build import build_dataset
from corpus.benchmark.spec import load_benchmark_source

MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "sources" / "jigsaws.yaml"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_build_cuts_exact_frames_and_writes_shards(tmp_path):
    raw = tmp_path / "raw" / "Suturing"
    (raw / "transcriptions").mkdir(parents=True)
    (raw / "video").mkdir()
    (raw / "transcriptions" / "Suturing_B001.txt").write_bytes(b"1 10 G1 \r\n11 40 G2 \r\n")
    for cam in (1, 2):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=2",
             "-c:v", "libx264", str(raw / "video" / f"Suturing_B001_capture{cam}.avi")],
            check=True,
        )  # fmt: skip
    splits = tmp_path / "splits" / "JIGSAWS"
    splits.mkdir(parents=True)
    (splits / "train.csv").write_text("__DATA_ROOT__/JIGSAWS/videos/Suturing_B001_capture1_0.03_0.33_G1.mp4 0\n")
    (splits / "val.csv").write_text("__DATA_ROOT__/JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4 1\n")
    (splits / "test.csv").write_text("__DATA_ROOT__/JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4 1\n")
    spec = load_benchmark_source(MANIFEST)
    res = build_dataset(spec, tmp_path / "raw", tmp_path / "out", tmp_path / "splits")
    assert res["clips"] == {"train": 1, "val": 1, "test": 1} and not res["missing_videos"]
    clip = tmp_path / "out/JIGSAWS/clips/JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4"
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames,codec_name",
         "-of", "csv=p=0", str(clip)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "h264,30"  # frames 11..40 inclusive
    assert (
        tmp_path / "out/JIGSAWS/val.csv"
    ).read_text() == "JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4 1\n"
    with tarfile.open(tmp_path / "out/JIGSAWS/train-000000.tar") as tar:
        names = tar.getnames()
    assert len(names) == 3 and {n.rsplit(".", 1)[1] for n in names} == {"mp4", "cls", "json"}
