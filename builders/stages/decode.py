"""Frame access with decord for the clip stage: the resampled, resized, cropped frames of every planned clip.

decord resizes in its own decoder (its ffmpeg filter graph, no Python per frame); the crop is a numpy slice. The
output timeline is ``k / fps``; output frame ``k`` is source frame ``round(k * src_fps / fps)``, like ffmpeg's
``fps`` filter. decord trusts the container header (``len()`` may exceed the decodable frames, and reading past
the real end silently repeats the last frame), so every index is bounded by the probed, decodable frame count.

>>> plan = DecordPlan.make(n_frames=125, src_fps=25.0, spec=ClipSpec(fps=8, seconds=1))  # doctest: +SKIP
>>> plan.starts, plan.lengths  # doctest: +SKIP
([0, 8, 16, 24, 32], [8, 8, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from corpus.manifest import ClipSpec

BATCH = 32  # frames per decord get_batch call


@dataclass(frozen=True)
class Geometry:
    """decord's resize target and the slice of it that is the output frame."""

    resize_w: int
    resize_h: int
    x: int
    y: int
    w: int
    h: int


def geometry(src_w: int, src_h: int, out_w: int, out_h: int, crop=None) -> Geometry:
    """Resize so the (mask-cropped) region's short side matches the output, then take the centred output slice."""
    cx, cy, cw, ch = (0, 0, src_w, src_h) if crop is None else (crop.x, crop.y, crop.w, crop.h)
    scale = min(out_w, out_h) / min(cw, ch) if out_w == out_h else max(out_w / cw, out_h / ch)
    rw, rh = max(out_w, round(src_w * scale)), max(out_h, round(src_h * scale))
    x = round((cx + cw / 2) * scale - out_w / 2)
    y = round((cy + ch / 2) * scale - out_h / 2)
    return Geometry(rw, rh, min(max(0, x), rw - out_w), min(max(0, y), rh - out_h), out_w, out_h)


@dataclass(frozen=True)
class DecordPlan:
    """Output frames to source indices, and the clips (start, length) in output frames."""

    source_index: np.ndarray  # output frame k -> source frame
    starts: list[int]
    lengths: list[int]
    hash_every: int

    @classmethod
    def make(cls, n_frames: int, src_fps: float, spec: ClipSpec) -> DecordPlan:
        total = int(np.floor(n_frames * spec.fps / src_fps + 0.5))
        index = np.floor(np.arange(total) * src_fps / spec.fps + 0.5).astype(np.int64)
        index = index[index < n_frames]
        total = len(index)
        length, stride = spec.length_frames, spec.stride_frames
        starts = [s for s in range(0, total, stride) if s + length <= total or spec.keep_tail]
        lengths = [min(length, total - s) for s in starts]
        return cls(index, starts, lengths, max(1, length // 4))


def clip_frames(path: str, plan: DecordPlan, geo: Geometry) -> Iterator[tuple[int, np.ndarray, dict[int, np.ndarray]]]:
    """Yield ``(clip number, frames [n, h, w, 3] uint8, hash frames {output position: frame})`` in clip order.

    Each needed source frame is decoded once; overlapping clips reuse frames from a small rolling buffer.
    Raises decord's ``DECORDError``/``RuntimeError`` when decord cannot open or read the file.
    """
    import decord

    vr = decord.VideoReader(path, width=geo.resize_w, height=geo.resize_h, num_threads=1)
    total = len(plan.source_index)
    buffer: dict[int, np.ndarray] = {}
    decoded_to = 0  # output positions below this are decoded (or not needed)

    def decode_until(start: int, stop: int) -> None:
        nonlocal decoded_to
        wanted = list(range(max(decoded_to, start), stop))
        for i in range(0, len(wanted), BATCH):
            chunk = wanted[i : i + BATCH]
            frames = vr.get_batch([int(plan.source_index[k]) for k in chunk]).asnumpy()
            for k, frame in zip(chunk, frames, strict=True):
                buffer[k] = frame[geo.y : geo.y + geo.h, geo.x : geo.x + geo.w]
        decoded_to = max(decoded_to, stop)

    for number, (clip_start, n) in enumerate(zip(plan.starts, plan.lengths, strict=True)):
        decode_until(clip_start, clip_start + n)
        frames = np.stack([buffer[k] for k in range(clip_start, clip_start + n)])
        hashes = {k: buffer[k] for k in range(clip_start, clip_start + n) if k % plan.hash_every == 0}
        next_start = plan.starts[number + 1] if number + 1 < len(plan.starts) else total
        for k in [k for k in buffer if k < next_start]:
            del buffer[k]
        yield number, frames, hashes
