"""Source licenses as ids: what a commercial or a non-commercial build may contain, and which sources a manifest's
``exclude_licenses`` leaves out.

A source's ``license_id`` is an SPDX-style id of its videos' license (``CC-BY-4.0``, ``CC-BY-NC-SA-4.0``); a
source without one counts as ``unknown``, and so do web videos under their uploaders' terms
(``youtube-uploader-terms``): nothing there is cleared for commercial use.

>>> commercial_use("CC-BY-NC-SA-4.0"), commercial_use("CC-BY-4.0"), commercial_use("youtube-uploader-terms")
(False, True, None)
"""

from __future__ import annotations

from corpus.manifest import Source

UNKNOWN = "unknown"
NON_COMMERCIAL = "non-commercial"
# licenses that allow commercial use (with attribution / share-alike where the id says so)
COMMERCIAL = frozenset({"CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "MIT", "Apache-2.0"})


def license_of(src: Source) -> str:
    """The source's license id, ``unknown`` when it has none."""
    return src.license_id or UNKNOWN


def commercial_use(license_id: str) -> bool | None:
    """False for NonCommercial (``-NC``) licenses, True for the permissive ones in ``COMMERCIAL``, else None."""
    if "-NC" in license_id.upper():
        return False
    return True if license_id in COMMERCIAL else None


def excluded_by(src: Source, exclude: tuple[str, ...]) -> str | None:
    """The ``exclude_licenses`` entry that leaves ``src`` out (a license id, ``non-commercial`` or ``unknown``:
    any license not cleared for commercial use), or None."""
    lic = license_of(src)
    use = commercial_use(lic)
    for term in exclude:
        if term == lic or (term == NON_COMMERCIAL and use is False) or (term == UNKNOWN and use is None):
            return term
    return None
