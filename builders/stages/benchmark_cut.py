"""Benchmark stages, one unit per raw source video: probe it, then cut its published clips at exact frames.

``SourceProbeStage`` probes a raw video with ``probe_video`` and counts the frames that decode (a header, or a
packet count, can claim frames that never decode); a missing or unreadable file becomes an error row.
``CutClipsStage`` encodes every clip of one video in a single ffmpeg run: the decoded stream is split once, each
branch ``trim``-med to its frame range (``end_frame`` exclusive) and encoded as H.264 with bit-exact flags and
one thread, so a rebuild writes the same bytes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from builders.stages.base import Stage, UnitResult, stable_hash
from builders.stages.cas import sha256_file
from builders.stages.probe import probe_video
from builders.tools import require_binary, require_encoder
from corpus.atomic import temp_sibling
from corpus.errors import ErrorRow, MissingInput, SurgcorpusError, ffmpeg_failure


def _identity(path: Path) -> list:
    """Cheap identity of an input file (size and mtime), for fingerprints; hashing raw videos would cost a read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


class SourceProbeStage(Stage):
    """Probe one raw video (``row["src"]``); rows carry ``video_file`` and the probe facts."""

    name = "benchmark-probe"
    requires = ("video_file", "src", "video_id")

    def setup(self) -> None:
        require_binary("ffprobe")

    def unit_id(self, row: dict) -> str:
        return row["video_file"]

    def fingerprint(self, row: dict) -> str:
        return stable_hash(_identity(Path(row["src"])), "decoded-count")

    def process(self, row: dict) -> UnitResult:
        src = Path(row["src"])
        try:
            if not src.is_file():
                raise MissingInput(f"{src}: raw video not found (needed by {row['n_clips']} planned clips)")
            facts = probe_video(str(src), count="frames")  # clips are cut by frame number: count what decodes
        except SurgcorpusError as exc:
            return UnitResult(errors=[ErrorRow.from_exception(self.name, exc, video_id=row["video_id"], uri=str(src))])
        return UnitResult(rows=[{"video_file": row["video_file"], "video_id": row["video_id"], **facts}])


def cut_command(src: str, clips: list[dict], out: list[Path], crf: int) -> list[str]:
    """One ffmpeg invocation writing every clip (``start_frame``/``end_frame``) of ``src`` to ``out``."""
    n = len(clips)
    graph = [f"[0:v:0]split={n}" + "".join(f"[s{i}]" for i in range(n))]
    for i, c in enumerate(clips):
        trim = (
            f"trim=start_frame={c['start_frame']}:end_frame={c['end_frame']}," if c["start_frame"] is not None else ""
        )
        graph.append(f"[s{i}]{trim}setpts=PTS-STARTPTS[o{i}]")
    cmd = [require_binary("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error", "-y", "-threads", "1", "-i", src]
    cmd += ["-filter_complex", ";".join(graph), "-filter_complex_threads", "1"]
    for i, dest in enumerate(out):
        cmd += ["-map", f"[o{i}]", "-an", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p"]
        cmd += ["-threads", "1", "-x264-params", "threads=1:lookahead-threads=1"]
        cmd += ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-map_chapters", "-1"]
        cmd += [str(dest)]
    return cmd


class CutClipsStage(Stage):
    """Cut the planned clips of one raw video into ``<build>/clips/<published path>``."""

    name = "benchmark-cut"
    requires = ("video_file", "src", "video_id", "clips")

    def __init__(self, build_dir: str, crf: int = 23) -> None:
        self.build_dir = build_dir
        self.crf = crf

    def setup(self) -> None:
        require_binary("ffmpeg")
        require_encoder("libx264")

    def unit_id(self, row: dict) -> str:
        return row["video_file"]

    def fingerprint(self, row: dict) -> str:
        clips = [(c["path"], c["start_frame"], c["end_frame"]) for c in row["clips"]]
        return stable_hash(_identity(Path(row["src"])), clips, self.crf)

    def process(self, row: dict) -> UnitResult:
        build = Path(self.build_dir)
        clips = sorted(row["clips"], key=lambda c: c["path"])
        rel = [f"clips/{c['path']}" for c in clips]
        tmp = [build / r for r in rel]
        tmp = [temp_sibling(p, p.suffix) for p in tmp]
        for p in tmp:
            p.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(cut_command(row["src"], clips, tmp, self.crf), capture_output=True, text=True)
        if res.returncode != 0:
            for p in tmp:
                p.unlink(missing_ok=True)
            exc = ffmpeg_failure(f"{row['src']}: cutting {len(clips)} clips", res.returncode, res.stderr)
            return UnitResult(
                errors=[ErrorRow.from_exception(self.name, exc, video_id=row["video_id"], uri=row["src"])]
            )
        rows = []
        for c, r, p in zip(clips, rel, tmp, strict=True):
            os.replace(p, build / r)
            rows.append(
                {
                    "path": c["path"],
                    "file": r,
                    "bytes": (build / r).stat().st_size,
                    "sha256": sha256_file(build / r)[0],
                }
            )
        return UnitResult(rows=rows, files=rel)
