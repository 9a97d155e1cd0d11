"""``benchmark build`` through the pipeline: probe and cut per raw video (resumable), shards, tables, catalog, CSVs."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from builders.benchmark import build_dataset
from cli.benchmark import app
from corpus.benchmark.spec import load_benchmark_source
from corpus.catalog import query

SOURCES = Path(__file__).resolve().parents[1] / "manifests" / "sources"
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def make_video(path: Path, rate: str, seconds: float, ext_codec: str = "libx264") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate={rate}:duration={seconds}",
         "-c:v", ext_codec, str(path)],
        check=True,
    )  # fmt: skip


def count_frames(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def write_splits(folder: Path, rows: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (folder / f"{split}.csv").write_text("".join(f"__DATA_ROOT__/{r}\n" for r in lines))
    return folder.parent


@pytest.fixture
def jigsaws(tmp_path):
    raw = tmp_path / "raw"
    (raw / "Suturing/transcriptions").mkdir(parents=True)
    (raw / "Suturing/transcriptions/Suturing_B001.txt").write_bytes(b"1 10 G1 \r\n11 40 G2 \r\n")
    for cam in (1, 2):
        make_video(raw / f"Suturing/video/Suturing_B001_capture{cam}.avi", "30", 2)
    g2 = "JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4 1"
    splits = write_splits(
        tmp_path / "splits/JIGSAWS",
        {"train": ["JIGSAWS/videos/Suturing_B001_capture1_0.03_0.33_G1.mp4 0"], "val": [g2], "test": [g2]},
    )
    return load_benchmark_source(SOURCES / "jigsaws.yaml"), raw, splits


def shard_bytes(build: Path) -> dict[str, bytes]:
    return {p.relative_to(build).as_posix(): p.read_bytes() for p in sorted(build.glob("shards/*/*.tar"))}


def test_build_cuts_exact_frames_writes_shards_tables_catalog(jigsaws, tmp_path):
    spec, raw, splits = jigsaws
    res = build_dataset(spec, raw, tmp_path / "out", splits)
    build = tmp_path / "out/JIGSAWS"
    assert res.clips == {"train": 1, "val": 1, "test": 1} and not res.errors and res.cut == 2
    clip = build / "clips/JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4"
    assert count_frames(clip) == 30  # native frames 11..40 inclusive
    assert (build / "val.csv").read_text() == "JIGSAWS/videos/Suturing_B001_capture2_0.37_1.33_G2.mp4 1\n"
    with tarfile.open(build / "shards/train/JIGSAWS-train-000000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert len(names) == 3 and {n.rsplit(".", 1)[1] for n in names} == {"mp4", "cls", "json"}
    assert meta["start_frame"] == 1 and meta["end_frame"] == 11 and meta["split"] == "train"
    planned = pq.read_table(build / "tables/planned_clips.parquet").to_pylist()
    # 2 gestures x 2 cameras planned; the G2 clip of camera 2 is in val and test, camera-1 G2 is not published
    assert sorted((r["path"].rsplit("_", 1)[1], r["split"] or "-") for r in planned) == [
        ("G1.mp4", "-"), ("G1.mp4", "train"), ("G2.mp4", "-"), ("G2.mp4", "test"), ("G2.mp4", "val")
    ]  # fmt: skip
    assert {t.stem for t in (build / "tables").glob("*.parquet")} >= {
        "segments", "planned_clips", "probe", "errors", "clips", "shards"
    }  # fmt: skip
    _, rows = query(build, "SELECT split, count(*) FROM shards WHERE member LIKE '%.mp4' GROUP BY split ORDER BY 1")
    assert rows == [("test", 1), ("train", 1), ("val", 1)]
    assert (build / "catalog.duckdb").is_file()


def test_rebuild_skips_finished_videos_and_shards_are_byte_identical(jigsaws, tmp_path):
    spec, raw, splits = jigsaws
    first = build_dataset(spec, raw, tmp_path / "a", splits)
    before = shard_bytes(tmp_path / "a/JIGSAWS")
    again = build_dataset(spec, raw, tmp_path / "a", splits)
    assert first.cut == 2 and again.cut == 0
    assert shard_bytes(tmp_path / "a/JIGSAWS") == before
    fresh = build_dataset(spec, raw, tmp_path / "b", splits)
    assert fresh.cut == 2 and shard_bytes(tmp_path / "b/JIGSAWS") == before and len(before) == 3
    # a deleted clip file is redone on the next run
    next((tmp_path / "a/JIGSAWS/clips").rglob("*capture1*.mp4")).unlink()
    assert build_dataset(spec, raw, tmp_path / "a", splits).cut == 1
    assert shard_bytes(tmp_path / "a/JIGSAWS") == before


def test_missing_and_unreadable_videos_are_error_rows(jigsaws, tmp_path):
    spec, raw, splits = jigsaws
    (raw / "Suturing/video/Suturing_B001_capture2.avi").unlink()
    res = build_dataset(spec, raw, tmp_path / "out", splits)
    assert res.clips == {"train": 1, "val": 0, "test": 0}
    errors = pq.read_table(tmp_path / "out/JIGSAWS/tables/errors.parquet").to_pylist()
    assert [(e["stage"], e["kind"]) for e in errors] == [("benchmark-probe", "missing_file")]
    assert "Suturing_B001_capture2.avi: raw video not found" in errors[0]["message"]

    (raw / "Suturing/video/Suturing_B001_capture2.avi").write_bytes(b"not a video at all")
    res = build_dataset(spec, raw, tmp_path / "out", splits)
    errors = pq.read_table(tmp_path / "out/JIGSAWS/tables/errors.parquet").to_pylist()
    assert [(e["kind"], e["video_id"]) for e in errors] == [("unreadable", "jigsaws/Suturing_B001")]
    assert res.clips["train"] == 1 and (tmp_path / "out/JIGSAWS/test.csv").read_text() == ""


def test_multibypass140_names_use_the_probed_frame_rate_and_frame_count(tmp_path):
    """BBP39 runs at 24.999 fps and its last phase is annotated past the video's end (75 frames at 3 s): the
    published names (SurgRec's) floor the start at the video's rate and end the last clip at its frame count."""
    raw = tmp_path / "raw"
    phases = [
        {"start": 0, "end": 2000, "label_name": "preparation", "label_id": 0},
        {"start": 2000, "end": 3200, "label_name": "gastric_pouch_creation", "label_id": 1},
    ]
    (raw / "labels/bern/labels_by70").mkdir(parents=True)
    (raw / "labels/bern/labels_by70/BBP39.mp4.json").write_text(json.dumps({"phases": phases, "steps": []}))
    make_video(raw / "videos/bern/BBP39.mp4", "24999/1000", 3)
    spec = load_benchmark_source(SOURCES / "multibypass140.yaml")
    base = "MultiBypass140/split_videos/bern/phase/BBP39/BBP39_phase_"
    first, last = f"{base}001_preparation_000000-000050.mp4", f"{base}002_gastric_pouch_creation_000049-000075.mp4"
    splits = write_splits(tmp_path / "splits/MultiBypass140", {"train": [f"{first} 12"], "val": [f"{last} 5"]})
    (tmp_path / "splits/MultiBypass140/test.csv").write_text("")

    runner = CliRunner()
    res = runner.invoke(app, ["clips", "multibypass140", "--root", str(raw), "--out", str(tmp_path / "c.csv")])
    assert res.exit_code == 0, res.output
    # without the video: 25 fps, annotated end; the last clip is reported as depending on the video length
    assert f"{base}002_gastric_pouch_creation_000050-000080.mp4" in (tmp_path / "c.csv").read_text()
    assert "1 rows depend on the video length" in res.output and "002_gastric_pouch_creation" in res.output

    out = build_dataset(spec, raw, tmp_path / "out", splits)
    assert out.clips == {"train": 1, "val": 1, "test": 0} and not out.errors
    built = tmp_path / "out/MultiBypass140/clips" / last
    assert count_frames(built) == 75 - 49
    assert (tmp_path / "out/MultiBypass140/val.csv").read_text() == f"{last} 5\n"
