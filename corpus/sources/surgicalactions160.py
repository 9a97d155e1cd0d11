"""SurgicalActions160 (ITEC Klagenfurt): 160 gynecologic laparoscopy clips, 16 action classes in folders.

Layout: ``NN_<class>/NN_MM.mp4`` (e.g. ``01_abdominal_access/01_08.mp4``); the class is the folder name without
its number.
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.sources._folders import parse_folders

SOURCE = "surgicalactions160"


def parse(root: Path) -> ParsedAnnotations:
    return parse_folders(root, SOURCE, lambda rel: rel.parts[-2].split("_", 1)[-1])
