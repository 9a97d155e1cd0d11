"""Leakage check through the default encoder on real mp4 files: a re-encoded copy (other crf, brighter) of a
benchmark test clip hidden among pretraining clips is found, excluded from the balanced selection, and reported."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from builders.stages.embed import embed_build
from corpus.balance import BalanceConfig, balance_build
from corpus.leakage import leakage_build, near_duplicate_pairs
from corpus.schemas import table_path, write_rows

pytest.importorskip("decord")
pytest.importorskip("faiss")
if shutil.which("ffmpeg") is None:
    pytest.skip("ffmpeg not on PATH", allow_module_level=True)

SHARED = Path(__file__).resolve().parents[2] / "shared"
LIGHTDIFF = SHARED / "data/real/YimingRen111__LighTDiff-surgical-lowlight/dataset/video/train/high"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def lavfi(out: Path, source: str) -> None:
    ffmpeg("-f", "lavfi", "-i", source, "-t", "2", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-crf", "23", str(out))


def reencode(src: Path, out: Path) -> None:
    """The leak: re-encoded at another quality with a slight brightness and contrast change."""
    vf = "eq=brightness=0.05:contrast=1.08"
    ffmpeg("-i", str(src), "-vf", vf, "-c:v", "libx264", "-crf", "34", "-preset", "veryfast", str(out))


def add_clips(build: Path, specs: list[tuple[str, str, str]]) -> None:
    """specs: (clip_id, split, mp4 path relative to build)."""
    rows = []
    for cid, split, rel in specs:
        vid = cid.rsplit("/", 1)[0]
        rows.append({"clip_id": cid, "video_id": vid, "source": vid.split("/")[0], "domain": "test",
                     "split": split, "path": rel})  # fmt: skip
    write_rows(build, "clips", rows, sort_by=("clip_id",))


def test_reencoded_benchmark_clip_is_caught_and_excluded(tmp_path: Path) -> None:
    bench, pre = tmp_path / "bench", tmp_path / "pre"
    for d in (bench / "clips", pre / "clips"):
        d.mkdir(parents=True)
    lavfi(bench / "clips/mandel.mp4", "mandelbrot=size=96x64:rate=10")
    lavfi(bench / "clips/life.mp4", "life=size=96x64:rate=10:mold=10:seed=1")
    lavfi(bench / "clips/cells.mp4", "cellauto=size=96x64:rate=10:seed=2")
    add_clips(
        bench,
        [
            ("bench/a/000000000", "test", "clips/mandel.mp4"),
            ("bench/b/000000000", "val", "clips/life.mp4"),
            ("bench/c/000000000", "train", "clips/cells.mp4"),
        ],
    )
    reencode(bench / "clips/mandel.mp4", pre / "clips/leak.mp4")
    reencode(bench / "clips/cells.mp4", pre / "clips/train_copy.mp4")  # a benchmark *train* clip may be reused
    lavfi(pre / "clips/sister.mp4", "testsrc2=size=96x64:rate=10")
    lavfi(pre / "clips/bars.mp4", "smptebars=size=96x64:rate=10")
    lavfi(pre / "clips/rgb.mp4", "rgbtestsrc=size=96x64:rate=10")
    lavfi(pre / "clips/life2.mp4", "life=size=96x64:rate=10:mold=10:seed=9")
    add_clips(
        pre,
        [
            ("web/v1/000000000", "train", "clips/leak.mp4"),
            ("web/v1/000002000", "train", "clips/sister.mp4"),
            ("web/v2/000000000", "train", "clips/train_copy.mp4"),
            ("lap/v3/000000000", "train", "clips/bars.mp4"),
            ("lap/v4/000000000", "train", "clips/rgb.mp4"),
            ("lap/v5/000000000", "train", "clips/life2.mp4"),
        ],
    )
    assert embed_build(bench).n_embedded == 3
    assert embed_build(pre).n_embedded == 6
    balance_build(pre, BalanceConfig(levels=(3,), temperature=0.0))
    before = {r["clip_id"]: r for r in pq.read_table(table_path(pre, "clip_balance")).to_pylist()}
    assert before["web/v1/000000000"]["balanced"]

    summary = leakage_build(pre, [bench])
    offenders = {r["clip_id"]: r for r in summary.offenders}
    assert set(offenders) == {"web/v1/000000000", "web/v1/000002000"}
    hit = offenders["web/v1/000000000"]
    assert hit["kind"] == "near_duplicate" and hit["bench_clip_id"] == "bench/a/000000000" and hit["similarity"] > 0.95
    assert offenders["web/v1/000002000"]["kind"] == "same_video"
    assert summary.rebalanced
    after = {r["clip_id"]: r for r in pq.read_table(table_path(pre, "clip_balance")).to_pylist()}
    for cid in offenders:
        assert (after[cid]["balanced"], after[cid]["weight"], after[cid]["reason"]) == (False, 0.0, "leakage")
    assert after["web/v2/000000000"]["balanced"]  # the copy of a benchmark train clip stays
    assert abs(sum(r["weight"] for r in after.values()) - 1.0) < 1e-9
    assert "bench/a/000000000" in (pre / "report/leakage.html").read_text()
    assert "web/v1/000000000" in (pre / "report/balance.html").read_text()
    # a later balance run keeps them out too
    balance_build(pre, BalanceConfig(levels=(3,), temperature=0.0, seed=5))
    again = {r["clip_id"]: r["reason"] for r in pq.read_table(table_path(pre, "clip_balance")).to_pylist()}
    assert again["web/v1/000000000"] == again["web/v1/000002000"] == "leakage"


@pytest.mark.skipif(not LIGHTDIFF.exists(), reason=f"real surgical clips not found at {LIGHTDIFF}")
def test_real_surgical_copy_caught_other_moments_of_the_same_surgery_not(tmp_path: Path) -> None:
    """LighTDiff: six consecutive 5 s segments of one laparoscopic video. Segment 3 is a benchmark test clip; the
    other segments (same surgery, same scene) sit in pretraining with a re-encoded copy of segment 3."""
    bench, pre = tmp_path / "bench", tmp_path / "pre"
    for d in (bench / "clips", pre / "clips"):
        d.mkdir(parents=True)
    shutil.copy(LIGHTDIFF / "video01_003.mp4", bench / "clips/s3.mp4")
    add_clips(bench, [("lightdiff/video01/000015000", "test", "clips/s3.mp4")])
    specs = []
    for i in (0, 1, 2, 4, 5):
        shutil.copy(LIGHTDIFF / f"video01_00{i}.mp4", pre / f"clips/s{i}.mp4")
        specs.append((f"lap/seg{i}/000000000", "train", f"clips/s{i}.mp4"))
    reencode(LIGHTDIFF / "video01_003.mp4", pre / "clips/copy.mp4")
    specs.append(("web/copy/000000000", "train", "clips/copy.mp4"))
    add_clips(pre, specs)
    embed_build(bench)
    embed_build(pre)
    summary = leakage_build(pre, [bench], scope="clip")
    assert [r["clip_id"] for r in summary.offenders] == ["web/copy/000000000"]
    assert summary.offenders[0]["similarity"] > 0.95


def test_near_duplicate_pairs_within_a_set() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    x[10] = x[3] + 0.01 * rng.standard_normal(64)
    x[400] = x[3] + 0.01 * rng.standard_normal(64)
    pairs = near_duplicate_pairs(x, threshold=0.95)
    assert {(int(i), int(j)) for i, j, _ in pairs} == {(3, 10), (3, 400), (10, 400)}
    ivf = near_duplicate_pairs(x, threshold=0.95, ivf_min=100, nprobe=100)  # the IVF path, searched exhaustively
    assert {(int(i), int(j)) for i, j, _ in ivf} == {(3, 10), (3, 400), (10, 400)}
