"""One build dir, many commands: nothing a command writes is lost by another; the lock, retries, transient
failures, injective ids and the import graph."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from builders.executors.base import marker_path
from builders.executors.local import LocalExecutor
from builders.pipeline import build
from builders.stages.base import Stage, UnitResult
from builders.stages.embed import embed_build
from cli.main import app
from corpus.balance import BalanceConfig, balance_build, unbalanced_clips
from corpus.build_dir import BuildDir, BuildDirLocked
from corpus.catalog import query
from corpus.errors import DecodeError, ErrorRow, Killed, ManifestError, OutOfMemory, ffmpeg_failure
from corpus.hierarchy.build import import_hierarchy
from corpus.ids import check_unique, safe_relpath, sample_key
from corpus.manifest import load_manifest
from corpus.sampling import sampler_from_build
from corpus.testing import make_video
from tests.conftest import write_manifest

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _manifest(tmp: Path, root: Path, name: str = "shared") -> Path:
    return write_manifest(
        tmp / f"{name}.yaml",
        {
            "name": name,
            "sources": [{"name": "site", "domain": "laparoscopy", "root": str(root), "videos": {"glob": "*.mp4"}}],
            "clips": {"fps": 4, "size": 48, "seconds": 1},
            "split": {"val": 0.0, "test": 0.0, "seed": 0},
        },
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_video(root / "a b.mp4", 3, size="96x64", source="mandelbrot=size=96x64:rate=25")
    make_video(root / "a-b.mp4", 3, size="96x64", source="cellauto=size=96x64:rate=25:rule=30:seed=2")
    make_video(root / "c.mp4", 3, size="96x64", source="testsrc2=size=96x64:rate=25")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    return root


# ---------------------------------------------------------------------------------------------------- ids


def test_ids_that_used_to_collide_get_distinct_keys_and_folders() -> None:
    for a, b in [("s/a b", "s/a-b"), ("s/a_/b", "s/a/_b"), ("s/a.b", "s/a-b"), ("s/a__b", "s/a/b")]:
        assert sample_key(a) != sample_key(b), (a, b)
        assert safe_relpath(a) != safe_relpath(b), (a, b)
        assert "." not in sample_key(a) and "/" not in sample_key(a)
    assert sample_key("cholec80/video01/000001000") == "cholec80__video01__000001000"  # readable ids stay readable
    assert safe_relpath("cholec80/video01") == "cholec80/video01"
    with pytest.raises(ManifestError, match="'x' and 'y'"):
        check_unique(["x", "y"], lambda _: "same", "keys")


# ---------------------------------------------------------------------------------------------------- import graph

# eval scores trainers' checkpoints, so it may import trainers (never the reverse)
LAYERS = {"corpus": 0, "builders": 1, "trainers": 2, "eval": 3, "cli": 4}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_run_one_way() -> None:
    """corpus <- builders <- trainers <- eval <- cli: no module imports a layer above its own."""
    bad = []
    for pkg, level in LAYERS.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in _imports(path) & set(LAYERS):
                if name != pkg and LAYERS[name] >= level:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)
    assert not (ROOT / "corpus" / "cli.py").exists()


# ---------------------------------------------------------------------------------------------------- transient


class _Flaky(Stage):
    """A stage whose unit fails like the machine would (out of memory), or like bad input would."""

    name = "flaky"

    def __init__(self, how: str) -> None:
        self.how = how

    def process(self, row: dict) -> UnitResult:
        if self.how == "oom":
            raise MemoryError("cannot allocate 40 GB")
        if self.how == "killed":
            err = ffmpeg_failure(row["video_id"], -9, "")
        else:
            err = ffmpeg_failure(row["video_id"], 1, "Invalid data found when processing input\n")
        return UnitResult(errors=[ErrorRow.from_exception(self.name, err, video_id=row["video_id"], uri=None)])


@pytest.mark.parametrize("how", ["oom", "killed"])
def test_a_transient_failure_is_recorded_but_never_cached(tmp_path: Path, how: str) -> None:
    out = LocalExecutor(1, show_progress=False).run(str(tmp_path), _Flaky(how), [{"video_id": "s/v"}])
    assert [e.kind for e in out.errors] == [{"oom": "out_of_memory", "killed": "killed"}[how]]
    assert not marker_path(tmp_path, "flaky", "s/v").exists()
    again = LocalExecutor(1, show_progress=False).run(str(tmp_path), _Flaky(how), [{"video_id": "s/v"}])
    assert (again.ran, again.skipped) == (1, 0)


def test_bad_input_is_cached_and_retry_errors_reruns_it(tmp_path: Path) -> None:
    rows = [{"video_id": "s/v"}]
    first = LocalExecutor(1, show_progress=False).run(str(tmp_path), _Flaky("bad"), rows)
    assert [e.kind for e in first.errors] == ["decode"] and marker_path(tmp_path, "flaky", "s/v").exists()
    assert LocalExecutor(1, show_progress=False).run(str(tmp_path), _Flaky("bad"), rows).skipped == 1
    retry = LocalExecutor(1, show_progress=False, retry_errors=True).run(str(tmp_path), _Flaky("bad"), rows)
    assert (retry.ran, retry.retried) == (1, 1)


def test_ffmpeg_failures_are_classified() -> None:
    assert isinstance(ffmpeg_failure("x", -9, ""), Killed)
    assert isinstance(ffmpeg_failure("x", 1, "av_malloc: Cannot allocate memory\n"), OutOfMemory)
    assert ffmpeg_failure("x", 1, "Error writing: No space left on device").kind == "disk_full"
    bad = ffmpeg_failure("x", 1, "moov atom not found\n")
    assert isinstance(bad, DecodeError) and "moov atom not found" in str(bad)


# ---------------------------------------------------------------------------------------------------- build dir


@pytest.mark.slow
def test_commands_sharing_a_build_dir_keep_each_others_data(tmp_path: Path, media: Path) -> None:
    """build -> embed -> balance -> hierarchy import in the same dir -> rebuild: every table, error row and view
    survives; the two ids that used to collide both reach the shards; status lists it all."""
    out = tmp_path / "b"
    manifest = load_manifest(_manifest(tmp_path, media))
    first = build(manifest, out, workers=1, show_progress=False)
    assert first.errors["unreadable"] + first.errors["zero_frames"] == 1
    videos = {r["video_id"]: r for r in pq.read_table(out / "tables" / "videos.parquet").to_pylist()}
    assert {"site/a b", "site/a-b", "site/c"} <= set(videos)
    keys = pq.read_table(out / "tables" / "shards.parquet").to_pylist()
    sharded_videos = {r["clip_id"].rsplit("/", 1)[0] for r in keys}
    assert {"site/a b", "site/a-b"} <= sharded_videos  # both ids reach the shards
    assert len({r["key"] for r in keys}) == len({r["clip_id"] for r in keys})  # one key per clip

    # an embed failure on one clip (garbage bytes of the same size: the clip marker stays valid)
    clips = pq.read_table(out / "tables" / "clips.parquet").to_pylist()
    victim = next(c for c in clips if c["video_id"] == "site/c")
    path = out / victim["path"]
    path.write_bytes(b"\x00" * path.stat().st_size)
    emb = embed_build(out, show_progress=False)
    assert emb.n_errors == 1
    balance_build(out, BalanceConfig(levels=(2,), splits=("train",)))
    jsonl = tmp_path / "videos.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "video_id": "h/1",
                    "surgery_type": "hernia",
                    "duration_s": 10,
                    "operations": [{"start_s": 0, "end_s": 4, "label": "open", "text": "open the sac"}],
                },
                {
                    "video_id": "h/2",
                    "surgery_type": "hernia",
                    "duration_s": 10,
                    "operations": [{"start_s": 5, "end_s": 2, "label": "bad", "text": "ends before it starts"}],
                },
            ]
        )
    )
    imported = import_hierarchy(out, jsonl)
    assert imported.errors >= 1

    def snapshot() -> tuple[set[str], dict[str, int], set[str]]:
        errs = BuildDir(out).errors()
        stages: dict[str, int] = {}
        for r in errs:
            stages[r["stage"]] = stages.get(r["stage"], 0) + 1
        _, views = query(out, "SELECT view_name FROM duckdb_views() WHERE NOT internal")
        return set(BuildDir(out).table_names()), stages, {v[0] for v in views}

    tables, stages, views = snapshot()
    assert {"embeddings", "clip_balance", "clusters", "hier_videos", "operations", "frames"} <= tables
    assert {"embed", "hierarchy", "probe"} <= set(stages)
    assert {"operation_details", "frame_details", "embeddings", "clip_balance", "errors"} <= views

    again = build(manifest, out, workers=1, show_progress=False)  # the rebuild
    assert again.videos == first.videos
    assert snapshot() == (tables, stages, views)
    with duckdb_catalog(out) as con:  # the catalog file on disk holds the other commands' views too
        on_disk = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"operation_details", "frame_details", "embeddings", "clip_balance"} <= on_disk

    res = runner.invoke(app, ["status", "--build", str(out)])
    assert res.exit_code == 0, res.output
    for word in ["table embeddings", "table clip_balance", "table hier_videos", "operation_details", "embed 1"]:
        assert word in res.output, (word, res.output)
    assert "unbalanced" not in res.output

    # a clip added after balance is reported (status, sampler), never silently dropped
    make_video(media / "d.mp4", 2, size="96x64", source="life=size=96x64:rate=25:seed=5")
    try:
        build(manifest, out, workers=1, show_progress=False)
    finally:
        (media / "d.mp4").unlink()
    new = unbalanced_clips(out)
    assert new and all(c.startswith("site/d/") for c in new)
    res = runner.invoke(app, ["status", "--build", str(out)])
    assert f"unbalanced: {len(new)} clip(s)" in res.output
    with pytest.raises(Exception, match="added after the last balance run"):
        sampler_from_build(out, "train")
    sampler = sampler_from_build(out, "train", unbalanced="include", samples_per_epoch=400)
    assert sampler.unbalanced == len(new)
    drawn = {s["__key__"] for s in sampler}
    assert {sample_key(c) for c in new} & drawn  # the new clips are sampled
    assert sampler_from_build(out, "train", unbalanced="exclude").unbalanced == len(new)


class duckdb_catalog:  # noqa: N801 - a tiny context manager over the catalog file
    def __init__(self, out: Path) -> None:
        import duckdb

        self.con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)

    def __enter__(self):
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


@pytest.mark.slow
def test_retry_errors_reruns_exactly_the_failed_units(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "b"
    manifest = _manifest(tmp_path, media, "retry")
    build(load_manifest(manifest), out, workers=1, show_progress=False)
    state = out / "_state"
    before = {p: p.stat().st_mtime_ns for p in state.rglob("*.json")}
    failed = [p for p in before if json.loads(p.read_text()).get("errors")]
    assert len(failed) == 1  # the broken file's probe
    time.sleep(0.01)
    res = runner.invoke(app, ["build", str(manifest), "--out", str(out), "--no-progress", "--retry-errors", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert re.search(r"failed units retried\s*│\s*1\s*│", res.output), res.output
    changed = {p for p in before if p.exists() and p.stat().st_mtime_ns != before[p]}
    unit_markers = {p for p in changed if p.parent.name != "shard"}
    assert unit_markers == set(failed)  # exactly the failed unit re-ran
    plain = runner.invoke(app, ["build", str(manifest), "--out", str(out), "--no-progress", "-j", "1"])
    assert "failed units retried" not in plain.output


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "b"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from corpus.build_dir import BuildDir
                with BuildDir({str(out)!r}).writing("build"):
                    print("held", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BuildDirLocked, match=f"pid {holder.pid}"):
            with BuildDir(out).writing("embed"):
                pass
        assert BuildDir(out).lock_holder()["pid"] == holder.pid
        (tmp_path / "empty").mkdir()
        manifest = _manifest(tmp_path, tmp_path / "empty")
        res = subprocess.run(
            [sys.executable, "-m", "cli.main", "build", str(manifest), "--out", str(out), "--no-progress"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert res.returncode != 0
        assert f"pid {holder.pid}" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    assert BuildDir(out).lock_holder() is None  # the kernel released it with the holder
    with BuildDir(out).writing("build"):
        with BuildDir(out).writing("embed"):  # re-entrant within one process
            assert BuildDir(out).lock_holder()["pid"] == os.getpid()


def test_videos_planned_in_another_source_are_recorded_not_dropped(tmp_path: Path) -> None:
    uri = "http://127.0.0.1:9/same.mp4"  # nothing listens: the kept video's fetch fails, the other is never fetched
    manifest = write_manifest(
        tmp_path / "m.yaml",
        {
            "name": "lists",
            "sources": [
                {"name": "a", "domain": "open", "access": "http", "root": str(tmp_path), "videos": [{"uri": uri}]},
                {"name": "b", "domain": "open", "access": "http", "root": str(tmp_path), "videos": [{"uri": uri}]},
            ],
        },
    )
    out = tmp_path / "b"
    build(load_manifest(manifest), out, workers=1, show_progress=False)
    rows = BuildDir(out).read_rows("planned_out")
    assert [(r["video_id"], r["reason"], r["kept_in"], r["key"]) for r in rows] == [
        ("b/same", "overlap", "a", "url:http://127.0.0.1:9/same.mp4")
    ]
    assert [e["video_id"] for e in BuildDir(out).errors(["fetch"])] == ["a/same"]
