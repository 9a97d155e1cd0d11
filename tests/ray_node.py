"""Join a loopback Ray cluster as one more node and wait (``python tests/ray_node.py GCS_ADDRESS``).

What ``ray.cluster_utils.Cluster.add_node`` does, as its own process, so a test can start it in another mount
namespace (``ray start`` refuses a second loopback node, or swaps 127.0.0.1 for the host's address)."""

import signal
import sys

import ray._private.ray_constants as ray_constants

ray_constants.ENABLE_RAY_CLUSTER = False  # every address on 127.0.0.1, as in the head started by the test

from ray._private.node import Node  # noqa: E402
from ray._private.parameter import RayParams  # noqa: E402

params = RayParams(
    gcs_address=sys.argv[1],
    num_cpus=1,
    num_gpus=0,
    object_store_memory=80 << 20,
    min_worker_port=0,
    max_worker_port=0,
    include_log_monitor=False,
    node_manager_port=0,
)
params.dashboard_agent_listen_port = None
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
