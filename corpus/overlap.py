"""Videos listed by several sources are planned once, before anything is downloaded.

A planned video is known by its keys: ``youtube:<id>`` (``youtube://`` URIs and YouTube URLs), ``url:<URL>``
(other http(s) and ``hf://`` URIs, scheme and host lower-cased, fragment dropped) and ``sha256:<hex>`` (a
published checksum). Local files have no key (a path names a copy, not a video).

Rule: the source listed first in the manifest keeps a video; a later source that lists a video with one of its
keys drops it (``overlap``). Videos a source holds out (a benchmark's val/test videos, left out by ``use_splits``)
block their keys in every source (``held_out``), so no other list brings them back into pretraining.

>>> video_keys("https://youtu.be/80czDESoMiQ", None)
['youtube:80czDESoMiQ']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from corpus.video_lists import youtube_id_of

HELD_OUT = "held_out"
OVERLAP = "overlap"


@dataclass(frozen=True)
class Duplicate:
    """A listed video that is not planned: ``source``'s ``video_id`` is ``kept_video_id`` of ``kept_in``."""

    video_id: str
    source: str
    kept_in: str
    kept_video_id: str
    key: str
    reason: Literal["overlap", "held_out"]

    @property
    def by(self) -> str:
        return self.key.split(":", 1)[0]


def video_keys(uri: str, sha256: str | None) -> list[str]:
    """The identity keys of a planned video (see the module docstring)."""
    keys = []
    if (yid := youtube_id_of(uri)) is not None:
        keys.append(f"youtube:{yid}")
    elif "://" in uri and not uri.startswith("file://"):
        p = urlsplit(uri)
        keys.append("url:" + urlunsplit((p.scheme.lower(), p.netloc.lower(), p.path, p.query, "")))
    if sha256:
        keys.append(f"sha256:{sha256}")
    return keys


def deduplicate(
    rows_by_source: list[tuple[str, list[dict]]], held_out: dict[str, tuple[str, str]]
) -> tuple[list[dict], list[Duplicate]]:
    """Keep each video in the first source (in the given order) that lists it; drop held-out keys everywhere.

    ``rows_by_source``: plan rows (``video_id``, ``uri``, ``expected_sha256``) per source in manifest order;
    ``held_out``: key -> (source, video id) of the videos sources hold out.
    """
    owner: dict[str, tuple[str, str]] = {}
    kept: list[dict] = []
    dropped: list[Duplicate] = []
    for source, rows in rows_by_source:
        for row in rows:
            keys = video_keys(row["uri"], row.get("expected_sha256"))
            hit = next((k for k in keys if k in held_out), None)
            if hit is not None:
                dropped.append(Duplicate(row["video_id"], source, *held_out[hit], hit, HELD_OUT))
                continue
            hit = next((k for k in keys if k in owner), None)
            if hit is not None:
                dropped.append(Duplicate(row["video_id"], source, *owner[hit], hit, OVERLAP))
                for k in keys:
                    owner.setdefault(k, owner[hit])
                continue
            for k in keys:
                owner[k] = (source, row["video_id"])
            kept.append(row)
    return kept, dropped


def overlap_pairs(duplicates: list[Duplicate]) -> list[dict]:
    """Per pair of sources: how many videos of ``source`` are planned in (or held out by) ``kept_in``, by key."""
    pairs: dict[tuple[str, str, str], Counter] = {}
    for d in duplicates:
        pairs.setdefault((d.kept_in, d.source, d.reason), Counter())[d.by] += 1
    return [
        {"kept_in": a, "source": b, "reason": reason, "videos": sum(c.values()), "by": dict(sorted(c.items()))}
        for (a, b, reason), c in sorted(pairs.items())
    ]
