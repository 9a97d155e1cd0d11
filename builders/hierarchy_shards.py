"""Hierarchical WebDataset shards of an OpenSurgery-style build dir: one shard series per level and split.

Writes ``<build>/shards/<level>/<split>/<name>-<level>-<split>-%06d.tar`` (level: video, operation, frame) and
``<build>/tables/hier_shards.parquet`` (which shard holds which key). Keys never contain a dot:

- video ``<video-key>``: ``.000.jpg``… (``n_frames`` frames spread over the whole video, one ffmpeg call),
  ``.txt`` (description, else title), ``.json`` (metadata, the ordered operations, hard negatives);
- operation ``<video-key>__op-<idx:03d>``: ``.mp4`` (the operation cut with ffmpeg), ``.txt`` (its text),
  ``.json`` (neighbouring operation texts, order, hard negatives);
- frame ``<video-key>__t-<ms:09d>``: ``.jpg``, ``.txt`` (caption, when there is one), ``.json``.

Hard negatives (in each ``.json``, within the same split, at most ``max_negatives`` chosen by a seeded hash):
other videos of the same surgery type; for operations also the other operations of the same video and the
same-label operations of other videos. Samples are written video by video (videos in key order, then index/time);
every tar member has a fixed mtime, user and mode, and each tar is written under a temp name and renamed, so a
rebuild from the same tables and media gives byte-identical shards.

>>> write_hierarchy_shards("build/opensurgery", media="videos/")  # doctest: +SKIP
{'video/test': 120, 'video/train': 280, ...}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import webdataset as wds

from corpus.errors import ProbeError, ToolMissing
from corpus.hierarchy.models import humanize
from corpus.hierarchy.schemas import (
    SHARD_ERROR_STAGE,
    read_hier_table,
    write_hier_table,
    write_hierarchy_errors,
)

MTIME = 0.0


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


def check_tools() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise ToolMissing(f"{tool} not found on PATH; install it (Debian: apt-get install ffmpeg)")


class _ShardSeries:
    """Writes samples into ``<prefix>-%06d.tar`` under temp names, closing a shard at max_samples/max_bytes."""

    def __init__(self, folder: Path, prefix: str, settings: ShardSettings, build_dir: Path) -> None:
        self.folder, self.prefix, self.settings, self.build_dir = folder, prefix, settings, build_dir
        self.index, self.count, self.bytes = -1, 0, 0
        self.writer: wds.TarWriter | None = None
        self.stream = None
        self.tmp: Path | None = None
        self.written: list[Path] = []
        self.rows: list[dict] = []

    def _final(self) -> Path:
        return self.folder / f"{self.prefix}-{self.index:06d}.tar"

    def _open(self) -> None:
        self.index += 1
        self.count, self.bytes = 0, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tmp = self.folder / f".{self.prefix}-{self.index:06d}.tar.tmp{os.getpid()}"
        self.stream = self.tmp.open("wb")
        self.writer = wds.TarWriter(self.stream, mtime=MTIME, encoder=False)

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.stream.close()
        os.replace(self.tmp, self._final())
        self.written.append(self._final())
        self.writer = None

    def write(self, sample: dict[str, bytes], meta: dict) -> None:
        size = sum(len(v) for k, v in sample.items() if not k.startswith("__"))
        if self.writer is not None and (
            self.count >= self.settings.max_samples or self.bytes + size > self.settings.max_bytes
        ):
            self.close()
        if self.writer is None:
            self._open()
        self.writer.write(sample)
        self.count += 1
        self.bytes += size
        members = sorted(f"{sample['__key__']}.{k}" for k in sample if not k.startswith("__"))
        shard = str(self._final().relative_to(self.build_dir))
        self.rows.append({**meta, "key": sample["__key__"], "shard": shard, "members": members, "bytes": size})


def _probe(path: Path) -> tuple[float, float]:
    """(duration in s, frame rate) of a video, from ffprobe."""
    info = ffmpeg.probe(str(path))
    stream = next((s for s in info["streams"] if s.get("codec_type") == "video"), None)
    if stream is None:
        raise ProbeError(f"{path}: no video stream")
    num, _, den = stream.get("avg_frame_rate", "0/1").partition("/")
    try:
        fps = float(num) / float(den) if float(den or 0) else 0.0
        duration = float(stream.get("duration") or info.get("format", {}).get("duration"))
    except (TypeError, ValueError) as exc:
        raise ProbeError(f"{path}: no usable duration/frame rate in ffprobe output ({exc})") from exc
    if duration <= 0:
        raise ProbeError(f"{path}: duration {duration} s")
    return duration, fps or 25.0


def _scale(node, size: int | None):
    if size is None:
        return node
    return node.filter("scale", f"if(gt(iw,ih),-2,min(iw,{size}))", f"if(gt(iw,ih),min(ih,{size}),-2)")


_RUN = ("-nostdin", "-loglevel", "error", "-y", "-fflags", "+bitexact", "-threads", "1")


def _grab_frames(path: Path, times: list[float], out: Path, settings: ShardSettings, tag: str) -> list[Path]:
    """JPEG frames at ``times`` (accurate input seeks), one ffmpeg call per 32 frames."""
    files = [out / f"{tag}{i:06d}.jpg" for i in range(len(times))]
    for lo in range(0, len(times), 32):
        outs = [
            _scale(ffmpeg.input(str(path), ss=f"{t:.3f}"), settings.size).output(
                str(f), vframes=1, **{"q:v": settings.jpeg_quality, "flags:v": "+bitexact"}
            )
            for t, f in zip(times[lo : lo + 32], files[lo : lo + 32], strict=True)
        ]
        ffmpeg.merge_outputs(*outs).global_args(*_RUN).run(capture_stdout=True, capture_stderr=True)
    return files


def _cut_clip(path: Path, start: float, end: float, out: Path, settings: ShardSettings) -> Path:
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
    return out


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


def write_hierarchy_shards(
    build_dir: str | Path, *, media: str | Path | None = None, settings: ShardSettings = ShardSettings()
) -> dict[str, int]:
    """Write the three shard levels of ``build_dir``; returns samples per ``<level>/<split>``.

    A video whose media file is missing or unreadable lands in ``errors`` (stage ``hierarchy-shard``) with all
    its samples left out; the other videos are written.
    """
    check_tools()
    build_dir = Path(build_dir)
    media = Path(media) if media is not None else None
    videos = sorted(read_hier_table(build_dir, "hier_videos"), key=lambda v: v["key"])
    ops_of: dict[str, list[dict]] = defaultdict(list)
    for o in sorted(read_hier_table(build_dir, "operations"), key=lambda o: o["index"]):
        ops_of[o["video_id"]].append(o)
    frames_of: dict[str, list[dict]] = defaultdict(list)
    for f in sorted(read_hier_table(build_dir, "frames"), key=lambda f: f["t_s"]):
        frames_of[f["video_id"]].append(f)
    split_of = {v["video_id"]: v.get("split") or "unsplit" for v in videos}
    by_type: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    by_label: dict[tuple[str, str | None], list[tuple[str, str]]] = defaultdict(list)
    for v in videos:
        by_type[(split_of[v["video_id"]], v.get("surgery_type"))].append(v["key"])
        for o in ops_of[v["video_id"]]:
            by_label[(split_of[v["video_id"]], o.get("label"))].append((v["video_id"], o["key"]))

    series: dict[tuple[str, str], _ShardSeries] = {}

    def put(level: str, split: str, sample: dict[str, bytes], video_id: str) -> None:
        if (level, split) not in series:
            folder = build_dir / "shards" / level / split
            series[(level, split)] = _ShardSeries(folder, f"{settings.name}-{level}-{split}", settings, build_dir)
        series[(level, split)].write(sample, {"level": level, "split": split, "video_id": video_id})

    errors: list[dict] = []
    for v in videos:
        vid, split = v["video_id"], split_of[v["video_id"]]
        path = resolve_media(v, media)
        if path is None:
            errors.append(
                {
                    "stage": SHARD_ERROR_STAGE,
                    "video_id": vid,
                    "uri": v.get("path"),
                    "kind": "missing_file",
                    "message": f"video {vid}: no media file (path {v.get('path')!r}, media folder {media})",
                }
            )
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="hshard-") as tmp:
                samples = _video_samples(
                    v, path, ops_of[vid], frames_of[vid], Path(tmp), settings, by_type, by_label, split
                )
        except (ffmpeg.Error, ProbeError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            errors.append(
                {
                    "stage": SHARD_ERROR_STAGE,
                    "video_id": vid,
                    "uri": str(path),
                    "kind": "decode",
                    "message": f"{path}: video {vid}: ffmpeg/ffprobe failed: {exc!r}"[:500],
                    "detail": stderr.decode(errors="replace")[-2000:],
                }
            )
            continue
        for level, sample in samples:
            put(level, split, sample, vid)

    counts, rows = {}, []
    keep: set[Path] = set()
    for (level, split), s in sorted(series.items()):
        s.close()
        keep.update(s.written)
        rows += s.rows
        counts[f"{level}/{split}"] = len(s.rows)
    for stale in sorted((build_dir / "shards").glob("*/*/*.tar")) if (build_dir / "shards").exists() else []:
        if stale not in keep and stale.name.startswith(f"{settings.name}-"):
            stale.unlink()
    write_hier_table(build_dir, "hier_shards", rows)
    write_hierarchy_errors(build_dir, errors, stage=SHARD_ERROR_STAGE)
    from corpus.hierarchy.catalog import write_catalog

    write_catalog(build_dir)
    return counts


def _video_samples(
    v: dict,
    path: Path,
    ops: list[dict],
    frames: list[dict],
    tmp: Path,
    settings: ShardSettings,
    by_type: dict,
    by_label: dict,
    split: str,
) -> list[tuple[str, dict[str, bytes]]]:
    """All samples of one video: its video sample, operation samples and frame samples."""
    vid, key = v["video_id"], v["key"]
    duration, fps = _probe(path)
    last = max(0.0, duration - 1.5 / fps)
    same_type = _pick([k for k in by_type[(split, v.get("surgery_type"))] if k != key], settings, key)
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

    times = [round((i + 0.5) * duration / settings.n_frames, 3) for i in range(settings.n_frames)]
    jpgs = _grab_frames(path, [min(t, last) for t in times], tmp, settings, "v")
    sample: dict[str, bytes] = {"__key__": key}
    for i, f in enumerate(jpgs):
        sample[f"{i:03d}.jpg"] = f.read_bytes()
    meta = {
        k: v.get(k)
        for k in ("video_id", "key", "split", "surgery_type", "title", "description", "url", "license", "source")
    }
    meta |= {
        "duration_s": duration,
        "frame_times_s": times,
        "operations": op_list,
        "n_operations": len(op_list),
        "hard_negatives": {"same_surgery_type_videos": same_type},
    }
    sample["txt"] = (v.get("description") or v.get("title") or "").encode()
    sample["json"] = _json(meta)
    out.append(("video", sample))

    for o in ops:
        i, n = o["index"], len(ops)
        clip = _cut_clip(path, o["start_s"], min(o["end_s"], duration), tmp / f"op{i:03d}.mp4", settings)
        same_label = [k for (ov, k) in by_label[(split, o.get("label"))] if ov != vid]
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
                "same_video_operations": [x["key"] for x in op_list if x["index"] != i],
                "same_label_other_videos": _pick(same_label, settings, o["key"]),
                "same_surgery_type_videos": same_type,
            },
        }
        out.append(
            (
                "operation",
                {"__key__": o["key"], "mp4": clip.read_bytes(), "txt": _text(o).encode(), "json": _json(meta)},
            )
        )

    jpgs = _grab_frames(path, [min(f["t_s"], last) for f in frames], tmp, settings, "f")
    for f, jpg in zip(frames, jpgs, strict=True):
        op = ops[f["op_index"]] if f.get("op_index") is not None else None
        meta = {
            "video_id": vid,
            "video_key": key,
            "key": f["key"],
            "split": split,
            "t_s": f["t_s"],
            "label": f.get("label"),
            "caption": f.get("caption"),
            "op_index": f.get("op_index"),
            "operation_key": op["key"] if op else None,
            "operation_text": _text(op) if op else None,
            "surgery_type": v.get("surgery_type"),
            "hard_negatives": {"same_surgery_type_videos": same_type},
        }
        sample = {"__key__": f["key"], "jpg": jpg.read_bytes(), "json": _json(meta)}
        if f.get("caption"):
            sample["txt"] = f["caption"].encode()
        out.append(("frame", sample))
    return out


def _text(op: dict) -> str:
    return op.get("text") or humanize(op.get("label") or "")
