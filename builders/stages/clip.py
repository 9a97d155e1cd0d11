"""clip: cut each video into fixed-length clips at the target fps and size, in one ffmpeg pass per video.

One decode per video, no per-frame Python work: ffmpeg resamples (``fps``), crops and scales, and its segment
muxer cuts H.264 clips at forced keyframes (or the image2 muxer writes JPEG frames). Overlapping clips
(stride < length) become ``m = ceil(length / stride)`` interleaved non-overlapping series, each a branch of the
same filter graph, so overlap costs encoding, never a second decode.

A side branch of the same graph emits tiny 32x32 grey frames (4 per clip) to stdout; their perceptual hashes
(``imagehash.phash``) are the near-duplicate signatures that the dedup stage uses, so dedup needs no extra decode.

Two ``showinfo`` taps (``builders.stages.timing``) see every decoded frame and every output frame: the pass counts
the decoded frames (``videos.n_frames``; a shortfall against the header is a ``truncated`` error row) and records
each clip's largest timestamp error. ``clips.timing: fast`` decodes less (``timing.choose_decode``) and falls back
to the full decode when the cheaper one fails, would give fewer clips, or leaves an output frame further than
half an output period from its source frame.

Random access (the few frames sampled to find a black border or endoscope mask) goes through decord, with ffmpeg
as the fallback for files decord cannot open.

Files written, relative to the build dir: ``clips/<video>/<start_ms>.mp4`` (or ``<start_ms>/NNN.jpg``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builders.stages.base import Stage, UnitResult, stable_hash
from builders.stages.cas import sha256_file
from builders.stages.decode import DecordPlan, clip_frames, geometry
from builders.stages.probe import ffprobe, probe_video, truncation_error
from builders.stages.timing import FULL, DecodeChoice, Timeline, candidates_filter, choose_decode, slot_filter
from builders.tools import require_binary, require_encoder
from corpus.errors import DecodeError, ErrorRow, SurgcorpusError, ffmpeg_failure
from corpus.ids import clip_id, safe_relpath
from corpus.manifest import ClipSpec
from corpus.schemas import CLIP_FACTS, CLIPS

log = logging.getLogger(__name__)

HASH_SIDE = 32
CLIPS_DIR = "clips"


@dataclass(frozen=True)
class Crop:
    """A crop rectangle in source pixels."""

    w: int
    h: int
    x: int
    y: int


def phash_of_gray(frame: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a small grey frame, as an unsigned int."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(frame, mode="L")).hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def _sample_frames_gray(path: str, n_frames: int, rotated: bool = False, count: int = 6) -> np.ndarray:
    """A few grey frames spread over the video, in display orientation (as the clip filter graph sees them).

    decord seeks to them; ffmpeg (one decode pass, a ``select`` of those frames) is the fallback for files decord
    cannot open and for rotated videos, which decord does not rotate.
    """
    import decord

    idx = sorted({int(i) for i in np.linspace(0, max(0, n_frames - 1), count + 2)[1:-1]})
    if not rotated:
        try:
            vr = decord.VideoReader(path, num_threads=1)
            frames = vr.get_batch([min(i, len(vr) - 1) for i in idx]).asnumpy()
            return (frames @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)  # BT.601 luma
        except (decord.DECORDError, RuntimeError) as exc:  # what decord cannot open or seek
            log.info("decord could not open %s (%s); sampling frames with ffmpeg", path, exc)
    st = ffprobe(path, select_streams="v:0")["streams"][0]
    w, h = (st["height"], st["width"]) if rotated else (st["width"], st["height"])
    select = "+".join(f"eq(n,{i})" for i in idx)
    res = subprocess.run(
        [
            require_binary("ffmpeg"),
            "-nostdin",
            "-v",
            "error",
            "-i",
            path,
            "-vf",
            f"select='{select}',format=gray",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ],
        capture_output=True,
        check=False,
    )
    n = len(res.stdout) // (w * h)
    if res.returncode != 0 or n == 0:
        raise DecodeError(f"{path}: could not sample frames for mask detection", detail=res.stderr.decode()[-2000:])
    return np.frombuffer(res.stdout[: n * w * h], np.uint8).reshape(n, h, w)


def detect_mask_crop(path: str, n_frames: int, mode: str, threshold: int = 16, rotated: bool = False) -> Crop | None:
    """Crop that removes black borders (``black-border``) or frames a circular endoscope view (``circle``)."""
    frames = _sample_frames_gray(path, n_frames, rotated)
    lit = frames.max(axis=0) > threshold
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if mode == "circle":  # the inscribed square of the circle holds no mask corners
        cy, cx, r = (y0 + y1) / 2, (x0 + x1) / 2, min(y1 - y0, x1 - x0) / 2
        half = r / math.sqrt(2)
        y0, y1, x0, x1 = int(cy - half), int(cy + half), int(cx - half), int(cx + half)
    w, h = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    full_h, full_w = lit.shape
    if w >= full_w - 2 and h >= full_h - 2:
        return None
    return Crop(w=w, h=h, x=x0, y=y0)


def output_size(spec: ClipSpec, width: int, height: int, crop: Crop | None) -> tuple[int | None, int | None]:
    """Output frame size for a source of ``width`` x ``height`` (after the mask crop)."""
    if spec.crop == "center":
        return spec.size, spec.size
    if crop is not None:
        width, height = crop.w, crop.h
    if not width or not height:
        return None, None
    if width <= height:
        return spec.size, round(height * spec.size / width / 2) * 2
    return round(width * spec.size / height / 2) * 2, spec.size


def _geometry_filters(spec: ClipSpec, crop: Crop | None, lowres: int = 0) -> list[str]:
    s = spec.size
    chain = []
    if crop is not None:  # in source pixels; a lowres decode divides the frame by 2**lowres
        chain.append(f"crop={crop.w >> lowres}:{crop.h >> lowres}:{crop.x >> lowres}:{crop.y >> lowres}")
    # scale so the short side is `size` (even dimensions), then centre crop to a square unless crop: none
    chain.append(f"scale='if(lte(iw,ih),{s},-2)':'if(lte(iw,ih),-2,{s})':flags=area")
    if spec.crop == "center":
        chain.append(f"crop={s}:{s}")
    chain.append("setsar=1")
    return chain


@dataclass(frozen=True)
class ClipPlan:
    """Clip timing in output frames: series k starts at ``k*stride`` and repeats every ``period`` frames."""

    length: int
    stride: int

    @property
    def series(self) -> int:
        return max(1, math.ceil(self.length / self.stride))

    @property
    def period(self) -> int:
        return self.series * self.stride

    def start_frame(self, series: int, index: int) -> int:
        return series * self.stride + index * self.period


@dataclass(frozen=True)
class Series:
    """One encoder output: its file stem, the start frame of its j-th clip, clip lengths (decord) and hashes."""

    stem: str
    start_of: Callable[[int], int]
    lengths: list[int] | None
    hash_at: dict[int, int]  # output frame position -> perceptual hash


@dataclass(frozen=True)
class Pass:
    """What one clip pass produced and measured: its encoder outputs, each output frame's timestamp error
    (seconds; NaN where unknown), the video's frame count (``counted``: every frame decoded and counted)."""

    series: list[Series]
    errors_s: np.ndarray
    n_frames: int
    counted: bool
    decode: str


def error_histogram(errors_s: np.ndarray, src_fps: float) -> dict[str, int]:
    """Output frames per timestamp error in source frames, rounded to a quarter frame (``"nan"``: unknown): the
    per-frame distribution that ``clips.max_timestamp_error_s`` (one figure per clip) summarises, logged per video
    for the benchmark."""
    quarters = np.round(errors_s * src_fps * 4) / 4
    known = quarters[np.isfinite(quarters)]
    values, counts = np.unique(known, return_counts=True)
    out = {f"{v:g}": int(n) for v, n in zip(values, counts, strict=True)}
    if len(known) < len(quarters):
        out["nan"] = int(len(quarters) - len(known))
    return out


def split_clip_rows(rows: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """A clip stage's rows as (clip rows, {video_id: facts the clip pass measured}): ``n_frames`` (decoded),
    ``frames_counted`` and ``duration_s``, which replace the header's figures in ``videos``."""
    clips = [r for r in rows if "clip_id" in r]
    facts = {r["video_id"]: {k: v for k, v in r.items() if k != "video_id"} for r in rows if "clip_id" not in r}
    return clips, facts


def output_args(
    spec: ClipSpec, preset: str, workdir: Path, stem: str, split_frames: list[int] | None = None
) -> list[str]:
    """Encoder and muxer arguments of one output stream: H.264 clips cut by the segment muxer at forced
    keyframes every clip length (or at ``split_frames``), or numbered JPEG frames."""
    if spec.format == "jpg":
        return [
            "-an",
            "-q:v",
            "3",
            "-threads",
            "1",
            "-fflags",
            "+bitexact",
            "-flags:v",
            "+bitexact",
            "-f",
            "image2",
            str(workdir / f"{stem}_%08d.jpg"),
        ]
    length = spec.length_frames
    if split_frames is None:
        keys = f"expr:eq(mod(n,{length}),0)"
        cut = ["-segment_time", f"{length / spec.fps:.6f}"]
    else:
        keys = ",".join(f"{f / spec.fps:.6f}" for f in [0, *split_frames])
        cut = ["-segment_frames", ",".join(str(f) for f in split_frames)] if split_frames else []
    return [
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(spec.crf),
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-x264-params",
        "threads=1:lookahead-threads=1",
        "-force_key_frames",
        keys,
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-f",
        "segment",
        *cut,
        "-segment_format",
        "mp4",
        "-segment_format_options",
        "fflags=+bitexact",
        "-segment_list",
        str(workdir / f"{stem}.csv"),
        "-segment_list_type",
        "csv",
        "-reset_timestamps",
        "1",
        str(workdir / f"{stem}_%06d.mp4"),
    ]


def build_command(
    src: str,
    spec: ClipSpec,
    crop: Crop | None,
    workdir: Path,
    preset: str,
    choice: DecodeChoice = FULL,
    src_fps: float = 0.0,
) -> list[str]:
    """The single ffmpeg invocation that writes every clip of a video and the hash frames to stdout.

    Its stderr (``-v verbose``) carries the ``showinfo@src`` / ``showinfo@out`` lines and the end-of-run statistics
    that ``Timeline.parse`` reads.
    """
    plan = ClipPlan(spec.length_frames, spec.stride_frames)
    base = [
        slot_filter(spec.fps),  # output time 0 is the first decoded frame
        f"fps={spec.fps:g}",
        *_geometry_filters(spec, crop, choice.lowres),
        "showinfo@out",
    ]
    m = plan.series
    hash_every = max(1, plan.length // 4)
    graph = [
        f"[0:v:0]{candidates_filter(spec.fps, src_fps, choice.gap_frames)},split[src][main]",
        "[src]crop=2:2:0:0,showinfo@src,nullsink",  # a 2x2 view: showinfo's checksums cost nothing
        f"[main]{','.join(base)},split={m + 1}[h]" + "".join(f"[s{k}]" for k in range(m)),
    ]
    graph.append(f"[h]select='not(mod(n,{hash_every}))',scale={HASH_SIDE}:{HASH_SIDE}:flags=area,format=gray[hs]")
    for k in range(m):
        sel = f"gte(n,{k * plan.stride})*lt(mod(n-{k * plan.stride},{plan.period}),{plan.length})"
        graph.append(f"[s{k}]select='{sel}',setpts=N/({spec.fps:g}*TB)[o{k}]")
    cmd = [
        require_binary("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-v",
        "verbose",  # showinfo's lines (info) and the decoded frame count (verbose end-of-run statistics)
        "-threads",
        "1",
        *choice.input_args,
        "-i",
        src,
        "-filter_complex",
        ";".join(graph),
        "-filter_complex_threads",
        "1",
        "-map",
        "[hs]",
        "-f",
        "rawvideo",
        "-fps_mode",
        "passthrough",
        "pipe:1",
    ]
    for k in range(m):
        cmd += ["-map", f"[o{k}]", *output_args(spec, preset, workdir, f"s{k}")]
    return cmd


def _check_exit(proc: subprocess.Popen, stderr_file, what: str) -> None:
    """Wait for ffmpeg; on failure raise :func:`corpus.errors.ffmpeg_failure` (transient when it was killed)."""
    rc = proc.wait()
    if rc == 0:
        return
    stderr_file.seek(0)
    lines = [ln for ln in stderr_file.read().decode(errors="replace").splitlines() if not ln.startswith("[showinfo@")]
    raise ffmpeg_failure(what, rc, "\n".join(lines[-200:]))


def _segment_list(path: Path, fps: float) -> list[tuple[str, int]]:
    """Segment files and their frame counts, from the CSV list the segment muxer writes (no re-probe)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        name, start, end = line.rsplit(",", 2)
        out.append((name, round((float(end) - float(start)) * fps)))
    return out


class ClipStage(Stage):
    """Cut clips for one video per unit. Rows follow ``corpus.schemas.CLIPS`` (split/dup/shard come later)."""

    name = "clip"
    requires = ("video_id", "source", "domain", "path", "sha256", "uri", "n_frames", "fps")
    # clip rows, and one row per video of what the clip pass measured (decoded frames replace the header's)
    outputs = {"clips": (CLIPS, ("start_s", "clip_id")), "clip_facts": (CLIP_FACTS, ())}

    def route(self, row: dict) -> str:
        return "clips" if "clip_id" in row else "clip_facts"

    def __init__(self, build_dir: str, spec: ClipSpec, preset: str = "ultrafast") -> None:
        self.build_dir = build_dir
        self.spec = spec
        self.preset = preset

    def setup(self) -> None:
        require_binary("ffmpeg")
        require_binary("ffprobe")
        if self.spec.format == "mp4":
            require_encoder("libx264")

    def fingerprint(self, row: dict) -> str:
        spec = self.spec.model_dump(mode="json")
        return stable_hash(row["sha256"], spec, self.preset, row["n_frames"], self._mask(row), "timed-v1")

    def _mask(self, row: dict) -> str:
        return row.get("mask") or self.spec.mask

    def cost(self, row: dict) -> float:
        return float(row["n_frames"] or 0) * float(row.get("width") or 1) * float(row.get("height") or 1)

    def process(self, row: dict) -> UnitResult:
        try:
            return self._cut(row)
        except SurgcorpusError as exc:
            return UnitResult(
                errors=[ErrorRow.from_exception(self.name, exc, video_id=row["video_id"], uri=row["uri"])]
            )

    def _cut(self, row: dict) -> UnitResult:
        spec, vid = self.spec, row["video_id"]
        build = Path(self.build_dir)
        rel_dir = Path(CLIPS_DIR) / safe_relpath(vid)
        final = build / rel_dir
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f"{final.name}.tmp-*"):  # left by an interrupted run
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent))
        try:
            crop = None
            if self._mask(row) != "none":
                rotated = int(row.get("rotation") or 0) in (90, 270)
                crop = detect_mask_crop(row["path"], int(row["n_frames"]), self._mask(row), rotated=rotated)
            done = None
            if spec.decoder == "decord" and int(row.get("rotation") or 0) == 0:  # decord does not rotate
                done = self._run_decord(row, crop, work)
            if done is None:
                done = self._run_timed(row, crop, work)
            rows, files = self._collect(row, work, rel_dir, crop, done)
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        errors = []
        if done.counted and (short := truncation_error(self.name, row, row.get("n_frames_header"), done.n_frames)):
            errors.append(short)
        if not rows:
            errors.append(
                ErrorRow(
                    stage=self.name,
                    video_id=vid,
                    uri=row["uri"],
                    kind="too_short",
                    message=f"{row['path']}: shorter than one clip ({spec.length_frames} frames at "
                    f"{spec.fps:g} fps); no clip written",
                )
            )
        fps = float(row.get("fps") or 0)
        duration = float(row.get("duration_s") or 0)
        if done.counted and fps > 0:
            duration = min(duration, done.n_frames / fps) if duration else done.n_frames / fps
        facts = {"video_id": vid, "n_frames": done.n_frames, "frames_counted": done.counted, "duration_s": duration}
        how = "decoded" if done.counted else "estimated"
        log.info("%s: %s decode, %d frames (%s)", vid, done.decode, done.n_frames, how)
        if fps > 0 and len(done.errors_s):
            log.info("%s: timestamp errors per output frame: %s", vid, json.dumps(error_histogram(done.errors_s, fps)))
        return UnitResult(rows=[facts, *rows], files=files, errors=errors)

    def _run_timed(self, row: dict, crop: Crop | None, work: Path) -> Pass:
        """The ffmpeg pass; in ``fast`` timing the cheapest decode first. A decode that fails, yields fewer output
        frames than the header's timeline, strays more than half an output period, or (skipping frames) leaves a
        median error of a source frame or more is redone decoding every frame: at reduced resolution where the
        rejected one had it, in full otherwise (or when that one is rejected too)."""
        spec, src = self.spec, row["path"]
        choice = choose_decode(row, spec.fps, spec.size) if spec.timing == "fast" else FULL
        while choice is not FULL:
            try:
                done = self._run_ffmpeg(row, crop, work, choice)
                problem = self._fast_problem(row, done, choice)
            except DecodeError as exc:  # bad input for the cheaper decoder; a killed run (transient) propagates
                problem = str(exc)
            if problem is None:
                return done
            fallback = choice.every_frame_variant()
            log.info("%s: %s decode rejected (%s); redone as %s", src, choice.name, problem, fallback.name)
            for f in work.iterdir():
                shutil.rmtree(f) if f.is_dir() else f.unlink()
            choice = fallback
        return self._run_ffmpeg(row, crop, work, FULL)

    def _fast_problem(self, row: dict, done: Pass, choice: DecodeChoice) -> str | None:
        spec = self.spec
        n_out = len(done.errors_s)
        header, fps = row.get("n_frames_header") or row.get("n_frames"), float(row.get("fps") or 0)
        if header and fps:
            expected = math.floor(int(header) * spec.fps / fps + 0.5)
            length = spec.length_frames
            if n_out // length < expected // length:  # clip counts, as the segment muxer would cut them
                return f"{n_out} output frames, the header's timeline gives {expected}"
        if n_out and not np.all(np.isfinite(done.errors_s)):
            return "source frames of the output could not be identified"
        if n_out and float(done.errors_s.max()) > 0.5 / spec.fps:
            return f"timestamp error {float(done.errors_s.max()):.3f} s exceeds half an output period"
        if n_out and fps and not choice.every_frame and (median := float(np.median(done.errors_s)) * fps) >= 1:
            return f"median timestamp error {median:.2f} source frames, not under one"  # e.g. 2 B-frames in a row
        return None

    def _run_ffmpeg(self, row: dict, crop: Crop | None, work: Path, choice: DecodeChoice) -> Pass:
        src, fps = row["path"], float(row.get("fps") or 0)
        cmd = build_command(src, self.spec, crop, work, self.preset, choice, fps)
        frame_bytes = HASH_SIDE * HASH_SIDE
        hashes: list[int] = []
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(frame_bytes):
                if len(chunk) < frame_bytes:
                    break
                hashes.append(phash_of_gray(np.frombuffer(chunk, np.uint8).reshape(HASH_SIDE, HASH_SIDE)))
            _check_exit(proc, err, f"{src}: ffmpeg failed while cutting clips")
            err.seek(0)
            timeline = Timeline.parse(line.decode(errors="replace") for line in err)
        plan = ClipPlan(self.spec.length_frames, self.spec.stride_frames)
        hash_every = max(1, plan.length // 4)
        hash_at = {i * hash_every: h for i, h in enumerate(hashes)}
        series = [Series(f"s{k}", functools.partial(plan.start_frame, k), None, hash_at) for k in range(plan.series)]
        if choice.every_frame and timeline.decoded is not None:
            n_frames, counted = timeline.decoded, True
        else:  # skipped frames were never decoded: the packets read stand for them
            n_frames, counted = timeline.packets or int(row["n_frames"]), False
        return Pass(series, timeline.errors_s(self.spec.fps), n_frames, counted, choice.name)

    def _run_decord(self, row: dict, crop: Crop | None, work: Path) -> Pass | None:
        """Decode with decord and encode through one ffmpeg process; None when decord cannot read the file."""
        import cv2  # only this decoder resizes frames in Python (an import that every ffmpeg-path worker saves)
        import decord

        spec = self.spec
        out_w, out_h = output_size(spec, int(row["width"]), int(row["height"]), crop)
        geo = geometry(int(row["width"]), int(row["height"]), out_w, out_h, crop)
        counted = probe_video(row["path"], count="packets")  # decord trusts the header: bound it by what decodes
        fps = float(row["fps"])
        plan = DecordPlan.make(int(counted["n_frames"]), fps, spec)
        split = list(itertools.accumulate(plan.lengths))[:-1]
        cmd = [
            require_binary("ffmpeg"),
            "-nostdin",
            "-hide_banner",
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{out_w}x{out_h}",
            "-r",
            f"{spec.fps:g}",
            "-i",
            "pipe:0",
            *output_args(spec, self.preset, work, "d", split),
        ]
        hash_at: dict[int, int] = {}
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
            assert proc.stdin is not None
            try:
                for _, frames, hash_frames in clip_frames(row["path"], plan, geo):
                    proc.stdin.write(np.ascontiguousarray(frames).tobytes())
                    for k, frame in hash_frames.items():
                        small = cv2.resize(frame, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
                        hash_at[k] = phash_of_gray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
            except (decord.DECORDError, RuntimeError) as exc:
                log.info("decord could not read %s (%s); cutting with ffmpeg", row["path"], exc)
                proc.kill()
                proc.wait()
                for f in work.iterdir():
                    f.unlink()
                return None
            finally:
                if proc.stdin and not proc.stdin.closed:
                    proc.stdin.close()
            _check_exit(proc, err, f"{row['path']}: ffmpeg failed while encoding clips")
        errors_s = np.abs(plan.source_index / fps - np.arange(len(plan.source_index)) / spec.fps)
        series = [Series("d", plan.starts.__getitem__, plan.lengths, hash_at)]
        return Pass(series, errors_s, int(counted["n_frames"]), bool(counted["frames_counted"]), "decord")

    def _collect(
        self, row: dict, work: Path, rel_dir: Path, crop: Crop | None, done: Pass
    ) -> tuple[list[dict], list[str]]:
        spec, vid = self.spec, row["video_id"]
        plan = ClipPlan(spec.length_frames, spec.stride_frames)
        src_w, src_h = int(row["width"] or 0), int(row["height"] or 0)
        if int(row.get("rotation") or 0) in (90, 270):  # ffmpeg applies the display rotation while decoding
            src_w, src_h = src_h, src_w
        width, height = output_size(spec, src_w, src_h, crop)
        out_rows, files = [], []
        for ser in done.series:
            if spec.format == "mp4":
                listed = _segment_list(work / f"{ser.stem}.csv", spec.fps)
                pieces = [[work / name] for name, _ in listed]
                counts = [n for _, n in listed]
            else:
                frames = sorted(work.glob(f"{ser.stem}_*.jpg"))
                sizes = ser.lengths or [plan.length] * math.ceil(len(frames) / plan.length)
                bounds = [0, *itertools.accumulate(sizes)]
                pieces = [frames[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
                counts = [len(p) for p in pieces]
            for j, (piece, n) in enumerate(zip(pieces, counts, strict=True)):
                if n == 0 or (n < plan.length and not spec.keep_tail):
                    for p in piece:
                        p.unlink()
                    continue
                start = ser.start_of(j)
                start_ms = round(start * 1000 / spec.fps)
                name = f"{start_ms:09d}"
                if spec.format == "mp4":
                    target = work / f"{name}.mp4"
                    os.replace(piece[0], target)
                    digest, size = sha256_file(target)
                    rel = rel_dir / target.name
                else:
                    folder = work / name
                    folder.mkdir()
                    h, size = hashlib.sha256(), 0
                    for i, p in enumerate(piece):
                        dest = folder / f"{i:03d}.jpg"
                        os.replace(p, dest)
                        data = dest.read_bytes()
                        h.update(data)
                        size += len(data)
                    digest, rel = h.hexdigest(), rel_dir / name
                clip_hashes = [ser.hash_at[i] for i in range(start, start + n) if i in ser.hash_at]
                clip_errors = done.errors_s[start : start + n]
                known = len(clip_errors) == n and bool(np.all(np.isfinite(clip_errors)))
                out_rows.append(
                    {
                        "clip_id": clip_id(vid, start_ms),
                        "video_id": vid,
                        "source": row["source"],
                        "domain": row["domain"],
                        "start_s": start / spec.fps,
                        "end_s": (start + n) / spec.fps,
                        "n_frames": n,
                        "fps": spec.fps,
                        "width": width,
                        "height": height,
                        "format": spec.format,
                        "path": str(rel),
                        "bytes": size,
                        "sha256": digest,
                        "phash": clip_hashes,
                        "max_timestamp_error_s": float(clip_errors.max()) if known else None,
                    }
                )
                files.append(str(rel))
        out_rows.sort(key=lambda r: r["clip_id"])
        return out_rows, sorted(files)
