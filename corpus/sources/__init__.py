"""Source adapters: one module per dataset, each exporting ``parse(root) -> ParsedAnnotations``.

Adapters of big per-frame formats also export ``parse_stream(root)``, which yields the same rows piece by piece
(one annotation file at a time) so that a source of any size parses in bounded memory; :func:`stream` gives any
adapter's output that way. Collected explicitly here; importing a module never registers anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from corpus.annotations import ParsedAnnotations
from corpus.sources import (
    aixsuture,
    autolaparo,
    cat21,
    cataract1k,
    cataract101,
    cholec80,
    cholect50,
    colonoscopic,
    hyperkvasir,
    jigsaws,
    kvasircapsule,
    lapgyn4,
    ldpolypvideo,
    m2cai16,
    multibypass140,
    opensurgery,
    psiava,
    sarrarp50,
    surgicalactions160,
)

ADAPTERS: dict[str, ModuleType] = {
    "cholec80": cholec80,
    "m2cai16-workflow": m2cai16,
    "cholect50": cholect50,
    "multibypass140": multibypass140,
    "cataract-101": cataract101,
    "jigsaws": jigsaws,
    "psi-ava": psiava,
    "cataract-1k": cataract1k,
    "autolaparo": autolaparo,
    "sar-rarp50": sarrarp50,
    "surgicalactions160": surgicalactions160,
    "lapgyn4": lapgyn4,
    "colonoscopic": colonoscopic,
    "hyper-kvasir": hyperkvasir,
    "kvasir-capsule": kvasircapsule,
    "cat-21": cat21,
    "aixsuture": aixsuture,
    "ldpolypvideo": ldpolypvideo,
    "opensurgery-hierarchy": opensurgery,
}


def adapter(name: str) -> ModuleType:
    """The adapter module for a source name, or a ``KeyError`` listing the known ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"no adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


def stream(module: ModuleType, root: str | Path) -> Iterator[ParsedAnnotations]:
    """An adapter's output piece by piece: its ``parse_stream`` when it has one, else ``parse`` as one piece."""
    if hasattr(module, "parse_stream"):
        yield from module.parse_stream(Path(root))
    else:
        yield module.parse(Path(root))
