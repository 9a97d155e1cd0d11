"""probe: container and stream facts from ffprobe (through ffmpeg-python), one video per unit.

Probe reads headers only: the clip pass decodes every file anyway and counts the decoded frames there
(``videos.n_frames``; the header's figure stays in ``n_frames_header``), so no source byte is read twice.

Headers can lie: a file may claim more frames than it decodes (a truncated download, a bad muxer). Callers that
need the true count before any decode ask for it: ``count="packets"`` (demux only; the frames are decoded and
counted when packets and header disagree) or ``count="frames"`` (always decode and count, as benchmark cuts do:
a file whose packets match its header can still hold packets that do not decode).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Literal

import ffmpeg

from builders.stages.base import Stage, UnitResult, stable_hash
from builders.tools import require_binary
from corpus.errors import EmptyVideo, ErrorRow, ProbeError, SurgcorpusError
from corpus.schemas import PROBE

log = logging.getLogger(__name__)


def _rate(text: str | None) -> float:
    try:
        value = float(Fraction(text)) if text else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
    return value


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ffprobe(path: str, **kwargs) -> dict:
    """``ffprobe`` through ffmpeg-python (the one wrapper); an unreadable file raises ``ProbeError`` naming it."""
    try:
        return ffmpeg.probe(path, **kwargs)
    except ffmpeg.Error as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        last = stderr.splitlines()[-1] if stderr else "ffprobe failed"
        raise ProbeError(f"{path}: unreadable video: {last}", detail=stderr) from None


def decoded_frames(path: str) -> int:
    """Frames that actually decode (``ffprobe -count_frames``: one full decode)."""
    info = ffprobe(path, select_streams="v:0", count_frames=None, show_entries="stream=nb_read_frames")
    return _int((info.get("streams") or [{}])[0].get("nb_read_frames")) or 0


def probe_video(path: str, count: Literal["packets", "frames"] | None = None) -> dict:
    """Probe one file; returns a row of ``corpus.schemas.PROBE`` without ``video_id``.

    ``count``: None reads headers only (``n_frames`` is the header's figure, or duration x fps without one);
    ``"packets"`` also counts packets and decodes when they disagree with the header; ``"frames"`` always decodes.
    Raises ``ProbeError`` for an unreadable file and ``EmptyVideo`` when no frame can be decoded.
    """
    extra = {"count_packets": None} if count == "packets" else {}
    info = ffprobe(
        path,
        **extra,
        show_entries=(
            "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_packets,"
            "has_b_frames,duration:stream_side_data=rotation:stream_tags=rotate:format=duration"
        ),
    )
    all_streams = info.get("streams") or []
    streams = [s for s in all_streams if s.get("codec_type") == "video"]
    if not streams:
        raise EmptyVideo(f"{path}: no video stream (zero frames)")
    st = streams[0]
    fps = _rate(st.get("avg_frame_rate")) or _rate(st.get("r_frame_rate"))
    header = _int(st.get("nb_frames"))
    packets = _int(st.get("nb_read_packets"))
    duration = float(st.get("duration") or (info.get("format") or {}).get("duration") or 0.0)
    n_frames, counted = header, False
    estimate = round(duration * fps) if header is None and duration and fps else None
    if (
        count == "frames"
        or (count == "packets" and (header is None or packets is None or packets != header))
        or (header is None and not estimate)
    ):
        n_frames, counted = decoded_frames(path), True
    elif header is None:
        n_frames = estimate  # no frame count in the header: duration x fps until the clip pass counts them
    if not n_frames:
        raise EmptyVideo(f"{path}: no decodable video frame (header claims {header or 0})")
    if counted and fps > 0:
        duration = min(duration, n_frames / fps) if duration else n_frames / fps
    rotation = 0
    for side in st.get("side_data_list") or []:
        if "rotation" in side:
            rotation = int(float(side["rotation"]))
    if not rotation and (st.get("tags") or {}).get("rotate"):
        rotation = int((st.get("tags") or {})["rotate"])
    return {
        "codec": st.get("codec_name"),
        "width": _int(st.get("width")),
        "height": _int(st.get("height")),
        "fps": fps,
        "duration_s": duration,
        "rotation": rotation % 360,
        "has_audio": any(s.get("codec_type") == "audio" for s in all_streams),
        "has_b_frames": _int(st.get("has_b_frames")) or 0,
        "n_frames": n_frames,
        "n_frames_header": header,
        "frames_counted": counted,
    }


def truncation_error(stage: str, row: dict, header: int | None, decoded: int) -> ErrorRow | None:
    """The ``truncated`` error row when fewer frames decode than the header claims (None otherwise)."""
    if not header or decoded >= header:
        return None
    return ErrorRow(
        stage,
        row["video_id"],
        row["uri"],
        "truncated",
        f"{row['path']}: header claims {header} frames, only {decoded} decode; using the {decoded} decodable frames",
    )


class ProbeStage(Stage):
    """Probe every fetched video (headers only); errors (unreadable, no video stream) become error rows."""

    name = "probe"
    requires = ("video_id", "path", "sha256", "uri")
    outputs = {"probe": (PROBE, ())}

    def setup(self) -> None:
        require_binary("ffprobe")

    def fingerprint(self, row: dict) -> str:
        return stable_hash(row["sha256"], row["path"], "headers")

    def process(self, row: dict) -> UnitResult:
        try:
            facts = probe_video(row["path"])
        except SurgcorpusError as exc:
            return UnitResult(
                errors=[ErrorRow.from_exception(self.name, exc, video_id=row["video_id"], uri=row["uri"])]
            )
        return UnitResult(rows=[{"video_id": row["video_id"], **facts}])
