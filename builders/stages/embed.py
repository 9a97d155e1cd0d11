"""The ``embed`` stage: one vector per clip from a pluggable encoder, into ``tables/embeddings.parquet``.

Two encoders:

- ``default`` (:class:`StatsEncoder`): CPU only, no downloaded weights. Decodes 8 frames per clip with decord at
  64x64 and describes them by (a) 16x16 luma thumbnails standardised per frame (zero mean, unit variance: invariant
  to brightness and contrast), (b) their frame-to-frame differences (motion), (c) gradient-orientation histograms
  on a 4x4 grid (texture), (d) 8x8 chroma thumbnails (colour; ffmpeg's brightness/contrast leave chroma alone).
  Each block is L2-normalised and weighted, the concatenation is projected to ``dim`` by a fixed-seed Gaussian
  random projection (which preserves cosine similarity) and L2-normalised. A re-encoded copy (other crf, slight
  brightness change) scores a cosine near 1, other moments of the same video clearly less (see tests/test_leakage.py).
- a trainer checkpoint (:class:`CheckpointEncoder`): a file written by
  ``torch.save({"model": model.state_dict(), "config": {...}}, path)`` whose ``config`` holds

  ============== ====================================================================================
  ``builder``    required: ``"package.module:callable"`` returning the ``torch.nn.Module`` (``**kwargs``)
  ``kwargs``     keyword arguments of the builder (default ``{}``)
  ``num_frames`` frames sampled uniformly per clip (default 8)
  ``image_size`` frames are decoded at ``image_size`` x ``image_size`` (default 224)
  ``mean/std``   per-channel normalisation of RGB in [0, 1] (default ImageNet's)
  ============== ====================================================================================

  The module gets a float tensor ``(B, 3, T, H, W)``; it is called through ``model.embed(x)`` when it has that
  method, else ``model(x)``; an output ``(B, D)`` is used as is, ``(B, N, D)`` is mean-pooled over tokens.

Runs through an executor (``builders.executors``: one unit per video, a shared process pool, progress bars,
``_state/embed`` markers while a run is under way). Resume: clip ids already embedded by the same encoder id (in the
table or in flushed part files of an interrupted run) are skipped. Decode failures become ``errors`` rows
(``stage="embed"``), are retried by the next run, and the rest goes on.

Example::

    from builders.stages.embed import embed_build
    summary = embed_build("build/surgrec", encoder="default")          # or encoder="runs/mae/last.pt"
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from builders.executors.base import STATE_DIR, Executor
from builders.stages.base import Stage, UnitResult, stable_hash
from corpus.build_dir import BuildDir, writes_build_dir
from corpus.embeddings import EMBEDDINGS, embeddings_table
from corpus.errors import DecodeError, ErrorRow, MissingInput, SurgcorpusError, ToolMissing
from corpus.schemas import table_path, write_table

PARTS_DIR = "_parts/embeddings"


class ClipEncoder(Protocol):
    """What the embed stage needs from an encoder."""

    encoder_id: str  # names the encoder and every parameter its vectors depend on
    dim: int
    num_frames: int
    frame_size: tuple[int, int]  # (height, width) frames are decoded at

    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        """``(B, T, H, W, 3)`` uint8 RGB -> ``(B, dim)`` float32, L2-normalised."""
        ...


def decode_frames(path: str | Path, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """``num_frames`` frames at the centres of equal time bins, decoded with decord at ``size`` (h, w): (T,H,W,3)."""
    try:
        import decord
    except ImportError as e:  # pragma: no cover - decord is a core dependency
        raise ToolMissing("decord is not installed: pip install decord") from e
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: clip file not found")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=size[1], height=size[0], num_threads=1)
        n = len(vr)
        if n == 0:
            raise DecodeError(f"{path}: no frames")
        idx = np.minimum(((np.arange(num_frames) + 0.5) * n / num_frames).astype(np.int64), n - 1)
        return vr.get_batch(idx.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError) as e:  # decord raises RuntimeError when it cannot open a file
        raise DecodeError(f"{path}: decord cannot decode: {e}", detail=str(e)) from e


class StatsEncoder:
    """The default encoder: frame statistics (layout, motion, texture, colour), random-projected. See module doc."""

    WEIGHTS: ClassVar[dict[str, float]] = {"luma": 1.0, "motion": 0.5, "texture": 0.5, "chroma": 0.25}

    def __init__(self, dim: int = 256, seed: int = 0, num_frames: int = 8, decode_size: int = 64) -> None:
        self.dim, self.seed, self.num_frames = dim, seed, num_frames
        self.frame_size = (decode_size, decode_size)
        self.encoder_id = f"stats-v1-d{dim}-f{num_frames}-s{decode_size}-seed{seed}"
        n_in = num_frames * 256 + (num_frames - 1) * 256 + 4 * 4 * 8 + 8 * 8 * 2
        rng = np.random.default_rng(seed)
        self._proj = (rng.standard_normal((n_in, dim)) / np.sqrt(dim)).astype(np.float32)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """The weighted, concatenated feature blocks of one clip (before projection)."""
        import cv2

        f = frames.astype(np.float32)
        y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
        cb = (f[..., 2] - y) * 0.564
        cr = (f[..., 0] - y) * 0.713
        ys = (y - y.mean(axis=(1, 2), keepdims=True)) / (y.std(axis=(1, 2), keepdims=True) + 1e-3)
        thumbs = np.stack([cv2.resize(fr, (16, 16), interpolation=cv2.INTER_AREA) for fr in ys])
        thumbs = (thumbs - thumbs.mean(axis=(1, 2), keepdims=True)) / (thumbs.std(axis=(1, 2), keepdims=True) + 1e-3)
        motion = np.diff(thumbs, axis=0)
        texture = np.zeros((4, 4, 8), dtype=np.float32)
        h, w = ys.shape[1:]
        for fr in ys:
            gx = cv2.Sobel(fr, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(fr, cv2.CV_32F, 0, 1, ksize=3)
            mag = np.sqrt(gx * gx + gy * gy)
            ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 8
            b = np.minimum(ang.astype(np.int64), 7)
            ci = np.minimum(np.arange(h) * 4 // h, 3)[:, None] * 4 + np.minimum(np.arange(w) * 4 // w, 3)[None, :]
            np.add.at(texture.reshape(16, 8), (np.broadcast_to(ci, b.shape), b), mag)
        texture = np.sqrt(texture.reshape(-1))
        texture -= texture.mean()
        chroma = np.stack(
            [cv2.resize(c.mean(axis=0), (8, 8), interpolation=cv2.INTER_AREA) for c in (cb, cr)]
        ).reshape(-1)
        blocks = {"luma": thumbs, "motion": motion, "texture": texture, "chroma": chroma / 128.0}
        parts = []
        for name, block in blocks.items():
            v = block.reshape(-1).astype(np.float32)
            norm = float(np.linalg.norm(v))
            # chroma keeps its magnitude (a grey clip is far from a red one); the others are unit-normalised.
            scale = 1.0 if name == "chroma" else 1.0 / (norm + 1e-6)
            parts.append(v * scale * np.sqrt(self.WEIGHTS[name]))
        return np.concatenate(parts)

    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        feats = np.stack([self.features(c) for c in clips])
        out = feats @ self._proj
        return (out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


class CheckpointEncoder:
    """An encoder from a trainer checkpoint ``{"model": state_dict, "config": {...}}``; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        import torch

        path = Path(path)
        if not path.exists():
            raise MissingInput(f"{path}: checkpoint not found")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
            raise MissingInput(f"{path}: not a trainer checkpoint (expected a dict with 'model' and 'config')")
        cfg = dict(ckpt["config"])
        builder = cfg.get("builder")
        if not isinstance(builder, str) or ":" not in builder:
            raise MissingInput(f"{path}: config.builder must be 'package.module:callable', got {builder!r}")
        mod_name, fn_name = builder.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise MissingInput(f"{path}: config.builder {builder!r} cannot be imported: {e}") from e
        self.model = factory(**cfg.get("kwargs", {}))
        self.model.load_state_dict(ckpt["model"])
        self.model.eval()
        self.num_frames = int(cfg.get("num_frames", 8))
        size = int(cfg.get("image_size", 224))
        self.frame_size = (size, size)
        self._mean = torch.tensor(cfg.get("mean", [0.485, 0.456, 0.406]), dtype=torch.float32).view(1, 3, 1, 1, 1)
        self._std = torch.tensor(cfg.get("std", [0.229, 0.224, 0.225]), dtype=torch.float32).view(1, 3, 1, 1, 1)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.encoder_id = f"ckpt-{path.stem}-{digest}"
        with torch.no_grad():
            probe = self._forward(torch.zeros(1, 3, self.num_frames, size, size))
        self.dim = int(probe.shape[-1])

    def _forward(self, x):
        out = self.model.embed(x) if hasattr(self.model, "embed") else self.model(x)
        if out.ndim == 3:
            out = out.mean(dim=1)
        if out.ndim != 2:
            raise ValueError(f"{self.encoder_id}: model output has shape {tuple(out.shape)}; expected (B, D)")
        return out

    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(clips)).float().div_(255.0).permute(0, 4, 1, 2, 3)
        x = (x - self._mean) / self._std
        with torch.no_grad():
            out = torch.nn.functional.normalize(self._forward(x), dim=1)
        return out.numpy().astype(np.float32)


_ENCODERS: dict[str, ClipEncoder] = {}  # per process: a worker loads each encoder once


def load_encoder(spec: str = "default") -> ClipEncoder:
    """``"default"`` (or ``"stats"``) -> :class:`StatsEncoder`; a path -> :class:`CheckpointEncoder`."""
    if spec in ("default", "stats"):
        return StatsEncoder()
    return CheckpointEncoder(spec)


def _parts_dir(build_dir: Path, encoder_id: str) -> Path:
    return build_dir / "tables" / PARTS_DIR / hashlib.sha1(encoder_id.encode()).hexdigest()[:10]


class EmbedStage(Stage):
    """Per-video unit for the executors: the clips of one video in (``{"video_id", "clips": [{"clip_id",
    "path"}, ...]}``), their vectors out into part files of ``tables/_parts/embeddings/<encoder>/`` (one file per
    ``flush_every`` clips, so an interrupted unit keeps what it finished). Output rows are ``{"clip_id"}`` of the
    embedded clips; a unit with a decode failure is not marked done, so the failed clips are retried next run.
    """

    name: ClassVar[str] = "embed"
    requires: ClassVar[tuple[str, ...]] = ("video_id", "clips")

    def __init__(
        self, build_dir: str | Path, encoder: str = "default", *, batch_size: int = 32, flush_every: int = 1024
    ) -> None:
        self.build_dir = str(build_dir)
        self.encoder_spec = encoder
        self.batch_size = max(1, batch_size)
        self.flush_every = max(1, flush_every)
        self._encoder: ClipEncoder | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_encoder": None}  # workers load the encoder themselves, once per process

    def setup(self) -> None:
        try:
            import cv2  # noqa: F401
            import decord  # noqa: F401
        except ImportError as e:
            raise ToolMissing(f"embed needs decord and opencv-python-headless: {e}") from e
        if self.encoder_spec not in _ENCODERS:
            _ENCODERS[self.encoder_spec] = load_encoder(self.encoder_spec)
        self._encoder = _ENCODERS[self.encoder_spec]

    @property
    def encoder(self) -> ClipEncoder:
        if self._encoder is None:
            self.setup()
        return self._encoder

    def unit_id(self, row: dict) -> str:
        return row["video_id"]

    def fingerprint(self, row: dict) -> str:
        clips = [(c["clip_id"], c.get("sha256") or c["path"]) for c in row["clips"]]
        return stable_hash(self.encoder.encoder_id, clips, self.flush_every)

    def cost(self, row: dict) -> float:
        return float(len(row["clips"]))

    def process(self, row: dict) -> UnitResult:
        enc = self.encoder
        parts = _parts_dir(Path(self.build_dir), enc.encoder_id)
        clips = row["clips"]
        out = UnitResult()
        for i in range(0, len(clips), self.flush_every):
            ids: list[str] = []
            vecs: list[np.ndarray] = []
            chunk = clips[i : i + self.flush_every]
            for j in range(0, len(chunk), self.batch_size):
                got, v, errors = self._encode(chunk[j : j + self.batch_size], row["video_id"])
                ids += got
                vecs += [v] if got else []
                out.errors += errors
            if ids:
                # named by its first clip: a resumed unit (the clips not yet embedded) never overwrites a part
                path = parts / f"part-{hashlib.sha1(ids[0].encode()).hexdigest()[:16]}.parquet"
                write_table(embeddings_table(ids, enc.encoder_id, np.concatenate(vecs)), path)
                out.files.append(path.relative_to(self.build_dir).as_posix())
                out.rows += [{"clip_id": c} for c in ids]
        out.cacheable = not out.errors
        return out

    def _encode(self, rows: Sequence[dict], video: str | None = None) -> tuple[list[str], np.ndarray, list[ErrorRow]]:
        """Decode and encode a batch: (embedded clip ids, their ``(n, dim)`` vectors, error rows)."""
        enc = self.encoder
        ok, clips, errors = [], [], []
        for row in rows:
            try:
                clips.append(decode_frames(Path(self.build_dir) / row["path"], enc.num_frames, enc.frame_size))
                ok.append(row["clip_id"])
            except SurgcorpusError as e:
                err = ErrorRow.from_exception(self.name, e, video_id=row.get("video_id", video), uri=row["path"])
                errors.append(ErrorRow(**{**err.to_dict(), "clip_id": row["clip_id"]}))
        vecs = enc.encode_batch(np.stack(clips)) if ok else np.zeros((0, enc.dim), dtype=np.float32)
        return ok, vecs, errors

    def process_batch(self, rows: Sequence[dict]) -> UnitResult:
        """Embed clip rows (``clip_id``, ``path``) in memory: ``embeddings`` rows with their vectors, and errors."""
        ok, vecs, errors = self._encode(rows)
        enc = self.encoder
        out = [
            {"clip_id": c, "encoder": enc.encoder_id, "dim": enc.dim, "vector": v.tolist()}
            for c, v in zip(ok, vecs, strict=True)
        ]
        return UnitResult(rows=out, errors=errors)


@dataclass
class EmbedSummary:
    encoder: str
    n_clips: int
    n_skipped: int
    n_embedded: int
    n_errors: int
    seconds: float


def _done_ids(build_dir: Path, encoder_id: str) -> set[str]:
    done: set[str] = set()
    main = table_path(build_dir, "embeddings")
    files = ([main] if main.exists() else []) + sorted(_parts_dir(build_dir, encoder_id).glob("*.parquet"))
    for f in files:
        t = pq.read_table(f, columns=["clip_id", "encoder"])
        done.update(t.filter(pc.equal(t["encoder"], encoder_id))["clip_id"].to_pylist())
    return done


def _consolidate(build_dir: Path, encoder_id: str) -> int:
    """Merge an encoder's part files into ``tables/embeddings.parquet`` (atomic), then delete them."""
    parts = sorted(_parts_dir(build_dir, encoder_id).glob("*.parquet"))
    main = table_path(build_dir, "embeddings")
    tables = ([pq.read_table(main)] if main.exists() else []) + [pq.read_table(p) for p in parts]
    if not parts:
        return pq.read_metadata(main).num_rows if main.exists() else 0
    merged = pa.concat_tables([t.cast(EMBEDDINGS) for t in tables]).sort_by(
        [("clip_id", "ascending"), ("encoder", "ascending")]
    )
    write_table(merged, main)
    for p in parts:
        p.unlink()
    return merged.num_rows


def _drop_stale_markers(folder: Path) -> None:
    """Remove the unit markers whose part files were merged into the table (they would point at nothing)."""
    for marker in folder.glob("*.json"):
        try:
            files = json.loads(marker.read_text()).get("files", {})
        except json.JSONDecodeError:  # a torn marker is never valid
            marker.unlink(missing_ok=True)
            continue
        if any(not (folder.parents[1] / rel).exists() for rel in files):
            marker.unlink(missing_ok=True)


def _units(clips: list[dict]) -> list[dict]:
    """Clip rows grouped into one unit per video (clips in clip-id order)."""
    by_video: dict[str, list[dict]] = {}
    for c in clips:
        by_video.setdefault(c["video_id"] or c["clip_id"].rsplit("/", 1)[0], []).append(
            {"clip_id": c["clip_id"], "path": c["path"]}
        )
    return [{"video_id": v, "clips": cs} for v, cs in by_video.items()]


@writes_build_dir("embed")
def embed_build(
    build_dir: str | Path,
    encoder: str = "default",
    *,
    batch_size: int = 32,
    flush_every: int = 1024,
    workers: int = 1,
    limit: int | None = None,
    executor: Executor | None = None,
    show_progress: bool = True,
) -> EmbedSummary:
    """Embed every clip of ``tables/clips.parquet`` not yet embedded by this encoder; see the module docstring.

    Runs one unit per video on ``executor`` (default: a :class:`LocalExecutor` with ``workers`` processes; pass
    the build's executor to share its pool). Each unit writes a part file every ``flush_every`` clips (an
    interruption loses at most that much work per running unit); the parts are merged into
    ``tables/embeddings.parquet`` at the end, after which the ``_state/embed`` markers pointing at them are dropped
    (the table and the parts, not the markers, say what is embedded).
    """
    from builders.executors.local import LocalExecutor

    t0 = time.perf_counter()
    build_dir = Path(build_dir).resolve()
    clips_path = table_path(build_dir, "clips")
    if not clips_path.exists():
        raise MissingInput(f"{clips_path}: no clips table; build the corpus first")
    stage = EmbedStage(build_dir, encoder, batch_size=batch_size, flush_every=flush_every)
    stage.setup()
    enc_id = stage.encoder.encoder_id
    clips = pq.read_table(clips_path, columns=["clip_id", "video_id", "path"]).sort_by("clip_id").to_pylist()
    done = _done_ids(build_dir, enc_id)
    todo = [r for r in clips if r["clip_id"] not in done]
    n_skipped = len(clips) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    units = _units(todo)
    own = executor is None
    executor = executor or LocalExecutor(workers, show_progress=show_progress)
    try:
        out = executor.run(str(build_dir), stage, units)
    finally:
        if own:
            executor.close()
    _consolidate(build_dir, enc_id)
    _drop_stale_markers(build_dir / STATE_DIR / stage.name)
    _record_errors(build_dir, [r["clip_id"] for r in todo], out.errors)
    return EmbedSummary(enc_id, len(clips), n_skipped, len(out.rows), len(out.errors), time.perf_counter() - t0)


def _record_errors(build_dir: Path, attempted: list[str], errors: list[ErrorRow]) -> None:
    """Replace the embed errors of the attempted clips in ``tables/errors.parquet`` by this run's."""
    attempted_set = set(attempted)
    BuildDir(build_dir).replace_errors(["embed"], errors, only=lambda r: r.get("clip_id") in attempted_set)
