"""Colonoscopic dataset (Mesejo et al.): 76 polyps filmed in white light (WL) and NBI, 3 histology classes.

Layout: ``<Adenoma|Hyperplasic|Serrated>/<WL|NBI>(<n>).mp4``; WL(n) and NBI(n) show the same lesion.
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.sources._folders import parse_folders

SOURCE = "colonoscopic"


def parse(root: Path) -> ParsedAnnotations:
    return parse_folders(root, SOURCE, lambda rel: rel.parts[-2])
