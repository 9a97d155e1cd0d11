"""CholecT50 (CAMMA): 50 cholecystectomies, action triplets <instrument, verb, target> and phases at 1 fps.

Native files: ``labels/VIDNN.json`` with ``categories`` (instrument, verb, target, triplet, phase id -> name),
``fps``, ``num_frames`` and ``annotations``: frame index -> list of 15-value rows
``[triplet, instrument, conf, x, y, w, h, verb, target, conf, x, y, w, h, phase]`` (-1 where absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa

from corpus.annotations import ParsedAnnotations, concat, frame_table, runs
from corpus.ids import video_id
from corpus.sources._common import bad, find, read_json

SOURCE = "cholect50"
ROW_LEN = 15


def _id_map(path: Path, ids: dict[int, str], values: np.ndarray) -> pa.Array:
    known = np.array(sorted(ids), dtype=np.int64)
    return pa.array([ids[int(i)] for i in known], pa.string()).take(pa.array(np.searchsorted(known, values)))


def parse_file(path: Path) -> ParsedAnnotations:
    """One ``VIDNN.json``: phase runs as segments; per-frame ``phase`` and ``triplet`` labels as columns."""
    data = read_json(path)
    for key in ("categories", "annotations"):
        if not isinstance(data, dict) or key not in data:
            raise bad(path, None, f"missing top-level key {key!r}")
    cats = data["categories"]
    try:
        phases = {int(k): v for k, v in cats["phase"].items()}
        triplets = {int(k): v for k, v in cats["triplet"].items()}
    except (KeyError, AttributeError, ValueError):
        raise bad(path, None, "categories must map 'phase' and 'triplet' ids to names") from None
    fps = float(data.get("fps") or 1.0)
    native = path.stem
    vid = video_id(SOURCE, native)
    ann = data["annotations"]
    for key in ann:
        if not str(key).isdigit():
            raise bad(path, None, f"annotations: frame key must be an integer (got {key!r})")
    keys = sorted(ann, key=int)
    for key in keys:
        rows = ann[key]
        if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != ROW_LEN for r in rows):
            raise bad(path, None, f"annotations[{key}]: expected a list of {ROW_LEN}-value rows")
    counts = np.array([len(ann[k]) for k in keys], dtype=np.int64)
    flat = np.array(list(chain.from_iterable(chain.from_iterable(ann[k] for k in keys))), dtype=np.float64)
    table = flat.reshape(-1, ROW_LEN)
    row_frame = np.repeat(np.array([int(k) for k in keys], dtype=np.int64), counts)
    row_key = np.repeat(np.arange(len(keys)), counts)
    triplet, phase = table[:, 0].astype(np.int64), table[:, -1].astype(np.int64)
    # one phase per frame: the rows of a frame that carry a phase must agree
    has = phase != -1
    lo = np.full(len(keys), np.iinfo(np.int64).max)
    hi = np.full(len(keys), np.iinfo(np.int64).min)
    np.minimum.at(lo, row_key[has], phase[has])
    np.maximum.at(hi, row_key[has], phase[has])
    labelled = hi >= lo
    problems = [
        (
            labelled & (lo != hi),
            lambda k: f"rows disagree on the phase ({sorted({int(r[-1]) for r in ann[keys[k]] if r[-1] != -1})})",
        ),
        (labelled & ~np.isin(lo, list(phases)), lambda k: f"phase {lo[k]} not in categories.phase"),
    ]
    bad_triplet = np.zeros(len(keys), bool)
    bad_triplet[row_key[(triplet != -1) & ~np.isin(triplet, list(triplets))]] = True
    problems.append(
        (bad_triplet, lambda k: f"triplet {_first_unknown(ann[keys[k]], triplets)} not in categories.triplet")
    )
    first = min(((int(np.flatnonzero(m)[0]), msg) for m, msg in problems if m.any()), default=None, key=lambda x: x[0])
    if first is not None:
        k, msg = first
        raise bad(path, None, f"annotations[{keys[k]}]: {msg(k)}")
    phase_frames = np.array([int(k) for k in keys], dtype=np.int64)[labelled]
    phase_ids = lo[labelled]
    phase_labels = _id_map(path, phases, phase_ids) if len(phase_ids) else pa.array([], pa.string())
    with_triplet = triplet != -1
    trip_ids = triplet[with_triplet]
    trip_labels = _id_map(path, triplets, trip_ids) if len(trip_ids) else pa.array([], pa.string())
    out = ParsedAnnotations(SOURCE)
    out.segments = runs(
        vid,
        "phase",
        phase_frames,
        phase_labels,
        pa.array(phase_ids, pa.int32()),
        fps,
        end_frame=data.get("num_frames"),
    )
    out.frame_labels = pa.concat_tables(
        [
            frame_table(vid, "triplet", row_frame[with_triplet], fps, trip_labels, trip_ids),
            frame_table(vid, "phase", phase_frames, fps, phase_labels, phase_ids),
        ]
    )
    out.videos = [
        {
            "video_id": vid,
            "native_id": native,
            "fps": fps,
            "n_frames": data.get("num_frames"),
            "annotation_file": str(path),
        }
    ]
    return out


def _first_unknown(rows: list[list], triplets: dict[int, str]) -> int:
    return next(int(r[0]) for r in rows if int(r[0]) != -1 and int(r[0]) not in triplets)


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """One piece per ``VIDNN.json``."""
    for f in find(Path(root), "VID*.json", "**/labels/VID*.json"):
        yield parse_file(f)


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
