"""Local executor: one process pool (``spawn``: decoders do not survive ``fork``) for all stages of a build,
with a rich progress bar per stage.

>>> with LocalExecutor(workers=2) as ex:  # doctest: +SKIP
...     out = ex.run("build/demo", ProbeStage(), rows)
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from builders.executors.base import Executor, StageOutput, check_columns, gather, pending_units, run_unit
from builders.stages.base import Stage, UnitResult
from corpus.progress import stage_progress

log = logging.getLogger(__name__)

_READY: set[str] = set()  # stages whose setup() ran in this worker
_INTERRUPTED = False


def _on_sigint(signum, frame) -> None:
    """In a worker, Ctrl-C only flags the unit as interrupted: the parent decides to stop, nothing is marked done."""
    global _INTERRUPTED
    _INTERRUPTED = True


def _init_worker(build_dir: str) -> None:
    """Per worker: log to ``<build>/logs/worker-<pid>.log`` and turn Ctrl-C into a flag."""
    handler = logging.FileHandler(Path(build_dir) / "logs" / f"worker-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    signal.signal(signal.SIGINT, _on_sigint)


def _work(stage: Stage, build_dir: str, row: dict) -> UnitResult:
    if stage.name not in _READY:  # check tools once per worker and stage
        stage.setup()
        _READY.add(stage.name)
    return run_unit(build_dir, stage, row, interrupted=lambda: _INTERRUPTED)


class LocalExecutor(Executor):
    """Run units on ``workers`` local processes (1 = in this process, handy for debugging).

    The pool starts on first use and is shared by every stage run through this executor; ``close()`` (or leaving
    the ``with`` block) stops it.
    """

    def __init__(self, workers: int | None = None, show_progress: bool = True, retry_errors: bool = False) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.show_progress = show_progress
        self.retry_errors = retry_errors
        self._pool: ProcessPoolExecutor | None = None
        self._pool_dir: str | None = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def _get_pool(self, build_dir: str) -> ProcessPoolExecutor:
        if self._pool is not None and self._pool_dir != build_dir:
            self.close()
        if self._pool is None:
            (Path(build_dir) / "logs").mkdir(parents=True, exist_ok=True)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(build_dir,),
            )
            self._pool_dir = build_dir
        return self._pool

    def run(self, build_dir: str, stage: Stage, rows, on_progress=None) -> StageOutput:
        rows = sorted(rows, key=stage.unit_id)
        check_columns(stage, rows)
        out = StageOutput()
        todo, results, out.retried = pending_units(build_dir, stage, rows, self.retry_errors)
        results: dict[str, UnitResult]
        out.skipped = len(rows) - len(todo)
        with stage_progress(stage.name, total=len(rows), done=out.skipped, enabled=self.show_progress) as bar:

            def advance(n: int) -> None:
                bar(n)
                if on_progress is not None:
                    on_progress(n)

            if todo:
                stage.setup()  # fail early, in the parent, when a tool is missing
            if self.workers <= 1 or len(todo) <= 1:
                for row in todo:
                    results[stage.unit_id(row)] = run_unit(build_dir, stage, row)
                    advance(1)
            elif todo:
                pool = self._get_pool(build_dir)
                by_cost = sorted(todo, key=lambda r: (-stage.cost(r), stage.unit_id(r)))  # longest first
                pending = {pool.submit(_work, stage, build_dir, row): row for row in by_cost}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            row = pending.pop(fut)
                            results[stage.unit_id(row)] = fut.result()
                            log.info("%s: %s done", stage.name, stage.unit_id(row))
                            advance(1)
                except KeyboardInterrupt:
                    log.warning("%s: interrupted; %d unit(s) not finished", stage.name, len(pending))
                    self.close(cancel=True)
                    raise
        out.ran = len(todo)
        return gather(stage, rows, results, out)
