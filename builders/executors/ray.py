"""Ray executor: the same units as the local executor, as Ray tasks on a cluster (or on a local Ray it starts).

The executor only schedules: each task runs ``builders.executors.base.run_unit`` on a worker (skip-if-done,
markers and error rows are the base's), so outputs are byte-identical to the local executor's. Units are submitted
longest first, at most ``in_flight`` at a time; a task whose worker or node died is resubmitted by Ray up to
``max_retries`` times, while a unit that fails on bad data is an error row, never retried, and a bug (an exception)
is never retried either.

Every node must see the build dir (and the download cache) at the same path: put them on a filesystem every node
mounts at the same place (NFS, Lustre, a cloud filesystem). ``run`` checks this on every alive node of a cluster
before the first unit and fails with the node's address when one cannot see the build dir. Temp files carry the
host, pid and a random part (``corpus.atomic``), so a unit retried while an earlier attempt still runs never writes
into the other's temp file; the last ``os.replace`` wins with the same bytes.

Worker logs go to ``<build>/logs/worker-<host>-<pid>.log``.

>>> with RayExecutor(address="ray://head:10001") as ex:  # doctest: +SKIP
...     out = ex.run("/shared/build/demo", ProbeStage(), rows)
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path

from builders.executors.base import Executor, StageOutput, check_columns, gather, pending_units, run_unit
from builders.stages.base import Stage, UnitResult
from corpus.errors import SurgcorpusError
from corpus.progress import stage_progress

log = logging.getLogger(__name__)

_READY: set[str] = set()  # stages whose setup() ran in this worker process
_LOGGING: set[str] = set()  # build dirs this worker process logs into


class BuildDirNotShared(SurgcorpusError):
    """A Ray node cannot see the build dir at the driver's path (the command stops before any work)."""

    kind = "build_dir_not_shared"


def _run_task(stage: Stage, build_dir: str, row: dict) -> UnitResult:
    """One unit, on a Ray worker: log to the build dir, check tools once per stage, run it through the base."""
    if build_dir not in _LOGGING:
        logs = Path(build_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / f"worker-{socket.gethostname()}-{os.getpid()}.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        _LOGGING.add(build_dir)
    if stage.name not in _READY:
        stage.setup()
        _READY.add(stage.name)
    return run_unit(build_dir, stage, row)


def _sees(path: str) -> tuple[str, bool]:
    return socket.gethostname(), os.path.exists(path)


class RayExecutor(Executor):
    """Run units as Ray tasks. ``address=None`` starts a local Ray with ``workers`` CPUs (default: all cores);
    otherwise it connects to that cluster (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``).

    ``runtime_env`` is passed to ``ray.init`` (e.g. ``{"env_vars": {"PYTHONPATH": ...}}`` when the project is not
    installed on the nodes); ``cpus_per_task`` reserves CPUs per unit (an ffmpeg process per unit: 1).
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        show_progress: bool = True,
        retry_errors: bool = False,
        max_retries: int = 3,
        cpus_per_task: float = 1,
        in_flight: int | None = None,
        runtime_env: dict | None = None,
    ) -> None:
        self.address = address
        self.workers = workers
        self.show_progress = show_progress
        self.retry_errors = retry_errors
        self.max_retries = max_retries
        self.cpus_per_task = cpus_per_task
        self.in_flight = in_flight
        self.runtime_env = runtime_env
        self._started = False
        self._checked: set[str] = set()
        self._task = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ray(self):
        import ray

        if not ray.is_initialized():
            kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
            if self.runtime_env:
                kwargs["runtime_env"] = self.runtime_env
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False, **kwargs)
            self._started = True
            log.info("ray %s: %s CPUs", self.address or "local", ray.cluster_resources().get("CPU"))
        return ray

    def close(self) -> None:
        """Disconnect from (or stop the local) Ray when this executor started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._checked.clear()
            self._task = None

    def check_shared(self, build_dir: str) -> None:
        """Fail unless every alive node sees ``build_dir`` at the same path (a probe file with a random name)."""
        ray = self._ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        Path(build_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(build_dir) / f".ray-probe-{secrets.token_hex(6)}"
        probe.write_text("")
        try:
            sees = ray.remote(num_cpus=0)(_sees)
            nodes = [n for n in ray.nodes() if n["Alive"]]
            answers = ray.get(
                [
                    sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                        str(probe)
                    )
                    for n in nodes
                ]
            )
        finally:
            probe.unlink(missing_ok=True)
        blind = [f"{n['NodeManagerAddress']} ({host})" for n, (host, ok) in zip(nodes, answers, strict=True) if not ok]
        if blind:
            raise BuildDirNotShared(
                f"{build_dir}: not visible on Ray node(s) {', '.join(blind)}; the build dir and the cache must be on "
                "a filesystem every node mounts at the same path"
            )

    def run(self, build_dir: str, stage: Stage, rows, on_progress=None) -> StageOutput:
        rows = sorted(rows, key=stage.unit_id)
        check_columns(stage, rows)
        out = StageOutput()
        todo, results, out.retried = pending_units(build_dir, stage, rows, self.retry_errors)
        out.skipped = len(rows) - len(todo)
        with stage_progress(stage.name, total=len(rows), done=out.skipped, enabled=self.show_progress) as bar:
            if todo:
                stage.setup()  # fail early, in the driver, when a tool is missing
                ray = self._ray()
                if self.address and build_dir not in self._checked:  # a local Ray is one node: nothing to check
                    self.check_shared(build_dir)
                    self._checked.add(build_dir)
                if self._task is None:  # one remote function for every stage: workers are reused across stages
                    self._task = ray.remote(
                        max_retries=self.max_retries, retry_exceptions=False, num_cpus=self.cpus_per_task
                    )(_run_task)
                task = self._task
                stage_ref = ray.put(stage)
                by_cost = sorted(todo, key=lambda r: (-stage.cost(r), stage.unit_id(r)))  # longest first
                window = self.in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
                pending: dict = {}
                queue = iter(by_cost)
                try:
                    while True:
                        for row in queue:
                            pending[task.remote(stage_ref, build_dir, row)] = row
                            if len(pending) >= window:
                                break
                        if not pending:
                            break
                        finished, _ = ray.wait(list(pending), num_returns=1)
                        for ref in finished:
                            row = pending.pop(ref)
                            results[stage.unit_id(row)] = ray.get(ref)
                            log.info("%s: %s done", stage.name, stage.unit_id(row))
                            bar(1)
                            if on_progress is not None:
                                on_progress(1)
                except KeyboardInterrupt:
                    log.warning("%s: interrupted; %d unit(s) not finished", stage.name, len(pending))
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise
        out.ran = len(todo)
        return gather(stage, rows, results, out)
