"""AutoLaparo task 1 (CUHK): 21 laparoscopic hysterectomies, 7 phases, labels at 1 fps.

Native files: ``labels/label_NN.txt``, header ``Frame<TAB>Phase``, phase ids 1-7, one row per second
(the frame index is the second); videos ``videos/NN.mp4`` (25 fps).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpus.annotations import ParsedAnnotations, concat
from corpus.ids import video_id
from corpus.sources._common import find
from corpus.sources._framewise import parse_numeric

SOURCE = "autolaparo"
FPS = 1.0
PHASES = {
    1: "Preparation",
    2: "Dividing Ligament and Peritoneum",
    3: "Dividing Uterine Vessels and Ligament",
    4: "Transecting the Vagina",
    5: "Specimen Removal",
    6: "Suturing",
    7: "Washing",
}


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """One piece per ``label_NN.txt``."""
    for f in find(Path(root), "**/label_[0-9][0-9].txt"):
        p = parse_numeric(f, video_id(SOURCE, f.stem.removeprefix("label_")), "phase", PHASES, FPS, SOURCE)
        for s in p.segments:  # the benchmark label map is keyed by the native id
            s["label"] = str(s["label_id"])
        yield p


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
