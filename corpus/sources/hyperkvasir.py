"""Hyper-Kvasir labelled videos (Simula): 373 GI endoscopy videos in finding folders.

Layout: ``labeled-videos/<lower-gi-tract|upper-gi-tract>/<finding>/<uuid>.avi``, or SurgRec's flattened
``videos/<lower|upper>-<finding>/<uuid>_<k>.avi``; the label is ``<tract>-<finding>``.
"""

from __future__ import annotations

from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.sources._folders import parse_folders

SOURCE = "hyper-kvasir"


def _label(rel: Path) -> str:
    if len(rel.parts) >= 3 and rel.parts[-3].endswith("-gi-tract"):
        return f"{rel.parts[-3].split('-')[0]}-{rel.parts[-2]}"
    return rel.parts[-2]


def parse(root: Path) -> ParsedAnnotations:
    return parse_folders(root, SOURCE, _label)
