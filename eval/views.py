"""Test-time views of a clip, as SurgRec's released evaluation takes them (``data/kinetics.py`` test mode).

Every ``stride``-th frame of the clip is kept; view ``t{k}`` starts at ``int(k * max((T' - n) / (K - 1), 0))`` of
those ``T'`` frames and takes ``n`` consecutive ones (the last frame repeated when the clip is short); each frame
is resized so that it covers the encoder's input size, and view ``s{j}`` is the crop at offset 0, the centre, or
the far end of the long side. 5 temporal x 3 spatial views = 15 views per clip, named ``t{k}s{j}``.

Training clips use the same views: features of a frozen backbone with drop-path off are a function of the view, so
they are computed once and cached (:mod:`eval.features`), and an epoch draws one cached view per clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpus.errors import DecodeError, MissingInput


@dataclass(frozen=True)
class ViewSpec:
    """How views are taken: ``temporal`` x ``spatial`` views of ``stride``-subsampled frames."""

    temporal: int = 5
    spatial: int = 3
    stride: int = 4

    def names(self) -> list[str]:
        return [f"t{k}s{j}" for k in range(self.temporal) for j in range(self.spatial)]


SURGREC_VIEWS = ViewSpec()


def temporal_indices(n_frames: int, num_frames: int, spec: ViewSpec = SURGREC_VIEWS) -> list[np.ndarray]:
    """Frame indices of each temporal view (``spec.temporal`` arrays of ``num_frames`` indices)."""
    if n_frames <= 0:
        raise ValueError("a clip without frames has no view")
    sub = np.arange(0, n_frames, spec.stride)
    step = max((len(sub) - num_frames) / max(spec.temporal - 1, 1), 0)
    out = []
    for k in range(spec.temporal):
        start = int(k * step)
        idx = sub[start : start + num_frames]
        out.append(np.concatenate([idx, np.full(num_frames - len(idx), idx[-1])]) if len(idx) < num_frames else idx)
    return out


def spatial_crops(frames: np.ndarray, size: tuple[int, int], n: int = 3) -> list[np.ndarray]:
    """``n`` crops of ``size`` (h, w) along the long side of ``(T, H, W, 3)`` frames resized to cover ``size``."""
    import cv2

    h, w = size
    fh, fw = frames.shape[1:3]
    scale = max(h / fh, w / fw)
    rh, rw = max(h, round(fh * scale)), max(w, round(fw * scale))
    resized = np.stack([cv2.resize(f, (rw, rh), interpolation=cv2.INTER_LINEAR) for f in frames])
    crops = []
    for j in range(n):
        frac = j / (n - 1) if n > 1 else 0.5
        y, x = int(round((rh - h) * frac)), int(round((rw - w) * frac))
        crops.append(resized[:, y : y + h, x : x + w])
    return crops


def clip_views(
    path: str | Path, num_frames: int, size: tuple[int, int], spec: ViewSpec = SURGREC_VIEWS
) -> dict[str, np.ndarray]:
    """Decode one clip with decord and return its views: name -> ``(num_frames, h, w, 3)`` uint8."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: clip file not found")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        n = len(vr)
        if n == 0:
            raise DecodeError(f"{path}: no frames")
        per_view = temporal_indices(n, num_frames, spec)
        wanted = np.unique(np.concatenate(per_view))
        frames = vr.get_batch(wanted.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError) as e:
        raise DecodeError(f"{path}: decord cannot decode: {e}", detail=str(e)) from e
    pos = {int(f): i for i, f in enumerate(wanted)}
    out = {}
    for k, idx in enumerate(per_view):
        for j, crop in enumerate(spatial_crops(frames[[pos[int(i)] for i in idx]], size, spec.spatial)):
            out[f"t{k}s{j}"] = crop
    return out
