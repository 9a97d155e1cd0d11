"""PSI-AVA (BCV-Uniandes, TAPIR): 8 radical prostatectomies, keyframes with phases, steps, tools and actions.

Native files (AVA-style, no header): ``annotations/{train,val}.csv`` rows ``case, frame, box, x1, y1, x2, y2,
action1, action2, action3, tool, step, phase`` (actions 1-16 with -1 padding, tools 1-7, steps 0-20, phases 0-10;
frame = index of the 1 fps frame ``CASEnnn/frame.jpg``) and ``surgery_{PHASES,STEPS,TOOLS,ACTIONS}_list.pbtxt``
label maps ``label { name: "..." label_id: N ... }``.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

from corpus.annotations import ParsedAnnotations, frame_label, runs
from corpus.ids import video_id
from corpus.sources._common import as_int, bad, find

SOURCE = "psi-ava"
FPS = 1.0
N_COLS = 13
_LABEL = re.compile(r'label\s*\{\s*name:\s*"([^"]*)"\s*label_id:\s*(\d+)', re.S)


def parse_pbtxt(path: Path) -> dict[int, str]:
    found = {int(i): name for name, i in _LABEL.findall(path.read_text(encoding="utf-8"))}
    if not found:
        raise bad(path, None, "no 'label { name: ... label_id: ... }' entries")
    return found


def _maps(root: Path) -> dict[str, dict[int, str]]:
    out = {}
    for kind in ("PHASES", "STEPS", "TOOLS", "ACTIONS"):
        hits = find(root, f"**/surgery_{kind}_list.pbtxt")
        out[kind.lower()] = parse_pbtxt(hits[0])
    return out


def parse_csv(path: Path, maps: dict[str, dict[int, str]]) -> dict[str, dict[int, dict]]:
    """case -> frame -> {phase, step, tools, actions}."""
    cases: dict[str, dict[int, dict]] = defaultdict(dict)
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row:
                continue
            if len(row) != N_COLS:
                raise bad(
                    path,
                    n,
                    f"{len(row)} fields, expected {N_COLS} (case, frame, box, x1..y2, 3 actions, tool, step, phase)",
                )
            case = row[0].strip()
            frame = as_int(path, n, row[1], "frame")
            ints = [as_int(path, n, v, "label") for v in row[7:]]
            actions, tool, step, phase = ints[:3], ints[3], ints[4], ints[5]
            for kind, value in (("phases", phase), ("steps", step), ("tools", tool)):
                if value not in maps[kind]:
                    raise bad(path, n, f"{kind[:-1]} id {value} not in the label map")
            entry = cases[case].setdefault(frame, {"phase": phase, "step": step, "tools": set(), "actions": set()})
            if (entry["phase"], entry["step"]) != (phase, step):
                raise bad(path, n, f"frame {frame} of {case} has two phase/step labels")
            entry["tools"].add(tool)
            entry["actions"].update(a for a in actions if a != -1)
    return cases


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    maps = _maps(root)
    out = ParsedAnnotations(SOURCE)
    merged: dict[str, dict[int, dict]] = defaultdict(dict)
    for f in find(root, "**/annotations/train.csv", "**/annotations/val.csv", "**/annotations/test.csv"):
        for case, frames in parse_csv(f, maps).items():
            merged[case].update(frames)
    for case in sorted(merged):
        vid = video_id(SOURCE, case)
        frames = sorted(merged[case])
        for level, key, kind in (("phase", "phase", "phases"), ("step", "step", "steps")):
            labels = [(maps[kind][merged[case][f][key]], merged[case][f][key]) for f in frames]
            out.segments += runs(vid, level, frames, labels, FPS)
            out.frame_labels += [
                frame_label(vid, level, f, FPS, n, i) for f, (n, i) in zip(frames, labels, strict=True)
            ]
        for f in frames:
            for level, key, kind in (("tool", "tools", "tools"), ("action", "actions", "actions")):
                out.frame_labels += [
                    frame_label(vid, level, f, FPS, maps[kind].get(i, str(i)), i) for i in sorted(merged[case][f][key])
                ]
        out.videos.append({"video_id": vid, "native_id": case, "fps": FPS, "n_frames": None, "annotation_file": None})
    return out
