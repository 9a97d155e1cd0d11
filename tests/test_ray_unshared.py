"""A Ray node that cannot see the build dir: the build refuses before any work, naming the node.

The second node runs in its own mount namespace (``unshare -m``) with the test's folder covered by an empty tmpfs,
so it sees the same paths with different contents, the way a cluster node without the shared mount would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import generated_corpus, write_manifest

REPO = Path(__file__).resolve().parents[1]
NODE = Path(__file__).with_name("ray_node.py")


def _can_unshare(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none {tmp}"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def blind_cluster(tmp_path):
    """A head node that sees ``tmp_path`` and a worker node that does not (both on 127.0.0.1)."""
    pytest.importorskip("ray")
    if not _can_unshare(tmp_path):
        pytest.skip("needs `unshare -m` with mount rights (root in a Linux container)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        import ray._private.ray_constants as ray_constants
        from ray.cluster_utils import Cluster

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        head = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "object_store_memory": 80 << 20, "include_dashboard": False},
        )
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
        cmd = f"mount -t tmpfs none {tmp_path} && exec {sys.executable} {NODE} {head.gcs_address}"
        worker = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            import ray

            ray.init(address=head.address, logging_level="ERROR", log_to_driver=False)
            deadline = time.monotonic() + 90
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                if time.monotonic() > deadline or worker.poll() is not None:
                    pytest.fail("the second Ray node did not join within 90 s")
                time.sleep(0.5)
            ray.shutdown()
            yield head
        finally:
            import ray

            ray.shutdown()
            os.killpg(worker.pid, 15)
            worker.wait(30)
            head.shutdown()


def test_build_refuses_a_cluster_whose_node_cannot_see_the_build_dir(blind_cluster, tmp_path, generated):
    manifest = write_manifest(tmp_path / "gen.yaml", generated_corpus(generated))
    out = tmp_path / "out"
    args = ["build", str(manifest), "--out", str(out), "--no-progress", "--executor", "ray"]
    result = CliRunner().invoke(app, [*args, "--address", blind_cluster.address])
    assert result.exit_code == 2, result.output
    assert f"{out}: not visible on Ray node(s)" in result.output
    assert "every node mounts at the same path" in result.output
    assert not list(out.glob("_state/*/*.json"))  # refused before any unit ran
