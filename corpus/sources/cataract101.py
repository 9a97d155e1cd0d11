"""Cataract-101 (ITEC Klagenfurt): 101 cataract surgeries at 25 fps, phase start frames.

Native files (``;``-separated, one header line each): ``annotations.csv`` ``VideoID;FrameNo;Phase`` (a phase starts
at FrameNo and lasts until the next row of the same video; the last lasts to the video's end), ``videos.csv``
``VideoID;Frames;FPS;Surgeon;Experience`` and ``phases.csv`` ``Phase;Meaning``. Videos: ``videos/case_<id>.mp4``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.ids import video_id
from corpus.sources._common import as_float, as_int, bad, find, read_csv

SOURCE = "cataract-101"


def _one(root: Path, name: str) -> Path:
    return find(root, name, f"**/{name}")[0]


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    ann_path, vid_path, ph_path = (_one(root, n) for n in ("annotations.csv", "videos.csv", "phases.csv"))
    phases = {
        as_int(ph_path, n, r["phase"], "Phase"): r["meaning"] for n, r in read_csv(ph_path, ";", ("Phase", "Meaning"))
    }
    videos: dict[int, dict] = {}
    for n, r in read_csv(vid_path, ";", ("VideoID", "Frames", "FPS")):
        vid_num = as_int(vid_path, n, r["videoid"], "VideoID")
        native = f"case_{vid_num}"
        videos[vid_num] = {
            "video_id": video_id(SOURCE, native),
            "native_id": native,
            "fps": as_float(vid_path, n, r["fps"], "FPS"),
            "n_frames": as_int(vid_path, n, r["frames"], "Frames"),
            "annotation_file": str(ann_path),
        }
    starts: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for n, r in read_csv(ann_path, ";", ("VideoID", "FrameNo", "Phase")):
        v = as_int(ann_path, n, r["videoid"], "VideoID")
        f = as_int(ann_path, n, r["frameno"], "FrameNo")
        p = as_int(ann_path, n, r["phase"], "Phase")
        if v not in videos:
            raise bad(ann_path, n, f"video {v} is not in {vid_path.name}")
        if p not in phases:
            raise bad(ann_path, n, f"phase {p} is not in {ph_path.name}")
        if starts[v] and f < starts[v][-1][0]:
            raise bad(ann_path, n, f"frame {f} is before the previous start {starts[v][-1][0]} of video {v}")
        starts[v].append((f, p, n))
    out = ParsedAnnotations(SOURCE, videos=[videos[v] for v in sorted(videos)])
    for v, rows in sorted(starts.items()):
        meta = videos[v]
        for i, (f, p, n) in enumerate(rows):
            end = rows[i + 1][0] if i + 1 < len(rows) else meta["n_frames"]
            if end < f:
                raise bad(ann_path, n, f"phase starts at frame {f}, after the video's last frame {end}")
            out.segments.append(segment(meta["video_id"], "phase", phases[p], p, f, end, meta["fps"]))
    return out
