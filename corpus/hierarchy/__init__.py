"""OpenSurgery-style hierarchies (video → operation → frame): import, validate, split, catalog, export.

Shards are written by :mod:`builders.hierarchy_shards`; see ``docs/hierarchy.md``.
"""

from corpus.hierarchy.build import ImportReport, import_hierarchy, load_hierarchy, split_hierarchy, write_hierarchy
from corpus.hierarchy.demo import make_demo_hierarchy
from corpus.hierarchy.exports import export_task
from corpus.hierarchy.models import Hierarchy
from corpus.hierarchy.validate import Rules, validate

__all__ = [
    "Hierarchy",
    "ImportReport",
    "Rules",
    "export_task",
    "import_hierarchy",
    "load_hierarchy",
    "make_demo_hierarchy",
    "split_hierarchy",
    "validate",
    "write_hierarchy",
]
