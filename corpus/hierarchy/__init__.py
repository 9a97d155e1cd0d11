"""OpenSurgery-style hierarchies (video → operation → frame): import, validate, split, catalog, export.

Shards are written by :mod:`builders.hierarchy_shards`, the demo by :mod:`builders.hierarchy_demo`; see
``docs/hierarchy.md``. Names are imported lazily so that ``surgcorpus --help`` does not load DuckDB and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Hierarchy": "corpus.hierarchy.models",
    "ImportReport": "corpus.hierarchy.build",
    "Rules": "corpus.hierarchy.validate",
    "export_task": "corpus.hierarchy.exports",
    "import_hierarchy": "corpus.hierarchy.build",
    "load_hierarchy": "corpus.hierarchy.build",
    "split_hierarchy": "corpus.hierarchy.build",
    "validate": "corpus.hierarchy.validate",
    "write_hierarchy": "corpus.hierarchy.build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'corpus.hierarchy' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
