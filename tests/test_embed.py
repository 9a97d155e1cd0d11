"""The embed stage on real mp4 files: the default encoder's similarities, resume, errors, trainer checkpoints, CLI."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from builders.stages.embed import CheckpointEncoder, StatsEncoder, embed_build
from cli.curate import app
from corpus.embeddings import encoders_in, read_embeddings
from corpus.schemas import read_rows, table_path, write_rows

pytest.importorskip("decord")
if shutil.which("ffmpeg") is None:
    pytest.skip("ffmpeg not on PATH", allow_module_level=True)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def build(tmp_path: Path) -> Path:
    (tmp_path / "clips").mkdir()
    srcs = {
        "a": "mandelbrot=size=96x64:rate=10",
        "b": "testsrc2=size=96x64:rate=10",
        "c": "smptebars=size=96x64:rate=10",
    }
    for name, src in srcs.items():
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            src,
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            str(tmp_path / f"clips/{name}.mp4"),
        )
    eq = "eq=brightness=0.06:contrast=1.1"
    ffmpeg(
        "-i",
        str(tmp_path / "clips/a.mp4"),
        "-vf",
        eq,
        "-c:v",
        "libx264",
        "-crf",
        "35",
        str(tmp_path / "clips/a_copy.mp4"),
    )
    (tmp_path / "clips/broken.mp4").write_bytes((tmp_path / "clips/b.mp4").read_bytes()[:300])
    rows = [
        {
            "clip_id": f"s/{n}/000000000",
            "video_id": f"s/{n}",
            "source": "s",
            "split": "train",
            "path": f"clips/{n}.mp4",
        }
        for n in ("a", "a_copy", "b", "c", "broken")
    ]
    write_rows(tmp_path, "clips", rows, sort_by=("clip_id",))
    return tmp_path


def test_default_encoder_resumes_records_errors_and_separates_content(build: Path) -> None:
    first = embed_build(build, limit=2)
    assert (first.n_embedded, first.n_skipped) == (2, 0)
    second = embed_build(build)
    assert (second.n_skipped, second.n_embedded, second.n_errors) == (2, 2, 1)
    errors = [e for e in read_rows(build, "errors") if e["stage"] == "embed"]
    assert [e["clip_id"] for e in errors] == ["s/broken/000000000"] and "broken.mp4" in errors[0]["message"]
    ids, vecs, enc = read_embeddings(build)
    assert enc.startswith("stats-v1") and ids == [f"s/{n}/000000000" for n in ("a", "a_copy", "b", "c")]
    assert vecs.shape == (4, 256) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > 0.95  # re-encoded + brighter copy
    assert sim[0, 2] < 0.5 and sim[0, 3] < 0.5 and sim[2, 3] < 0.5
    third = embed_build(build)
    assert (third.n_embedded, third.n_skipped, third.n_errors) == (0, 4, 1)  # the broken clip is retried, not lost
    assert pq.read_metadata(table_path(build, "embeddings")).num_rows == 4
    assert not list((build / "tables/_parts/embeddings").rglob("*.parquet"))


def test_trainer_checkpoint_encoder(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    pkg = tmp_path / "ckptmods"
    pkg.mkdir()
    (pkg / "tinyvideo.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Tiny(torch.nn.Module):
                def __init__(self, width: int = 12):
                    super().__init__()
                    self.conv = torch.nn.Conv3d(3, width, kernel_size=(2, 8, 8), stride=(2, 8, 8))

                def forward(self, x):  # (B, 3, T, H, W) -> (B, N, D) tokens
                    return self.conv(x).flatten(2).transpose(1, 2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(pkg))
    from tinyvideo import Tiny

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    cfg = {"builder": "tinyvideo:Tiny", "kwargs": {"width": 12}, "num_frames": 4, "image_size": 32}
    torch.save({"model": Tiny(12).state_dict(), "config": cfg}, ckpt)
    enc = CheckpointEncoder(ckpt)
    assert enc.dim == 12 and enc.num_frames == 4 and enc.encoder_id.startswith("ckpt-tiny-")
    embed_build(build)  # default encoder
    s = embed_build(build, str(ckpt))
    assert s.n_embedded == 4 and s.encoder == enc.encoder_id
    assert encoders_in(build) == sorted([enc.encoder_id, StatsEncoder().encoder_id])
    ids, vecs, _ = read_embeddings(build, enc.encoder_id)
    assert vecs.shape == (4, 12) and len(ids) == 4
    with pytest.raises(Exception, match="several|holds encoders"):
        read_embeddings(build)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "config": {"builder": "nowhere.module:Net"}}, bad)
    with pytest.raises(Exception, match="cannot be imported"):
        CheckpointEncoder(bad)


def test_cli_embed_then_balance(build: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["embed", "--build", str(build)])
    assert res.exit_code == 2 and "4 embedded" in res.output and "1 errors" in res.output  # the broken clip
    res = runner.invoke(app, ["balance", "--build", str(build), "--k", "2", "--temperature", "0"])
    assert res.exit_code == 0, res.output
    assert "4/4 eligible clips selected" in res.output and (build / "report/balance.html").exists()
    res = runner.invoke(app, ["balance", "--build", str(build), "--source-cap", "0.5"])
    assert res.exit_code == 1 and "cap 0.5 over 1 sources" in res.output


def test_worker_processes_give_the_same_vectors(build: Path, tmp_path: Path) -> None:
    embed_build(build, batch_size=2)
    ids, vecs, _ = read_embeddings(build)
    table_path(build, "embeddings").unlink()
    s = embed_build(build, batch_size=2, workers=2, flush_every=2)
    assert (s.n_embedded, s.n_errors) == (4, 1)
    ids2, vecs2, _ = read_embeddings(build)
    assert ids2 == ids and np.array_equal(vecs2, vecs)


def test_runs_on_the_executor_and_resumes_from_an_interrupted_units_parts(build: Path) -> None:
    from builders.executors.base import load_done
    from builders.executors.local import LocalExecutor
    from builders.stages.embed import EmbedStage

    # an interrupted run: the unit of video s/a finished (part file + marker), nothing was merged yet
    stage = EmbedStage(build.resolve(), flush_every=1)
    unit = {"video_id": "s/a", "clips": [{"clip_id": "s/a/000000000", "path": "clips/a.mp4"}]}
    with LocalExecutor(1, show_progress=False) as ex:
        out = ex.run(str(build.resolve()), stage, [unit])
    assert out.rows == [{"clip_id": "s/a/000000000"}] and load_done(build.resolve(), stage, unit) is not None
    assert len(list((build / "tables/_parts/embeddings").rglob("*.parquet"))) == 1
    s = embed_build(build, workers=2)
    assert (s.n_skipped, s.n_embedded, s.n_errors) == (1, 3, 1)
    assert read_embeddings(build)[0] == [f"s/{n}/000000000" for n in ("a", "a_copy", "b", "c")]
    # parts merged into the table, so no marker is left pointing at them; the failed unit was never marked done
    assert not list((build / "_state/embed").glob("*.json"))
    assert not list((build / "tables/_parts/embeddings").rglob("*.parquet"))
