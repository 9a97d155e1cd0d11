"""The few named exceptions a build catches, and the error row they become.

Everything else (``KeyError``, ``TypeError``...) is a bug and is allowed to crash.
"""

from __future__ import annotations

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
