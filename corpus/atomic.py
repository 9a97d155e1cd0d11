"""Atomic file writes: a hidden temp name in the same folder, then ``os.replace``.

Temp names carry the host, the pid and a random part, so two writers (two hosts sharing a build dir, or a retried
unit while an earlier attempt still runs) never write into the same temp file.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def temp_sibling(path: str | Path, suffix: str = "") -> Path:
    """A unique hidden temp path beside ``path`` (``suffix`` keeps an extension tools look at, e.g. ``.mp4``)."""
    path = Path(path)
    tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.tmp-{tag}{suffix}")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())
