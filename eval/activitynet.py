"""ActivityNet detection JSON files: ground truth and predictions as the rows :func:`eval.metrics.detection_map` takes.

Ground truth: ``{"database": {VIDEO: {"annotations": [{"segment": [START, END], "label": LABEL}, ...]}, ...}}``
(an optional ``"subset"`` per video is kept as is; pass ``subset=`` to score one). Predictions:
``{"results": {VIDEO: [{"segment": [START, END], "label": LABEL, "score": SCORE}, ...]}}``. Times in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus.errors import AnnotationError


def _load(path: Path, key: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise AnnotationError(f"{path}: expected an ActivityNet JSON object with a {key!r} mapping of videos")
    return data[key]


def _segment(path: Path, where: str, item: dict, need_score: bool) -> dict:
    try:
        start, end = (float(x) for x in item["segment"])
        row = {"start": start, "end": end, "label": item["label"]}
        if need_score:
            row["score"] = float(item["score"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(
            f"{path}: {where}: expected {{'segment': [start, end], 'label': ...{', score' if need_score else ''}}}, "
            f"got {item!r} ({exc!r})"
        ) from None
    if end < start:
        raise AnnotationError(f"{path}: {where}: segment ends before it starts ({start} > {end})")
    return row


def read_ground_truth(path: str | Path, subset: str | None = None) -> list[dict]:
    path = Path(path)
    rows = []
    for vid, entry in _load(path, "database").items():
        if subset is not None and entry.get("subset") != subset:
            continue
        for i, item in enumerate(entry.get("annotations", [])):
            rows.append({"video": vid, **_segment(path, f"database.{vid}.annotations.{i}", item, False)})
    if not rows:
        raise AnnotationError(f"{path}: no ground-truth segments" + (f" in subset {subset!r}" if subset else ""))
    return rows


def read_predictions(path: str | Path) -> list[dict]:
    path = Path(path)
    rows = []
    for vid, items in _load(path, "results").items():
        if not isinstance(items, list):
            raise AnnotationError(f"{path}: results.{vid}: expected a list of segments")
        for i, item in enumerate(items):
            rows.append({"video": vid, **_segment(path, f"results.{vid}.{i}", item, True)})
    return rows


def write_ground_truth(path: str | Path, rows: list[dict]) -> None:
    db: dict[str, dict] = {}
    for r in rows:
        db.setdefault(r["video"], {"annotations": []})["annotations"].append(
            {"segment": [r["start"], r["end"]], "label": r["label"]}
        )
    Path(path).write_text(json.dumps({"database": db}, indent=1))


def write_predictions(path: str | Path, rows: list[dict]) -> None:
    res: dict[str, list] = {}
    for r in rows:
        res.setdefault(r["video"], []).append(
            {"segment": [r["start"], r["end"]], "label": r["label"], "score": r["score"]}
        )
    Path(path).write_text(json.dumps({"results": res}, indent=1))
