"""LapGyn4 (ITEC Klagenfurt), the action-recognition part: 4 tasks, each with action and 'Rest' clips.

Layout: ``<Task>/<Train|Test>/<Task or Rest>/case_N_<...>.mp4``; the label is the innermost folder (``Rest`` marks
clips without the action).
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.sources._folders import parse_folders

SOURCE = "lapgyn4"


def parse(root: Path) -> ParsedAnnotations:
    return parse_folders(root, SOURCE, lambda rel: rel.parts[-2], depth=3)
