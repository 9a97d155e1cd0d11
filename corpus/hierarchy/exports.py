"""Task exports of a hierarchy build dir.

- ``tal``: ActivityNet-style JSON for temporal action localization
  (``{"version", "taxonomy", "database": {video_id: {subset, duration, url, surgery_type, annotations:
  [{segment: [s, e], label}]}}}``; subsets ``training``/``testing``);
- ``retrieval``: JSONL of (sample, text) pairs at each level (video: description/title; operation: its text;
  frame: its caption), each with its WebDataset key, split and surgery type;
- ``recognition``: CSV of operation labels (``video_id,index,key,start_s,end_s,label,label_id,split``),
  ``label_id`` by sorted label name.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc

from corpus.atomic import temp_sibling
from corpus.hierarchy.build import load_hierarchy
from corpus.hierarchy.models import humanize

Task = Literal["tal", "retrieval", "recognition"]
SUBSETS = {"train": "training", "test": "testing", "val": "validation"}


def _atomic_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def tal_json(build_dir: str | Path) -> dict:
    """ActivityNet-style ground truth of the operations."""
    h = load_hierarchy(build_dir)
    database = {}
    for v in sorted(h.videos, key=lambda v: v["video_id"]):
        anns = [
            {"segment": [o["start_s"], o["end_s"]], "label": o["label"]}
            for o in sorted(h.operations, key=lambda o: o["start_s"])
            if o["video_id"] == v["video_id"] and o["label"]
        ]
        database[v["video_id"]] = {
            "subset": SUBSETS.get(v.get("split") or "", v.get("split") or "unsplit"),
            "duration": v.get("duration_s"),
            "url": v.get("url"),
            "surgery_type": v.get("surgery_type"),
            "annotations": anns,
        }
    labels = sorted({o["label"] for o in h.operations if o["label"]})
    taxonomy = [{"nodeId": i, "nodeName": name, "parentId": None, "parentName": None} for i, name in enumerate(labels)]
    return {"version": "surgcorpus-hierarchy-1", "taxonomy": taxonomy, "database": database}


def retrieval_pairs(build_dir: str | Path) -> list[dict]:
    """Text pairs at each level; samples without text are left out."""
    h = load_hierarchy(build_dir)
    stype = {v["video_id"]: v.get("surgery_type") for v in h.videos}
    pairs = []
    for v in h.videos:
        text = v.get("description") or v.get("title")
        if text:
            pairs.append(
                {
                    "level": "video",
                    "key": v["key"],
                    "video_id": v["video_id"],
                    "split": v.get("split"),
                    "surgery_type": v.get("surgery_type"),
                    "text": text,
                }
            )
    for o in h.operations:
        text = o.get("text") or humanize(o.get("label") or "")
        if text:
            pairs.append(
                {
                    "level": "operation",
                    "key": o["key"],
                    "video_id": o["video_id"],
                    "split": o.get("split"),
                    "surgery_type": stype.get(o["video_id"]),
                    "text": text,
                    "start_s": o["start_s"],
                    "end_s": o["end_s"],
                    "label": o.get("label"),
                }
            )
    captioned = h.frames.filter(
        pc.and_kleene(h.frames.column("caption").is_valid(), pc.not_equal(h.frames.column("caption"), ""))
    )
    cols = [captioned.column(c).to_pylist() for c in ("key", "video_id", "split", "caption", "t_s", "label")]
    for key, vid, split, caption, t_s, label in zip(*cols, strict=True):
        pairs.append(
            {
                "level": "frame",
                "key": key,
                "video_id": vid,
                "split": split,
                "surgery_type": stype.get(vid),
                "text": caption,
                "t_s": t_s,
                "label": label,
            }
        )
    order = {"video": 0, "operation": 1, "frame": 2}
    return sorted(pairs, key=lambda p: (order[p["level"]], p["key"]))


def recognition_rows(build_dir: str | Path) -> list[dict]:
    """Operation-recognition labels, one row per labelled operation."""
    h = load_hierarchy(build_dir)
    labels = {name: i for i, name in enumerate(sorted({o["label"] for o in h.operations if o["label"]}))}
    rows = [
        {
            "video_id": o["video_id"],
            "index": o["index"],
            "key": o["key"],
            "start_s": o["start_s"],
            "end_s": o["end_s"],
            "label": o["label"],
            "label_id": labels[o["label"]],
            "split": o.get("split"),
        }
        for o in h.operations
        if o["label"]
    ]
    return sorted(rows, key=lambda r: (r["video_id"], r["index"]))


def export_task(build_dir: str | Path, task: Task, out: str | Path) -> Path:
    """Write one task export to ``out`` atomically."""
    out = Path(out)
    if task == "tal":
        return _atomic_text(out, json.dumps(tal_json(build_dir), indent=1, sort_keys=True) + "\n")
    if task == "retrieval":
        return _atomic_text(out, "".join(json.dumps(p, sort_keys=True) + "\n" for p in retrieval_pairs(build_dir)))
    if task == "recognition":
        rows = recognition_rows(build_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(out)
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, ["video_id", "index", "key", "start_s", "end_s", "label", "label_id", "split"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
        return out
    raise ValueError(f"unknown task {task!r} (choose tal, retrieval or recognition)")
