"""M2CAI16-workflow: 41 cholecystectomies at 25 fps (27 train, 14 test), one phase per frame.

Native files: ``train_dataset/workflow_video_NN.txt`` and ``test_dataset/test_workflow_video_NN.txt``, header
``Frame<TAB>Phase``, 0-based frame index, one of 8 phase names (official README).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpus.annotations import ParsedAnnotations, concat
from corpus.sources._common import find
from corpus.sources.cholec80 import parse_phase_file

SOURCE = "m2cai16-workflow"
FPS = 25.0
PHASES = (
    "TrocarPlacement",
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)


def parse_stream(root: Path) -> Iterator[ParsedAnnotations]:
    """Every ``*workflow_video_NN.txt`` under ``root``, one piece per file; the native id keeps its subset folder."""
    root = Path(root)
    for f in find(root, "**/*workflow_video_[0-9][0-9].txt"):
        if "timestamp" not in f.name:
            yield parse_phase_file(f, SOURCE, PHASES, f"{f.parent.name}/{f.stem}" if f.parent != root else f.stem)


def parse(root: Path) -> ParsedAnnotations:
    return concat(parse_stream(root), SOURCE)
