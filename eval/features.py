"""Frozen clip features for evaluation, cached per clip and view.

The encoder is ``"default"`` (the embed stage's CPU :class:`~builders.stages.embed.StatsEncoder`) or a trainer
checkpoint (any file following the embed ``--encoder`` contract, which ``trainers/`` checkpoints do); it runs in
eval mode, so drop-path is off and a view's feature is a function of the view: it is computed once.

Cache layout: ``<cache>/<encoder id>/part-*.parquet`` with columns ``clip`` (the caller's key, e.g. the published
clip path), ``fingerprint`` (the clip file's sha256, so a re-cut clip is re-encoded), ``view`` (``t{k}s{j}``, see
:mod:`eval.views`) and ``vector`` (``list<float32>``). Each batch of clips is a new part file written under a
temp name and renamed, so an interrupted extraction keeps what it finished. A clip that cannot be decoded is
reported back (never silently dropped) and retried by the next call.

Example::

    cache = FeatureCache("build/eval/features", load_feature_encoder("runs/mae/last.pt"))
    feats, failed = cache.features([("cholec80/x.mp4", "build/surgrec/cholec80/clips/cholec80/x.mp4", None)])
    feats["cholec80/x.mp4"]  # (15, D) float32, one row per view in ViewSpec.names() order
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from builders.stages.cas import sha256_file
from builders.stages.embed import ClipEncoder, load_encoder
from corpus.atomic import temp_sibling
from corpus.errors import SurgcorpusError
from corpus.progress import stage_progress
from eval.views import SURGREC_VIEWS, ViewSpec, clip_views

FEATURES = pa.schema(
    [("clip", pa.string()), ("fingerprint", pa.string()), ("view", pa.string()), ("vector", pa.list_(pa.float32()))]
)


class TrainerEncoder:
    """The video encoder of a ``trainers/`` checkpoint (``trainers.checkpoint.load_encoder``), eval mode:
    ``encode_batch`` normalises RGB with the checkpoint's mean/std and returns the mean over all tokens (not
    L2-normalised: the probe's LayerNorm comes next, as in SurgRec's head)."""

    def __init__(self, path: str | Path, loaded: tuple | None = None) -> None:
        """``loaded``: ``(encoder, config)`` already loaded from ``path`` (so a caller holding the model reuses it)."""
        import torch

        from trainers.checkpoint import load_encoder as trainer_encoder

        path = Path(path)
        self.model, cfg = loaded or trainer_encoder(path)
        self.num_frames = int(cfg["num_frames"])
        self.frame_size = (int(cfg["image_size"]), int(cfg["image_size"]))
        self._mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1, 1)
        self._std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.encoder_id = f"ckpt-{cfg.get('recipe', 'model')}-{path.stem}-{sha256_file(path)[0][:12]}"
        self.dim = int(self.encode_batch(np.zeros((1, self.num_frames, *self.frame_size, 3), np.uint8)).shape[1])

    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(clips)).float().div_(255.0).permute(0, 4, 1, 2, 3)
        with torch.no_grad():
            return self.model.embed((x - self._mean) / self._std).float().numpy()


def load_feature_encoder(spec: str = "default") -> ClipEncoder:
    """``"default"`` -> the CPU stats encoder; a ``trainers/`` checkpoint (its config names a recipe) ->
    :class:`TrainerEncoder`; any other file following the embed ``--encoder`` contract -> the embed stage's
    checkpoint encoder. ``encode_batch`` maps ``(B, T, H, W, 3)`` uint8 to ``(B, D)``."""
    if spec in ("default", "stats"):
        return load_encoder(spec)
    from trainers.checkpoint import read_checkpoint

    if "recipe" in read_checkpoint(spec)["config"]:
        return TrainerEncoder(spec)
    return load_encoder(spec)


class FeatureCache:
    """Per clip and view features of one encoder, cached on disk (see the module docstring)."""

    def __init__(
        self, root: str | Path, encoder: ClipEncoder, views: ViewSpec = SURGREC_VIEWS, batch_clips: int = 64
    ) -> None:
        self.encoder, self.views, self.batch_clips = encoder, views, batch_clips
        vid = f"{encoder.encoder_id}-v{views.temporal}x{views.spatial}s{views.stride}"
        self.dir = Path(root) / vid
        self.dir.mkdir(parents=True, exist_ok=True)

    def _load(self, keys: list[str]) -> dict[tuple[str, str], np.ndarray]:
        """(clip, fingerprint) -> ``(V, D)`` for every fully cached clip among ``keys`` (only their rows are read)."""
        got: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for part in sorted(self.dir.glob("part-*.parquet")):
            t = pq.read_table(part, filters=[("clip", "in", keys)]) if keys else FEATURES.empty_table()
            vecs = t["vector"].combine_chunks()
            dim = len(vecs[0]) if len(vecs) else 0
            flat = vecs.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if dim else np.zeros((0, 0))
            for i, (c, f, v) in enumerate(
                zip(t["clip"].to_pylist(), t["fingerprint"].to_pylist(), t["view"].to_pylist(), strict=True)
            ):
                got.setdefault((c, f), {})[v] = flat[i]
        names = self.views.names()
        return {k: np.stack([d[n] for n in names]) for k, d in got.items() if all(n in d for n in names)}

    def _write(self, rows: list[tuple[str, str, str, np.ndarray]]) -> None:
        if not rows:
            return
        table = pa.table(
            {
                "clip": [r[0] for r in rows],
                "fingerprint": [r[1] for r in rows],
                "view": [r[2] for r in rows],
                "vector": pa.array([r[3].astype(np.float32) for r in rows], type=pa.list_(pa.float32())),
            },
            schema=FEATURES,
        )
        name = hashlib.sha1("".join(f"{r[0]}|{r[1]}|{r[2]}" for r in rows).encode()).hexdigest()[:16]
        final = self.dir / f"part-{name}.parquet"
        tmp = temp_sibling(final)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def features(
        self, clips: list[tuple[str, str | Path, str | None]], show_progress: bool = False
    ) -> tuple[dict[str, np.ndarray], list[dict]]:
        """``clips``: ``(key, file, sha256 or None)``. Returns key -> ``(V, D)`` features and the failed clips
        (``{"clip", "file", "error"}``)."""
        prints = {key: fp or sha256_file(path)[0] for key, path, fp in clips}
        cached = self._load([key for key, _, _ in clips])
        out = {key: cached[(key, prints[key])] for key, _, _ in clips if (key, prints[key]) in cached}
        todo = [(k, Path(p)) for k, p, _ in clips if k not in out]
        failed: list[dict] = []
        names = self.views.names()
        enc = self.encoder
        with stage_progress("features", len(clips), len(clips) - len(todo), enabled=show_progress) as advance:
            for i in range(0, len(todo), self.batch_clips):
                rows: list[tuple[str, str, str, np.ndarray]] = []
                for key, path in todo[i : i + self.batch_clips]:
                    try:
                        views = clip_views(path, enc.num_frames, enc.frame_size, self.views)
                    except SurgcorpusError as exc:
                        failed.append({"clip": key, "file": str(path), "error": str(exc)})
                        advance(1)
                        continue
                    vecs = enc.encode_batch(np.stack([views[n] for n in names]))
                    out[key] = vecs
                    rows += [(key, prints[key], n, v) for n, v in zip(names, vecs, strict=True)]
                    advance(1)
                self._write(rows)
        return out, failed
