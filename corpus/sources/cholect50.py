"""CholecT50 (CAMMA): 50 cholecystectomies, action triplets <instrument, verb, target> and phases at 1 fps.

Native files: ``labels/VIDNN.json`` with ``categories`` (instrument, verb, target, triplet, phase id -> name),
``fps``, ``num_frames`` and ``annotations``: frame index -> list of 15-value rows
``[triplet, instrument, conf, x, y, w, h, verb, target, conf, x, y, w, h, phase]`` (-1 where absent).
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations, frame_label, runs
from corpus.ids import video_id
from corpus.sources._common import bad, find, read_json

SOURCE = "cholect50"
ROW_LEN = 15


def parse_file(path: Path) -> ParsedAnnotations:
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
    frames: list[int] = []
    labels: list[tuple[str, int]] = []
    out = ParsedAnnotations(SOURCE)
    for key in sorted(data["annotations"], key=lambda k: int(k) if str(k).isdigit() else -1):
        if not str(key).isdigit():
            raise bad(path, None, f"annotations: frame key must be an integer (got {key!r})")
        rows = data["annotations"][key]
        if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != ROW_LEN for r in rows):
            raise bad(path, None, f"annotations[{key}]: expected a list of {ROW_LEN}-value rows")
        frame = int(key)
        phase_ids = {int(r[-1]) for r in rows if r[-1] != -1}
        if len(phase_ids) > 1:
            raise bad(path, None, f"annotations[{key}]: rows disagree on the phase ({sorted(phase_ids)})")
        for ph in phase_ids:
            if ph not in phases:
                raise bad(path, None, f"annotations[{key}]: phase {ph} not in categories.phase")
            frames.append(frame)
            labels.append((phases[ph], ph))
        for r in rows:
            t = int(r[0])
            if t != -1:
                if t not in triplets:
                    raise bad(path, None, f"annotations[{key}]: triplet {t} not in categories.triplet")
                out.frame_labels.append(frame_label(vid, "triplet", frame, fps, triplets[t], t))
    out.segments = runs(vid, "phase", frames, labels, fps, end_frame=data.get("num_frames"))
    out.frame_labels += [frame_label(vid, "phase", f, fps, n, i) for f, (n, i) in zip(frames, labels, strict=True)]
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


def parse(root: Path) -> ParsedAnnotations:
    out = ParsedAnnotations(SOURCE)
    for f in find(Path(root), "VID*.json", "**/labels/VID*.json"):
        p = parse_file(f)
        out.segments += p.segments
        out.frame_labels += p.frame_labels
        out.videos += p.videos
    return out
