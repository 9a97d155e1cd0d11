"""The Ray executor on a real local Ray cluster (a head and one worker node on 127.0.0.1, one CPU each): the
generated corpus builds to the same tables and byte-identical shards as with the local executor; a task whose worker
dies is retried, a unit with bad data or a bug is not."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from builders.executors.base import load_done
from builders.stages.base import Stage, UnitResult
from cli.main import app
from corpus.errors import ErrorRow
from tests.conftest import generated_corpus, write_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """Head + one worker node on loopback; the driver connects through a RayExecutor."""
    pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        # single-machine mode: every node and the driver use 127.0.0.1, nothing binds or connects elsewhere
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        import ray._private.ray_constants as ray_constants
        from ray.cluster_utils import Cluster

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        node = {"num_cpus": 1, "object_store_memory": 80 << 20}
        c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        c.add_node(**node)
        try:
            yield c
        finally:
            import ray

            ray.shutdown()  # whichever executor connected this process (the CLI's or the fixture's)
            c.shutdown()


@pytest.fixture(scope="module")
def executor(cluster):
    from builders.executors.ray import RayExecutor

    ex = RayExecutor(address=cluster.address, show_progress=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ex
    ex.close()


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tables").glob("*.parquet")) if p.stem != "errors"}


def _errors(out: Path) -> list[tuple]:
    # ffmpeg's stderr (``detail``) holds heap addresses that differ from run to run; the rest must match
    keys = ("stage", "video_id", "uri", "kind", "message", "clip_id")
    return sorted(tuple(r[k] for k in keys) for r in pq.read_table(out / "tables" / "errors.parquet").to_pylist())


def _shard_digests(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "shards").rglob("*.tar"))
    }


def test_ray_build_matches_the_local_executor_byte_for_byte(executor, cluster, generated, tmp_path):
    from builders.pipeline import build
    from corpus.manifest import load_manifest

    manifest = write_manifest(tmp_path / "gen.yaml", generated_corpus(generated))
    build(load_manifest(manifest), tmp_path / "local", workers=1, show_progress=False)
    ray = ["--executor", "ray", "--address", cluster.address]
    result = CliRunner().invoke(app, ["build", str(manifest), "--out", str(tmp_path / "ray"), *ray, "--no-progress"])
    assert result.exit_code == 0, result.output

    assert _shard_digests(tmp_path / "ray") == _shard_digests(tmp_path / "local") != {}
    assert _tables(tmp_path / "ray") == _tables(tmp_path / "local")
    assert _errors(tmp_path / "ray") == _errors(tmp_path / "local") != []
    hosts_pids = {p.name for p in (tmp_path / "ray" / "logs").glob("worker-*.log")}
    assert len(hosts_pids) >= 2  # units ran in more than one worker process (one per node)


class _Attempts(Stage):
    """Test stages: each attempt appends a line to ``<row["dir"]>/<video_id>.attempts``."""

    requires = ("video_id", "dir")

    def attempt(self, row: dict) -> int:
        path = Path(row["dir"]) / f"{row['video_id']}.attempts"
        with path.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return len(path.read_text().splitlines())


class CrashOnce(_Attempts):
    name = "crash-once"

    def process(self, row: dict) -> UnitResult:
        if self.attempt(row) == 1:
            os._exit(1)  # the worker process dies: Ray resubmits the task
        return UnitResult(rows=[{"video_id": row["video_id"], "ok": True}])


class BadData(_Attempts):
    name = "bad-data"

    def process(self, row: dict) -> UnitResult:
        self.attempt(row)
        return UnitResult(errors=[ErrorRow(self.name, row["video_id"], None, "unreadable", "bad data")])


class Bug(_Attempts):
    name = "bug"

    def process(self, row: dict) -> UnitResult:
        self.attempt(row)
        raise ValueError("a bug, not bad data")


def test_crashed_tasks_are_retried_bad_data_and_bugs_are_not(executor, tmp_path):
    build_dir = str(tmp_path / "b")
    row = {"video_id": "v", "dir": str(tmp_path)}

    out = executor.run(build_dir, CrashOnce(), [row])
    assert out.rows == [{"video_id": "v", "ok": True}]
    first, second = (tmp_path / "v.attempts").read_text().split()
    assert first != second  # the second attempt ran in a new worker process
    assert load_done(build_dir, CrashOnce(), row) is not None

    bad = executor.run(build_dir, BadData(), [{"video_id": "w", "dir": str(tmp_path)}])
    assert [e.kind for e in bad.errors] == ["unreadable"] and (tmp_path / "w.attempts").read_text().count("\n") == 1

    with pytest.raises(Exception, match="a bug, not bad data"):
        executor.run(build_dir, Bug(), [{"video_id": "z", "dir": str(tmp_path)}])
    assert (tmp_path / "z.attempts").read_text().count("\n") == 1
    assert load_done(build_dir, Bug(), {"video_id": "z", "dir": str(tmp_path)}) is None


def test_every_node_must_see_the_build_dir(executor, tmp_path):
    executor.check_shared(str(tmp_path))  # one machine: every node sees it, and the probe file is gone again
    assert not any(p.name.startswith(".ray-probe-") for p in tmp_path.iterdir())
    assert json.dumps(sorted(os.listdir(tmp_path))) == "[]"


def test_executor_options_are_checked(generated_manifest, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "b")
    local = runner.invoke(app, ["build", str(generated_manifest), "--out", out, "--address", "auto"])
    assert local.exit_code == 2 and "--address needs --executor ray" in local.output
    unknown = runner.invoke(app, ["build", str(generated_manifest), "--out", out, "--executor", "dask"])
    assert unknown.exit_code == 2 and "unknown --executor 'dask'" in unknown.output
    assert not (tmp_path / "b" / "tables").exists()  # refused before any work


def test_a_local_ray_starts_beside_a_running_cluster_with_warm_workers(cluster, tmp_path):
    """With no address the executor starts its own Ray even though another one (the fixture's) runs on this
    machine, and its start-up imports the driver's stage modules in every worker slot."""
    import subprocess
    import sys

    script = (
        "import json, ray, builders.stages.probe\n"
        "from builders.executors.ray import RayExecutor\n"
        "ex = RayExecutor(workers=1, show_progress=False)\n"
        "warmed = ex.start(wait=True)\n"
        "print(json.dumps({'gcs': ray.get_runtime_context().gcs_address, 'warmed': warmed}))\n"
        "ex.close()\n"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["gcs"] != cluster.address  # its own Ray, not the cluster that runs here
    assert len(got["warmed"]) == 1  # one worker slot
    assert {"builders.stages.probe", "builders.executors.ray"} <= set(got["warmed"][0][1])
