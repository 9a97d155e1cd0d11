"""Helpers for tests and demos: tiny real videos made with ffmpeg lavfi, and the shared real-data folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
_INSIDE = "lt(hypot(X-W/2,Y-H/2),H/2-4)"
SCOPE_MASK = (  # an ffmpeg filter that blacks out everything outside a centred circle, like an endoscope view
    f"format=yuv420p,geq=lum='if({_INSIDE},lum(X,Y),0)':cb='if({_INSIDE},cb(X,Y),128)':cr='if({_INSIDE},cr(X,Y),128)'"
)
REAL = SHARED / "data" / "real"


def make_video(
    path: str | Path,
    seconds: float = 3.0,
    size: str = "160x120",
    rate: int = 25,
    source: str = "testsrc2",
    vf: str | None = None,
    codec: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
) -> Path:
    """Write a short synthetic video with ffmpeg (``source`` is a lavfi video source name with options)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{source}=size={size}:rate={rate}" if "=" not in source else source
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", spec, "-t", str(seconds)]
    if vf:
        cmd += ["-vf", vf]
    subprocess.run([*cmd, *codec, str(path)], check=True, capture_output=True)
    return path


def count_frames(path: str | Path) -> int:
    """Decodable frames (ffprobe -count_frames), not what the header claims."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[0])


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
