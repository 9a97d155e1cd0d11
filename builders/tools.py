"""Checks for the external tools stages need, run in ``Stage.setup`` before any work starts."""

from __future__ import annotations

import functools
import shutil
import subprocess

from corpus.errors import ToolMissing

INSTALL_HINT = "install Debian's ffmpeg package (apt-get install -y ffmpeg) or run `make setup`"


@functools.cache
def require_binary(name: str) -> str:
    """Path of ``name`` on PATH, or ``ToolMissing`` saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


@functools.cache
def require_encoder(encoder: str = "libx264") -> None:
    """Fail early when ffmpeg lacks the encoder the clip stage needs."""
    out = subprocess.run([require_binary("ffmpeg"), "-hide_banner", "-encoders"], capture_output=True, text=True)
    if f" {encoder} " not in out.stdout:
        raise ToolMissing(f"ffmpeg has no {encoder} encoder: {INSTALL_HINT}")


@functools.cache
def ffmpeg_version() -> str:
    out = subprocess.run([require_binary("ffmpeg"), "-version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"
