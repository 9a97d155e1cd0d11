"""SAR-RARP50 (EndoVis 2022): 50 robot-assisted prostatectomy suturing videos, 8 actions at 10 Hz.

Native files: ``video_NN/action_discrete.txt``, one ``frame,action_id`` line per annotated frame (every 6th frame
of the 60 fps ``video_left.avi``); actions 0 other ... 7 returning/dropping the needle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpus.annotations import ParsedAnnotations, concat
from corpus.ids import video_id
from corpus.sources._common import find
from corpus.sources._framewise import parse_numeric

SOURCE = "sar-rarp50"
FPS = 60.0
ACTIONS = {
    0: "other",
    1: "picking_up_the_needle",
    2: "positioning_the_needle_tip",
    3: "pushing_the_needle_through_the_tissue",
    4: "pulling_the_needle_out_of_the_tissue",
    5: "tying_a_knot",
    6: "cutting_the_suture",
    7: "returning_dropping_the_needle",
}


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """One piece per ``video_NN/action_discrete.txt``."""
    for f in find(Path(root), "*/action_discrete.txt", "**/action_discrete.txt"):
        p = parse_numeric(f, video_id(SOURCE, f.parent.name), "action", ACTIONS, FPS, SOURCE)
        for s in p.segments:  # label: the id (benchmark label map); text: the action's name (clip folder)
            s["label"], s["text"] = str(s["label_id"]), s["label"]
        yield p


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
