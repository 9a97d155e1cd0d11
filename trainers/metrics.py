"""Training metrics as JSON lines: ``<out>/metrics.jsonl``, one object per logged optimizer step.

Every object has ``step``, ``epoch``, ``loss`` (mean over the step's micro-batches and ranks), ``lr``,
``clips_per_s`` (clips per second over all ranks since the previous logged step), ``data_wait`` (fraction of that
wall time spent waiting for the loader: 0 means the model never starved; on GPU, the device's idle share due to
data loading), ``time`` (seconds since the run started), ``gpu_mem_gb`` (peak allocated CUDA memory, on GPU)
and the recipe's own metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL writer; on resume, lines after the checkpoint's step are dropped first (they belong to a
    run that did not reach its next checkpoint and will be logged again)."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._f = path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
