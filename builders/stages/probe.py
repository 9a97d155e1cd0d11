"""probe: container and stream facts from ffprobe (through ffmpeg-python), one video per unit.

Headers can lie: a file may claim more frames than it decodes (a truncated download, a bad muxer). The packet
count is cheap (demux only) and is always taken; when it disagrees with the header, or the header has no frame
count, the decodable frames are counted (``ffprobe -count_frames``) and that number wins.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import ffmpeg

from builders.stages.base import Stage, UnitResult, stable_hash
from builders.tools import require_binary
from corpus.errors import EmptyVideo, ErrorRow, ProbeError, SurgcorpusError

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


def _ffprobe(path: str, **kwargs) -> dict:
    try:
        return ffmpeg.probe(path, **kwargs)
    except ffmpeg.Error as exc:
        stderr = (exc.stderr or b"").decode(errors="replace").strip()
        last = stderr.splitlines()[-1] if stderr else "ffprobe failed"
        raise ProbeError(f"{path}: unreadable video: {last}", detail=stderr) from None


def probe_video(path: str) -> dict:
    """Probe one file; returns a row of ``corpus.schemas.PROBE`` without ``video_id``.

    Raises ``ProbeError`` for an unreadable file and ``EmptyVideo`` when no frame can be decoded.
    """
    info = _ffprobe(
        path,
        count_packets=None,
        show_entries=(
            "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_packets,"
            "duration:stream_side_data=rotation:stream_tags=rotate:format=duration"
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
    if header is None or packets is None or packets != header:
        counted_info = _ffprobe(path, select_streams="v:0", count_frames=None, show_entries="stream=nb_read_frames")
        n_frames, counted = _int(counted_info["streams"][0].get("nb_read_frames")) or 0, True
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
        "n_frames": n_frames,
        "n_frames_header": header,
        "frames_counted": counted,
    }


class ProbeStage(Stage):
    """Probe every fetched video; errors (unreadable, zero frames) become error rows, not crashes."""

    name = "probe"
    requires = ("video_id", "path", "sha256", "uri")

    def setup(self) -> None:
        require_binary("ffprobe")

    def fingerprint(self, row: dict) -> str:
        return stable_hash(row["sha256"], row["path"])

    def process(self, row: dict) -> UnitResult:
        try:
            facts = probe_video(row["path"])
        except SurgcorpusError as exc:
            return UnitResult(
                errors=[ErrorRow.from_exception(self.name, exc, video_id=row["video_id"], uri=row["uri"])]
            )
        errors = []
        header, decoded = facts["n_frames_header"], facts["n_frames"]
        if facts["frames_counted"] and header and decoded < header:
            errors.append(
                ErrorRow(
                    self.name,
                    row["video_id"],
                    row["uri"],
                    "truncated",
                    f"{row['path']}: header claims {header} frames, only {decoded} decode; "
                    f"using the {decoded} decodable frames",
                )
            )
        return UnitResult(rows=[{"video_id": row["video_id"], **facts}], errors=errors)
