"""Shared fixtures: the real-data folder beside the repo (skip when absent) and generated corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from corpus.testing import REAL, has_ffmpeg, make_video


def pytest_collection_modifyitems(config, items):
    if not has_ffmpeg():
        skip = pytest.mark.skip(reason="ffmpeg/ffprobe not on PATH (run `make setup`)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real test data not found at {REAL} (../shared beside the repo)")
    return REAL


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """Two generated sources: distinct videos, a re-encoded near duplicate, a trimmed copy and a corrupt file."""
    root = tmp_path_factory.mktemp("gen")
    make_video(root / "a" / "v1.mp4", 6, source="mandelbrot=size=160x120:rate=25")
    make_video(root / "a" / "v2.mp4", 6, source="testsrc2=size=160x120:rate=25")
    make_video(root / "a" / "v3.mp4", 6, source="cellauto=size=160x120:rate=25:rule=18:seed=3")
    make_video(
        root / "b" / "nested" / "v1_copy.mp4",
        6,
        source="mandelbrot=size=160x120:rate=25",
        vf="scale=240:180,eq=brightness=0.05:contrast=1.1",
        codec=("-c:v", "libx264", "-crf", "32", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )
    make_video(
        root / "b" / "v2_trim.mp4", 4, source="testsrc2=size=160x120:rate=25", vf="trim=start=2,setpts=PTS-STARTPTS"
    )
    (root / "b" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    return root


def write_manifest(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def generated_corpus(generated: Path) -> dict:
    """The corpus manifest over the ``generated`` fixture: two sources, 1 s clips at 8 fps, 64 px."""
    return {
        "name": "gen",
        "sources": [
            {"name": "site-a", "domain": "laparoscopy", "root": str(generated / "a"), "videos": {"glob": "*.mp4"}},
            {"name": "site-b", "domain": "endoscopy", "root": str(generated / "b"), "videos": {"glob": "**/*.mp4"}},
        ],
        "clips": {"fps": 8, "size": 64, "seconds": 1},
        "split": {"val": 0.3, "test": 0.3, "seed": 1},
        "shard": {"max_samples": 5},
    }


@pytest.fixture
def generated_manifest(tmp_path, generated) -> Path:
    return write_manifest(tmp_path / "gen.yaml", generated_corpus(generated))
