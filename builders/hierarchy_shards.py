"""Hierarchical WebDataset shards of an OpenSurgery-style build dir: one shard series per level and split.

Writes ``<build>/shards/<level>/<split>/<name>-<level>-<split>-%06d.tar`` (level: video, operation, frame) and
``<build>/tables/hier_shards.parquet`` (which shard holds which key). Keys never contain a dot:

- video ``<video-key>``: ``.000.jpg``… (``n_frames`` frames spread over the whole video, one ffmpeg call),
  ``.txt`` (description, else title), ``.json`` (metadata, the ordered operations, hard negatives);
- operation ``<video-key>__op-<idx:03d>``: ``.mp4`` (the operation cut with ffmpeg), ``.txt`` (its text),
  ``.json`` (neighbouring operation texts, order, hard negatives);
- frame ``<video-key>__t-<ms:09d>``: ``.jpg``, ``.txt`` (caption, when there is one), ``.json``.

Two passes. The **media** pass is one resumable unit per video (:class:`HierarchyMediaStage`, run by the local
executor with ``_state/hierarchy-media/`` markers): it decodes the video's frames and operation clips into
``<build>/cache/hierarchy-media/<video-key>.tar``. A video whose media file (path, size, mtime), media settings
(``n_frames``, ``size``, ``clip_fps``, ``crf``, ``jpeg_quality``) and operation/frame times are unchanged, and whose
cached tar is still there with its recorded size, is skipped. An ffmpeg failure on one operation or frame (or on
the video sample's frames) becomes an error row naming the video and the sample key (``clip_id``); the video's
other samples are still written. The **assembly** pass adds text and metadata and writes the shards.

Hard negatives (in each ``.json``, within the same split, among samples that were written, at most
``max_negatives`` chosen by a seeded hash): other videos of the same surgery type; for operations also the other
operations of the same video and the same-label operations of other videos. Samples are written video by video
(videos in key order, then index/time); every tar member has a fixed mtime, user and mode, and each tar is written
under a temp name and renamed, so a rebuild (fresh or resumed) from the same tables and media gives byte-identical
shards.

>>> write_hierarchy_shards("build/opensurgery", media="videos/")  # doctest: +SKIP
{'video/test': 120, 'video/train': 280, ...}
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import ffmpeg
import pyarrow as pa
import pyarrow.compute as pc

from builders.executors.base import Executor
from builders.executors.local import LocalExecutor
from builders.stages.base import Stage, UnitResult, stable_hash
from builders.stages.probe import probe_video
from builders.stages.shard import Sample, write_series
from corpus.atomic import temp_sibling
from corpus.build_dir import BuildDir, writes_build_dir
from corpus.errors import DecodeError, ErrorRow, ProbeError, ToolMissing
from corpus.hierarchy.models import humanize
from corpus.hierarchy.schemas import (
    FRAMES,
    SHARD_ERROR_STAGE,
    read_hier_arrow,
    read_hier_table,
    write_hier_table,
)

MTIME = 0.0
MEDIA_STAGE = "hierarchy-media"
CACHE_DIR = Path("cache") / "hierarchy-media"
MEDIA_VERSION = 2  # bump when the media pass changes what it writes for the same inputs
MEDIA_TOLERANCE_S = 0.5  # how far past the media's end a frame time may be (it is clamped to the last frame)


@dataclass(frozen=True)
class ShardSettings:
    """What goes into the samples and how shards are cut."""

    name: str = "opensurgery"
    n_frames: int = 8  # frames per video sample
    size: int | None = 224  # short side of frames and clips (never upscaled); None keeps the source size
    clip_fps: float | None = None  # frame rate of operation clips; None keeps the source rate
    crf: int = 23
    jpeg_quality: int = 3  # ffmpeg -q:v (2 best .. 31 worst)
    max_samples: int = 1000
    max_bytes: int = 1 << 30
    max_negatives: int = 32
    seed: int = 0

    def media(self) -> dict:
        """The settings the decoded media depend on (a change redoes the media pass of every video)."""
        return {k: getattr(self, k) for k in ("n_frames", "size", "clip_fps", "crf", "jpeg_quality")}


def check_tools() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} not found on PATH; install it (Debian: apt-get install ffmpeg)")


# -- ffmpeg --------------------------------------------------------------------------------------------------------


def _probe(path: Path) -> tuple[float, float]:
    """(duration in s, frame rate) of a video, from its headers (the probe stage's ffprobe wrapper)."""
    facts = probe_video(str(path))
    if not facts["duration_s"] or facts["duration_s"] <= 0:
        raise ProbeError(f"{path}: duration {facts['duration_s']} s")
    return facts["duration_s"], facts["fps"] or 25.0


def _scale(node, size: int | None):
    if size is None:
        return node
    return node.filter("scale", f"if(gt(iw,ih),-2,min(iw,{size}))", f"if(gt(iw,ih),min(ih,{size}),-2)")


_RUN = ("-nostdin", "-loglevel", "error", "-y", "-fflags", "+bitexact", "-threads", "1")


def _stderr(exc: Exception) -> str:
    return (getattr(exc, "stderr", b"") or b"").decode(errors="replace")[-2000:]


def _grab_frames(
    path: Path, times: list[float], out: Path, settings: ShardSettings, tag: str
) -> tuple[list[bytes | None], list[str]]:
    """JPEG frames at ``times`` (accurate input seeks), one ffmpeg call per 32 frames.

    Returns each frame's bytes (None where ffmpeg failed or wrote nothing: a damaged or truncated file) and the
    stderr of each failed frame. A failed batch is retried frame by frame, so one bad time loses one frame.
    """
    files = [out / f"{tag}{i:06d}.jpg" for i in range(len(times))]
    stderr = [""] * len(times)

    def run(idx: list[int]) -> None:
        outs = [
            _scale(ffmpeg.input(str(path), ss=f"{times[i]:.3f}"), settings.size).output(
                str(files[i]), vframes=1, **{"q:v": settings.jpeg_quality, "flags:v": "+bitexact"}
            )
            for i in idx
        ]
        ffmpeg.merge_outputs(*outs).global_args(*_RUN).run(capture_stdout=True, capture_stderr=True)

    for lo in range(0, len(times), 32):
        batch = list(range(lo, min(lo + 32, len(times))))
        try:
            run(batch)
        except ffmpeg.Error:
            for i in batch:
                files[i].unlink(missing_ok=True)
                try:
                    run([i])
                except ffmpeg.Error as exc:
                    files[i].unlink(missing_ok=True)
                    stderr[i] = _stderr(exc)
    frames = [f.read_bytes() if f.is_file() and f.stat().st_size else None for f in files]
    return frames, stderr


def _cut_clip(path: Path, start: float, end: float, out: Path, settings: ShardSettings) -> bytes:
    """The operation ``start``–``end`` re-encoded (H.264); raises ``ffmpeg.Error`` or ``DecodeError`` (no frames)."""
    node = _scale(ffmpeg.input(str(path), ss=f"{start:.3f}", t=f"{end - start:.3f}"), settings.size)
    if settings.clip_fps:
        node = node.filter("fps", settings.clip_fps)
    opts = {
        "vcodec": "libx264",
        "crf": settings.crf,
        "preset": "veryfast",
        "pix_fmt": "yuv420p",
        "an": None,
        "map_metadata": -1,
        "flags:v": "+bitexact",
        "movflags": "+faststart",
    }
    node.output(str(out), **opts).global_args(*_RUN).run(capture_stdout=True, capture_stderr=True)
    # ffmpeg exits 0 when the input ends early (a truncated download): an mp4 without frames is a failure too
    try:
        streams = ffmpeg.probe(str(out))["streams"] if out.is_file() else []
    except ffmpeg.Error:
        streams = []
    n = next((int(s.get("nb_frames") or 0) for s in streams if s.get("codec_type") == "video"), 0)
    if n == 0:
        raise DecodeError(f"ffmpeg wrote no frames for {start:.3f}-{end:.3f} s")
    return out.read_bytes()


# -- the media pass: one resumable unit per video --------------------------------------------------------------


def _error(vid: str, uri: str, kind: str, message: str, key: str | None = None, detail: str = "") -> ErrorRow:
    return ErrorRow(SHARD_ERROR_STAGE, vid, uri, kind, message[:500], clip_id=key, detail=detail)


def _write_member_tar(members: dict[str, bytes], dest: Path) -> None:
    """A tar of ``members`` in name order with fixed metadata, written under a temp name and renamed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), int(MTIME), 0o444
            tar.addfile(info, io.BytesIO(members[name]))
    os.replace(tmp, dest)


def _read_member_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """sample key → {extension: bytes} of a media tar."""
    out: dict[str, dict[str, bytes]] = defaultdict(dict)
    with tarfile.open(path) as tar:
        for info in tar:
            key, _, ext = info.name.partition(".")
            out[key][ext] = tar.extractfile(info).read()
    return out


class HierarchyMediaStage(Stage):
    """Decode one video's samples (video frames, operation clips, frames) into ``cache/hierarchy-media/<key>.tar``.

    A unit row: ``video_id``, ``key``, ``media`` (the local file), ``ops`` (``[key, start_s, end_s]``) and
    ``frames`` (``[key, t_s]``). Output row: ``video_id, duration_s, fps, frame_times_s, cache``.
    """

    name: ClassVar[str] = MEDIA_STAGE
    requires: ClassVar[tuple[str, ...]] = ("video_id", "key", "media", "ops", "frames")

    def __init__(self, build_dir: str, settings: ShardSettings) -> None:
        self.build_dir = build_dir
        self.settings = settings

    def setup(self) -> None:
        check_tools()

    def fingerprint(self, row: dict) -> str:
        try:
            st = os.stat(row["media"])
            stat = (st.st_size, st.st_mtime_ns)
        except OSError:
            stat = ("missing",)
        return stable_hash(MEDIA_VERSION, row["media"], *stat, self.settings.media(), row["ops"], row["frames"])

    def process(self, row: dict) -> UnitResult:
        vid, key, path = row["video_id"], row["key"], Path(row["media"])
        try:
            duration, fps = _probe(path)
        except ffmpeg.Error as exc:
            msg = f"{path}: video {vid}: ffprobe failed: {exc}"
            return UnitResult(errors=[_error(vid, str(path), "unreadable", msg, detail=_stderr(exc))])
        except ProbeError as exc:
            return UnitResult(errors=[_error(vid, str(path), exc.kind, f"video {vid}: {exc}")])
        last = max(0.0, duration - 1.5 / fps)
        n = self.settings.n_frames
        times = [round((i + 0.5) * duration / n, 3) for i in range(n)]
        members: dict[str, bytes] = {}
        errors: list[ErrorRow] = []
        with tempfile.TemporaryDirectory(prefix="hmedia-") as tmp_name:
            tmp = Path(tmp_name)
            jpgs, stderr = _grab_frames(path, [min(t, last) for t in times], tmp, self.settings, "v")
            bad = [f"{t:g}" for t, j in zip(times, jpgs, strict=True) if j is None]
            if bad:
                msg = f"{path}: video {vid}: video sample {key}: ffmpeg gave no frame at {', '.join(bad)} s"
                errors.append(_error(vid, str(path), "decode", msg, key, next((s for s in stderr if s), "")))
            else:
                members |= {f"{key}.{i:03d}.jpg": j for i, j in enumerate(jpgs)}

            for op_key, start, end in row["ops"]:
                where = f"{path}: video {vid}: operation {op_key} ({start:g}-{end:g} s)"
                if start >= duration:
                    msg = f"{where}: starts after the media ends ({duration:g} s)"
                    errors.append(_error(vid, str(path), "outside_media", msg, op_key))
                    continue
                try:
                    members[f"{op_key}.mp4"] = _cut_clip(
                        path, start, min(end, duration), tmp / f"{op_key}.mp4", self.settings
                    )
                except (ffmpeg.Error, DecodeError) as exc:
                    reason = "ffmpeg failed" if isinstance(exc, ffmpeg.Error) else str(exc)
                    errors.append(_error(vid, str(path), "decode", f"{where}: {reason}", op_key, _stderr(exc)))

            wanted = [(k, t) for k, t in row["frames"] if t <= duration + MEDIA_TOLERANCE_S]
            for k, t in row["frames"]:
                if t > duration + MEDIA_TOLERANCE_S:
                    msg = f"{path}: video {vid}: frame {k} at {t:g} s is past the media's end ({duration:g} s)"
                    errors.append(_error(vid, str(path), "outside_media", msg, k))
            jpgs, stderr = _grab_frames(path, [min(t, last) for _, t in wanted], tmp, self.settings, "f")
            for (k, t), jpg, err in zip(wanted, jpgs, stderr, strict=True):
                if jpg is None:
                    msg = f"{path}: video {vid}: frame {k} at {t:g} s: ffmpeg gave no frame"
                    errors.append(_error(vid, str(path), "decode", msg, k, err))
                else:
                    members[f"{k}.jpg"] = jpg
        rel = str(CACHE_DIR / f"{key}.tar")
        _write_member_tar(members, Path(self.build_dir) / rel)
        out = {"video_id": vid, "duration_s": duration, "fps": fps, "frame_times_s": times, "cache": rel}
        return UnitResult(rows=[out], files=[rel], errors=errors)


# -- assembly ----------------------------------------------------------------------------------------------------


def _pick(keys: list[str], settings: ShardSettings, anchor: str) -> list[str]:
    order = sorted(keys, key=lambda k: hashlib.sha256(f"{settings.seed}\x00{anchor}\x00{k}".encode()).hexdigest())
    return sorted(order[: settings.max_negatives])


def _json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()


def resolve_media(video: dict, media: Path | None) -> Path | None:
    """The video's local file: its ``path``, else ``<media>/<video_id>.mp4`` or ``<media>/<video-key>.mp4``."""
    candidates = [Path(video["path"])] if video.get("path") else []
    if media is not None:
        candidates += [media / f"{video['video_id']}.mp4", media / f"{video['key']}.mp4"]
    return next((p for p in candidates if p.is_file()), None)


@writes_build_dir("hierarchy shard")
def write_hierarchy_shards(
    build_dir: str | Path,
    *,
    media: str | Path | None = None,
    settings: ShardSettings = ShardSettings(),
    workers: int = 1,
    retry_errors: bool = False,
    executor: Executor | None = None,
) -> dict[str, int]:
    """Write the three shard levels of ``build_dir``; returns samples per ``<level>/<split>``.

    The media pass runs on ``workers`` local processes and resumes video by video (see the module docstring). A
    video whose media file is missing or unreadable lands in ``errors`` (stage ``hierarchy-shard``) with all its
    samples left out; a failed operation or frame loses only that sample. The other videos are written.
    """
    check_tools()
    build_dir = Path(build_dir).resolve()
    media = Path(media) if media is not None else None
    videos = sorted(read_hier_table(build_dir, "hier_videos"), key=lambda v: v["key"])
    ops_of: dict[str, list[dict]] = defaultdict(list)
    for o in sorted(read_hier_table(build_dir, "operations"), key=lambda o: o["index"]):
        ops_of[o["video_id"]].append(o)
    frames_of = _frames_by_video(read_hier_arrow(build_dir, "frames"))
    no_frames = FRAMES.empty_table()

    errors: list[dict] = []
    units: list[dict] = []
    for v in videos:
        vid = v["video_id"]
        path = resolve_media(v, media)
        if path is None:
            msg = f"video {vid}: no media file (path {v.get('path')!r}, media folder {media})"
            errors.append(_error(vid, v.get("path"), "missing_file", msg).to_dict())
            continue
        units.append(
            {
                "video_id": vid,
                "key": v["key"],
                "media": str(path.resolve()),
                "ops": [[o["key"], o["start_s"], o["end_s"]] for o in ops_of[vid]],
                "frames": [
                    list(kt) for kt in zip(*_columns(frames_of.get(vid, no_frames), "key", "t_s"), strict=True)
                ],
            }
        )
    executor = executor or LocalExecutor(workers, show_progress=False)  # ``executor``: e.g. a RayExecutor
    executor.retry_errors = retry_errors
    done = executor.run(str(build_dir), HierarchyMediaStage(str(build_dir), settings), units)
    errors += [e.to_dict() for e in done.errors]
    decoded = {r["video_id"]: r for r in done.rows}
    samples_of = {vid: _read_member_tar(build_dir / r["cache"]) for vid, r in decoded.items()}

    split_of = {v["video_id"]: v.get("split") or "unsplit" for v in videos}
    by_type: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    by_label: dict[tuple[str, str | None], list[tuple[str, str]]] = defaultdict(list)
    for v in videos:
        got = samples_of.get(v["video_id"], {})
        if v["key"] in got:
            by_type[(split_of[v["video_id"]], v.get("surgery_type"))].append(v["key"])
        for o in ops_of[v["video_id"]]:
            if o["key"] in got:
                by_label[(split_of[v["video_id"]], o.get("label"))].append((v["video_id"], o["key"]))

    series: dict[tuple[str, str], list[tuple[Sample, int]]] = defaultdict(list)
    meta_of: dict[str, dict] = {}
    for v in videos:
        vid = v["video_id"]
        if vid not in decoded:
            continue
        ctx = _Context(settings, by_type, by_label, split_of[vid])
        frames = frames_of.get(vid, no_frames)
        for level, sample in _video_samples(v, decoded[vid], ops_of[vid], frames, samples_of[vid], ctx):
            members = tuple(sorted((k, val) for k, val in sample.items() if not k.startswith("__")))
            size = sum(len(val) for _, val in members)
            key = sample["__key__"]
            fp = hashlib.sha256(b"".join(k.encode() + val for k, val in members)).hexdigest()
            series[(level, split_of[vid])].append((Sample(key, members, fp), size))
            meta_of[key] = {"level": level, "split": split_of[vid], "video_id": vid, "bytes": size}

    counts, rows = {}, []
    keep: set[Path] = set()
    for (level, split), samples in sorted(series.items()):
        prefix = f"{settings.name}-{level}-{split}"
        folder = f"shards/{level}/{split}"
        entries = write_series(build_dir, [(folder, prefix, samples)], settings.max_samples, settings.max_bytes)
        members_of: dict[str, list[str]] = defaultdict(list)
        for e in entries:
            members_of[e["key"]].append(e["member"])
            keep.add(build_dir / e["shard"])
        shard_of = {e["key"]: e["shard"] for e in entries}
        rows += [
            {**meta_of[s.key], "key": s.key, "shard": shard_of[s.key], "members": sorted(members_of[s.key])}
            for s, _ in samples
        ]
        counts[f"{level}/{split}"] = len(samples)
    for stale in sorted((build_dir / "shards").glob("*/*/*.tar")) if (build_dir / "shards").exists() else []:
        if stale not in keep and stale.name.startswith(f"{settings.name}-"):
            stale.unlink()
    cached = {build_dir / r["cache"] for r in decoded.values()}
    for stale in sorted((build_dir / CACHE_DIR).glob("*.tar")):
        if stale not in cached:  # a video no longer in the tables
            stale.unlink()
    write_hier_table(build_dir, "hier_shards", rows)
    BuildDir(build_dir).replace_errors([SHARD_ERROR_STAGE], errors)  # the decorator refreshes the catalog
    return counts


@dataclass(frozen=True)
class _Context:
    settings: ShardSettings
    by_type: dict
    by_label: dict
    split: str


def _video_samples(
    v: dict, decoded: dict, ops: list[dict], frames: pa.Table, media: dict[str, dict[str, bytes]], ctx: _Context
) -> list[tuple[str, dict[str, bytes]]]:
    """The samples of one video whose media were decoded: its video sample, operation and frame samples."""
    settings, split = ctx.settings, ctx.split
    vid, key = v["video_id"], v["key"]
    same_type = _pick([k for k in ctx.by_type[(split, v.get("surgery_type"))] if k != key], settings, key)
    op_list = [
        {
            "index": o["index"],
            "key": o["key"],
            "start_s": o["start_s"],
            "end_s": o["end_s"],
            "label": o.get("label"),
            "text": _text(o),
        }
        for o in ops
    ]
    out: list[tuple[str, dict[str, bytes]]] = []

    if key in media:
        meta = {
            k: v.get(k)
            for k in ("video_id", "key", "split", "surgery_type", "title", "description", "url", "license", "source")
        }
        meta |= {
            "duration_s": decoded["duration_s"],
            "frame_times_s": decoded["frame_times_s"],
            "operations": op_list,
            "n_operations": len(op_list),
            "hard_negatives": {"same_surgery_type_videos": same_type},
        }
        sample: dict[str, bytes] = {"__key__": key, **media[key]}
        sample["txt"] = (v.get("description") or v.get("title") or "").encode()
        sample["json"] = _json(meta)
        out.append(("video", sample))

    written_ops = [x["key"] for x in op_list if x["key"] in media]
    for o in ops:
        if o["key"] not in media:
            continue
        i, n = o["index"], len(ops)
        same_label = [k for (ov, k) in ctx.by_label[(split, o.get("label"))] if ov != vid]
        meta = {
            "video_id": vid,
            "video_key": key,
            "key": o["key"],
            "split": split,
            "index": i,
            "n_operations": n,
            "start_s": o["start_s"],
            "end_s": o["end_s"],
            "label": o.get("label"),
            "text": _text(o),
            "surgery_type": v.get("surgery_type"),
            "prev": op_list[i - 1] if i > 0 else None,
            "next": op_list[i + 1] if i + 1 < n else None,
            "order": {"index": i, "n_operations": n, "position": i / (n - 1) if n > 1 else 0.0},
            "hard_negatives": {
                "same_video_operations": [k for k in written_ops if k != o["key"]],
                "same_label_other_videos": _pick(same_label, settings, o["key"]),
                "same_surgery_type_videos": same_type,
            },
        }
        out.append(
            ("operation", {"__key__": o["key"], **media[o["key"]], "txt": _text(o).encode(), "json": _json(meta)})
        )

    for fkey, t_s, label, caption, op_index in zip(
        *_columns(frames, "key", "t_s", "label", "caption", "op_index"), strict=True
    ):
        if fkey not in media:
            continue
        op = ops[op_index] if op_index is not None else None
        meta = {
            "video_id": vid,
            "video_key": key,
            "key": fkey,
            "split": split,
            "t_s": t_s,
            "label": label,
            "caption": caption,
            "op_index": op_index,
            "operation_key": op["key"] if op else None,
            "operation_text": _text(op) if op else None,
            "surgery_type": v.get("surgery_type"),
            "hard_negatives": {"same_surgery_type_videos": same_type},
        }
        sample = {"__key__": fkey, **media[fkey], "json": _json(meta)}
        if caption:
            sample["txt"] = caption.encode()
        out.append(("frame", sample))
    return out


def _frames_by_video(frames: pa.Table) -> dict[str, pa.Table]:
    """Each video's frames, in time order (ties keep the table's order), as a slice of the ``frames`` table."""
    frames = frames.sort_by([("video_id", "ascending"), ("t_s", "ascending")])
    ids = frames.column("video_id").combine_chunks()
    if not len(ids):
        return {}
    cuts = [0, *(i + 1 for i in pc.indices_nonzero(pc.not_equal(ids[1:], ids[:-1])).to_pylist()), len(ids)]
    return {ids[a].as_py(): frames.slice(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)}


def _columns(table: pa.Table, *names: str) -> list[list]:
    return [table.column(n).to_pylist() for n in names]


def _text(op: dict) -> str:
    return op.get("text") or humanize(op.get("label") or "")
