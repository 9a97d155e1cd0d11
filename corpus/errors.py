"""The few named exceptions a build catches, and the error row they become.

Everything else (``KeyError``, ``TypeError``...) is a bug and is allowed to crash.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass


class SurgcorpusError(Exception):
    """Base class. ``kind`` is the short reason written to the errors table; ``retryable`` errors are not cached."""

    kind = "error"
    retryable = False

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ManifestError(SurgcorpusError):
    kind = "manifest"


class FetchError(SurgcorpusError):
    kind = "fetch"
    retryable = True


class HTTPFetchError(FetchError):
    kind = "http_error"


class ChecksumMismatch(SurgcorpusError):
    kind = "checksum_mismatch"


class MissingInput(SurgcorpusError):
    kind = "missing_file"


class ProbeError(SurgcorpusError):
    kind = "unreadable"


class EmptyVideo(ProbeError):
    kind = "zero_frames"


class DecodeError(SurgcorpusError):
    kind = "decode"


class AnnotationError(SurgcorpusError):
    kind = "annotation"


class ResourceError(SurgcorpusError):
    """The machine, not the input, failed the unit: a re-run may well succeed, so it is never cached as done."""

    kind = "resource"
    retryable = True


class OutOfMemory(ResourceError):
    kind = "out_of_memory"


class DiskFull(ResourceError):
    kind = "disk_full"


class Killed(ResourceError):
    """A decoder or encoder killed from outside (OOM killer, an operator, a pre-empted node)."""

    kind = "killed"


def transient_error(exc: BaseException) -> ResourceError | None:
    """The transient error an exception raised inside a unit stands for, or None when it is not one."""
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"out of memory: {exc}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"disk full: {exc}")
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return OutOfMemory(f"out of memory: {exc}")
    return None


def ffmpeg_failure(what: str, returncode: int, stderr: str) -> SurgcorpusError:
    """The error for a failed ffmpeg run: transient when it was killed or ran out of memory or disk, else a
    ``DecodeError`` (bad input) with ffmpeg's last line as the message and its stderr tail as detail."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"exit code {returncode}"
    detail = stderr[-2000:]
    if returncode < 0 or returncode in (137, 143):  # a signal (negative from subprocess; 128+n from a shell)
        return Killed(f"{what}: ffmpeg was killed (exit code {returncode})", detail=detail)
    if "Cannot allocate memory" in text:
        return OutOfMemory(f"{what}: {last}", detail=detail)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return DiskFull(f"{what}: {last}", detail=detail)
    return DecodeError(f"{what}: {last}", detail=detail)


class ToolMissing(SurgcorpusError):
    """A required binary or library is absent; raised in stage setup, before any work."""

    kind = "tool_missing"


@dataclass(frozen=True)
class ErrorRow:
    """One row of ``tables/errors.parquet``."""

    stage: str
    video_id: str | None
    uri: str | None
    kind: str
    message: str
    clip_id: str | None = None
    detail: str = ""

    @classmethod
    def from_exception(cls, stage: str, exc: SurgcorpusError, *, video_id: str | None, uri: str | None) -> ErrorRow:
        return cls(stage=stage, video_id=video_id, uri=uri, kind=exc.kind, message=str(exc), detail=exc.detail[-2000:])

    def to_dict(self) -> dict:
        return asdict(self)


def _subclasses(cls: type) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _subclasses(sub)]


# Error kinds a re-run would not repeat (the ``retryable`` classes): units failing with them get no done-marker and
# run again next time.
TRANSIENT_KINDS = frozenset(c.kind for c in _subclasses(SurgcorpusError) if c.retryable)
