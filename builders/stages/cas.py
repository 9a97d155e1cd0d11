"""The content-addressed download cache: ``<cache>/sha256/<aa>/<sha256><ext>``, partial files in ``<cache>/tmp``.

A file enters ``sha256/`` only after its checksum (and size, when known) has been verified, by ``os.replace`` of a
fully written temporary file, so a name under ``sha256/`` always holds exactly the bytes it names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from corpus.errors import ChecksumMismatch

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # 1 MiB: read and write granularity
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Fetched:
    """A fetched video: the local path to read it from, its sha256 and size in bytes."""

    path: str
    sha256: str
    bytes: int


def sha256_file(path: str | Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def suffix_of(name: str) -> str:
    """The lower-cased extension of the last path segment of a URL or path (``""`` when absent or odd)."""
    suffix = PurePosixPath(name.split("?", 1)[0].split("#", 1)[0]).suffix
    return suffix.lower() if _SUFFIX.match(suffix) else ""


def cache_path(cache_dir: Path, sha256: str, ext: str) -> Path:
    return Path(cache_dir) / "sha256" / sha256[:2] / f"{sha256}{ext}"


def part_path(cache_dir: Path, key: str, ext: str) -> Path:
    """Where the partial download of ``key`` (a URL) lives; stable across runs so that it can be resumed."""
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir) / "tmp" / f"{name}{ext}.part"


def lookup(cache_dir: Path, sha256: str, ext: str, expected_bytes: int | None = None) -> Fetched | None:
    """The cached file for a known checksum, if present (and of the expected size)."""
    path = cache_path(cache_dir, sha256, ext)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if expected_bytes is not None and size != expected_bytes:
        log.warning("%s: cached size %d differs from the expected %d; ignoring it", path, size, expected_bytes)
        return None
    return Fetched(path=str(path), sha256=sha256, bytes=size)


def check(
    what: str, sha256: str, size: int, expected_sha256: str | None, expected_bytes: int | None, *, detail: str = ""
) -> None:
    """Raise ``ChecksumMismatch`` naming ``what`` when the size or checksum differs from the expected one."""
    if expected_bytes is not None and size != expected_bytes:
        raise ChecksumMismatch(f"{what}: size {size} bytes, expected {expected_bytes}", detail=detail)
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ChecksumMismatch(f"{what}: sha256 {sha256}, expected {expected_sha256}", detail=detail)


def commit(
    part: Path, cache_dir: Path, ext: str, *, what: str, expected_sha256: str | None, expected_bytes: int | None
) -> Fetched:
    """Verify a complete temporary file and move it to its content address; a bad file is deleted, never kept."""
    sha256, size = sha256_file(part)
    try:
        check(what, sha256, size, expected_sha256, expected_bytes, detail=f"partial file {part} deleted")
    except ChecksumMismatch:
        part.unlink(missing_ok=True)
        raise
    dest = cache_path(cache_dir, sha256, ext)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return Fetched(path=str(dest), sha256=sha256, bytes=size)


def adopt(src: Path, cache_dir: Path, ext: str, sha256: str, size: int) -> Fetched:
    """Give an already verified file (e.g. a Hub cache blob) its content address: hard link, else copy."""
    dest = cache_path(cache_dir, sha256, ext)
    if not dest.exists():
        tmp = Path(cache_dir) / "tmp" / f"{uuid.uuid4().hex}{ext}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(os.path.realpath(src), tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    return Fetched(path=str(dest), sha256=sha256, bytes=size)
