"""PSI-AVA (BCV-Uniandes, TAPIR): 8 radical prostatectomies, keyframes with phases, steps, tools and actions.

Native files (AVA-style, no header): ``annotations/{train,val}.csv`` rows ``case, frame, box, x1, y1, x2, y2,
action1, action2, action3, tool, step, phase`` (actions 1-16 with -1 padding, tools 1-7, steps 0-20, phases 0-10;
frame = index of the 1 fps frame ``CASEnnn/frame.jpg``) and ``surgery_{PHASES,STEPS,TOOLS,ACTIONS}_list.pbtxt``
label maps ``label { name: "..." label_id: N ... }``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.annotations import ParsedAnnotations, frame_table, runs
from corpus.ids import video_id
from corpus.sources._common import bad, find, read_columns

SOURCE = "psi-ava"
FPS = 1.0
N_COLS = 13
_COLS = ("case", "frame", "box", "x1", "y1", "x2", "y2", "action1", "action2", "action3", "tool", "step", "phase")
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


def parse_csv(path: Path, maps: dict[str, dict[int, str]]) -> pa.Table:
    """One AVA-style CSV, checked whole-column: columns case, frame, action1-3, tool, step, phase (int64)."""
    cols = read_columns(
        path,
        _COLS,
        separators=",",
        collapse=False,
        malformed="{got} fields, expected {n} (case, frame, box, x1..y2, 3 actions, tool, step, phase)",
        ints=("frame", *_COLS[7:]),
    )
    frame, frame_bad = cols.ints("frame")
    ints = {c: cols.ints(c) for c in _COLS[7:]}
    label_bad = np.zeros(len(frame), bool)
    for c in _COLS[7:]:
        label_bad |= ints[c][1]

    def not_int_label(k: int) -> str:
        value = next(cols.table.column(c)[k].as_py() for c in _COLS[7:] if ints[c][1][k])
        return f"label must be an integer (got {value!r})"

    problems = [(frame_bad, cols.not_int("frame", "frame")), (label_bad, not_int_label)]
    for kind, col in (("phases", "phase"), ("steps", "step"), ("tools", "tool")):
        values = ints[col][0]
        problems.append(
            (
                ~label_bad & ~np.isin(values, list(maps[kind])),
                lambda k, v=values, w=kind: f"{w[:-1]} id {v[k]} not in the label map",
            )
        )
    # one phase/step per frame of a case: a later row that disagrees with the frame's first row is the bad one
    case = pc.index_in(cols.table.column("case"), pc.unique(cols.table.column("case"))).to_numpy()
    key = np.stack([case, frame], 1)
    _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    ps = np.stack([ints["phase"][0], ints["step"][0]], 1)
    differs = (ps != ps[first][group]).any(axis=1)
    problems.append(
        (differs, lambda k: f"frame {frame[k]} of {cols.table.column('case')[k].as_py()} has two phase/step labels")
    )
    cols.check(*problems)
    return pa.table(
        {"case": cols.table.column("case"), "frame": frame, **{c: ints[c][0] for c in _COLS[7:]}},
    )


def _names(ids: np.ndarray, mapping: dict[int, str]) -> pa.Array:
    """Label names of ``ids`` (an id missing from ``mapping`` is named by its number)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return pa.array([mapping.get(int(i), str(i)) for i in unique], pa.string()).take(pa.array(inverse.reshape(-1)))


def parse(root: Path) -> ParsedAnnotations:
    """Every ``annotations/{train,val,test}.csv``; a frame in several files takes the last file's rows."""
    root = Path(root)
    maps = _maps(root)
    files = find(root, "**/annotations/train.csv", "**/annotations/val.csv", "**/annotations/test.csv")
    tables = []
    for i, f in enumerate(files):
        t = parse_csv(f, maps)
        tables.append(t.append_column("file", pa.array(np.full(t.num_rows, i, np.int64))))
    rows = pa.concat_tables(tables)
    cases = pc.unique(rows.column("case")).sort()
    code = pc.index_in(rows.column("case"), cases).to_numpy()
    frame = rows.column("frame").to_numpy()
    file_ = rows.column("file").to_numpy()
    width = int(frame.max(initial=0)) + 1
    key = code * width + frame
    last = np.zeros(key.max(initial=0) + 1, np.int64)
    np.maximum.at(last, key, file_)
    keep = file_ == last[key]  # the last file holding a frame of a case replaces the earlier ones
    code, frame, key = code[keep], frame[keep], key[keep]
    col = {c: rows.column(c).to_numpy()[keep] for c in ("phase", "step", "tool", "action1", "action2", "action3")}
    out = ParsedAnnotations(SOURCE)
    tables = []
    # per (case, frame): its phase and step (one per frame), its tools and actions (each distinct id once, sorted)
    _, first = np.unique(key, return_index=True)
    acts = np.concatenate([col["action1"], col["action2"], col["action3"]])
    act_key = np.concatenate([key, key, key])
    per_level = {
        "phase": (key[first], col["phase"][first], maps["phases"]),
        "step": (key[first], col["step"][first], maps["steps"]),
        "tool": _distinct(key, col["tool"]) + (maps["tools"],),
        "action": _distinct(act_key[acts != -1], acts[acts != -1]) + (maps["actions"],),
    }
    for c in range(len(cases)):
        native = cases[c].as_py()
        vid = video_id(SOURCE, native)
        for level in ("phase", "step"):
            k, ids, names = per_level[level]
            mine = k // width == c
            frames, labels = k[mine] % width, _names(ids[mine], names)
            out.segments += runs(vid, level, frames, labels, pa.array(ids[mine], pa.int32()), FPS)
        for level in ("action", "phase", "step", "tool"):
            k, ids, names = per_level[level]
            mine = k // width == c
            tables.append(frame_table(vid, level, k[mine] % width, FPS, _names(ids[mine], names), ids[mine]))
        out.videos.append(
            {"video_id": vid, "native_id": native, "fps": FPS, "n_frames": None, "annotation_file": None}
        )
    out.frame_labels = pa.concat_tables([out.frame_labels, *tables])
    return out


def _distinct(key: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct (key, id) pair once, sorted by key then id."""
    pairs = np.unique(np.stack([key, ids], 1), axis=0).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]
