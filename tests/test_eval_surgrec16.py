"""``eval surgrec16`` end to end: a generated JIGSAWS-shaped benchmark build, published and corrected splits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builders.benchmark import build_dataset
from cli.main import app
from corpus.benchmark.plan import plan
from corpus.benchmark.spec import load_benchmark_source
from eval.report import read_csv

SOURCES = Path(__file__).resolve().parents[1] / "manifests" / "sources"
TRIALS = ("B001", "C001", "D001", "E001", "F001")
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """Five Suturing trials, two views each; gesture G1 shows a test pattern, G2 a red field (1 s each at 30 fps).
    Published splits: train B, C, D; val = test E, F (as in 9 of SurgRec's datasets)."""
    tmp = tmp_path_factory.mktemp("surgrec16")
    raw = tmp / "raw" / "Suturing"
    (raw / "transcriptions").mkdir(parents=True)
    (raw / "video").mkdir()
    for t in TRIALS:
        (raw / f"transcriptions/Suturing_{t}.txt").write_bytes(b"1 30 G1 \r\n31 60 G2 \r\n")
        for cam in (1, 2):
            graph = (
                "testsrc2=size=64x48:rate=30:duration=1[a];color=c=red:size=64x48:rate=30:duration=1[b];"
                "[a][b]concat=n=2:v=1[v]"
            )
            subprocess.run(
                ["ffmpeg", "-v", "error", "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264",
                 str(raw / f"video/Suturing_{t}_capture{cam}.avi")],
                check=True,
            )  # fmt: skip
    spec = load_benchmark_source(SOURCES / "jigsaws.yaml")
    clips = plan(spec, raw.parent)
    split_of = {t: "train" if t in TRIALS[:3] else "test" for t in TRIALS}
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in clips:
        s = split_of[c.path.split("Suturing_")[1][:4]]
        rows[s].append(f"__DATA_ROOT__/{c.path} {c.label_id}\n")
    rows["val"] = rows["test"]
    folder = tmp / "splits" / "JIGSAWS"
    folder.mkdir(parents=True)
    for s, lines in rows.items():
        (folder / f"{s}.csv").write_text("".join(lines))
    res = build_dataset(spec, raw.parent, tmp / "bench", tmp / "splits")
    assert not res.errors and res.clips == {"train": 12, "val": 8, "test": 8}
    return tmp / "bench"


def test_eval_surgrec16_published_and_fixed_side_by_side(benchmark, tmp_path):
    runner = CliRunner()
    out = tmp_path / "eval"
    for splits in ("published", "fixed"):
        res = runner.invoke(
            app,
            ["eval", "surgrec16", "--checkpoint", "default", "--benchmark", str(benchmark), "--splits", splits,
             "--out", str(out), "--no-progress"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "majority_accuracy" in res.output
    (run,) = [p for p in out.iterdir() if p.name != "features"]
    pub = read_csv(run / "published" / "results.csv")[0]
    fixed = read_csv(run / "fixed" / "results.csv")[0]
    # published: SurgRec's protocol on 12 train clips (drop_last, batch 64: no optimiser step), val = test unused
    assert (pub["n_train"], pub["n_val"], pub["n_test"], pub["steps"]) == ("12", "8", "8", "0")
    assert pub["collapsed"].startswith("not trained: no optimiser step")
    # fixed: a validation trial carved from train (4 clips), at least 1000 steps, the probe separates G1 from G2
    assert (fixed["n_train"], fixed["n_val"], fixed["n_test"]) == ("8", "4", "8")
    assert int(fixed["steps"]) >= 1000 and float(fixed["accuracy"]) == 1.0 and fixed["collapsed"] == ""
    assert float(fixed["majority_accuracy"]) == 0.5 and float(fixed["chance_accuracy"]) == 0.5
    for f in ("results.md", "results.csv", "results.png", "predictions/jigsaws.csv"):
        assert (run / "fixed" / f).is_file()
    comparison = (run / "comparison.md").read_text()
    row = next(line for line in comparison.splitlines() if line.startswith("| jigsaws |"))
    assert "| 50.00 | yes |" in row and row.endswith("| 100.00 | 50.00 | no |")
    assert "published accuracy" in comparison and "fixed accuracy" in comparison and "| jigsaws |" in comparison
    # the second run reused the cached features of every clip (one part file per clip batch)
    assert len(list((out / "features").glob("*/part-*.parquet"))) == 1
