"""Local executor: a process pool (``spawn``: decoders do not survive ``fork``) with a rich progress bar."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from builders.executors.base import Executor, StageOutput, check_columns, load_done, run_unit
from builders.stages.base import Stage, UnitResult
from corpus.progress import stage_progress

log = logging.getLogger(__name__)

_STAGE: Stage | None = None
_INTERRUPTED = False


def _on_sigint(signum, frame) -> None:
    """In a worker, Ctrl-C only flags the unit as interrupted: the parent decides to stop, nothing is marked done."""
    global _INTERRUPTED
    _INTERRUPTED = True


def _init_worker(stage: Stage, build_dir: str) -> None:
    """Per worker: remember the stage, log to ``<build>/logs/<stage>-<pid>.log``, check tools once."""
    global _STAGE
    _STAGE = stage
    handler = logging.FileHandler(Path(build_dir) / "logs" / f"{stage.name}-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    signal.signal(signal.SIGINT, _on_sigint)
    stage.setup()


def _work(build_dir: str, row: dict) -> UnitResult:
    assert _STAGE is not None
    return run_unit(build_dir, _STAGE, row, interrupted=lambda: _INTERRUPTED)


class LocalExecutor(Executor):
    """Run units on ``workers`` local processes (1 = in this process, handy for debugging)."""

    def __init__(self, workers: int | None = None, show_progress: bool = True) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.show_progress = show_progress

    def run(self, build_dir: str, stage: Stage, rows, on_progress=None) -> StageOutput:
        rows = sorted(rows, key=stage.unit_id)
        check_columns(stage, rows)
        out = StageOutput()
        results: dict[str, UnitResult] = {}
        todo = []
        for row in rows:
            done = load_done(build_dir, stage, row)
            if done is None:
                todo.append(row)
            else:
                results[stage.unit_id(row)] = done
        out.skipped = len(rows) - len(todo)
        with stage_progress(stage.name, total=len(rows), done=out.skipped, enabled=self.show_progress) as advance:
            if todo:
                stage.setup()  # fail early, in the parent, when a tool is missing
            if self.workers <= 1 or len(todo) <= 1:
                for row in todo:
                    results[stage.unit_id(row)] = run_unit(build_dir, stage, row)
                    advance(1)
            elif todo:
                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(
                    max_workers=min(self.workers, len(todo)),
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=(stage, build_dir),
                ) as pool:
                    pending = {pool.submit(_work, build_dir, row): row for row in todo}
                    try:
                        while pending:
                            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in finished:
                                row = pending.pop(fut)
                                results[stage.unit_id(row)] = fut.result()
                                log.info("%s: %s done", stage.name, stage.unit_id(row))
                                advance(1)
                    except KeyboardInterrupt:
                        log.warning("%s: interrupted; %d unit(s) not started", stage.name, len(pending))
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        out.ran = len(todo)
        for row in rows:
            res = results[stage.unit_id(row)]
            out.rows.extend(res.rows)
            out.errors.extend(res.errors)
        return out
