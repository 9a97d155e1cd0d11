"""Which source frame each output frame came from, and the cheapest decode that keeps it close.

The clip filter graph carries two ``showinfo`` taps: ``showinfo@src`` on a 2x2 crop of every decoded frame (its
pts and packet position), and ``showinfo@out`` on every output frame after ``fps`` (the packet position of the
source frame it is a copy of). Joining them on the packet position gives each output frame's source timestamp, so
the timestamp error (source time against the output grid ``k / fps``) and the decoded frame count are measured in
the same pass that cuts the clips, never simulated and never read twice.

``choose_decode`` picks, for ``clips.timing: fast``, a cheaper decode from what probe knows:

- ``-lowres`` on codecs whose decoder can reduce resolution (MPEG-4 Part 2, MJPEG, MPEG-1/2, H.263) when the
  output is at most half the source's short side (every frame still decoded, so timing stays exact);
- ``-skip_frame noref`` on streams with B-frames when the source has at least 3 frames per output frame
  (non-reference frames are never needed to decode the others, so the kept frames decode bit-identically; with
  every second frame kept, each output slot still has its own source frame);
- the full decode otherwise.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

# decoders that implement AVCodecContext.lowres, and the largest factor (as a power of two) they accept
LOWRES_CODECS = {"mpeg4": 3, "mjpeg": 3, "mpeg1video": 3, "mpeg2video": 3, "h263": 3, "msmpeg4v3": 3}
MIN_SOURCE_FRAMES_PER_OUTPUT = 3.0  # below this, skipping frames would leave output slots without a near frame

_LINE = re.compile(r"^\[showinfo@(src|out) @ [^\]]+\] n:\s*\d+ pts:\s*(-?\d+) .*?pos:\s*(-?\d+)")
_TIME_BASE = re.compile(r"^\[showinfo@src @ [^\]]+\] config in time_base: (\d+)/(\d+)")


@dataclass(frozen=True)
class DecodeChoice:
    """Decoder options of one clip pass.

    ``gap_frames``: expected source frames between decoded frames (1 for a full decode); ``every_frame``: whether
    every frame is decoded (then the decoded count is exact).
    """

    name: str = "full"
    input_args: tuple[str, ...] = ()
    lowres: int = 0
    gap_frames: float = 1.0

    @property
    def every_frame(self) -> bool:
        return self.gap_frames == 1.0


FULL = DecodeChoice()


def choose_decode(row: dict, out_fps: float, out_short_side: int) -> DecodeChoice:
    """The cheapest decode for a probed video (``codec``, ``width``, ``height``, ``fps``, ``has_b_frames``)."""
    codec = row.get("codec") or ""
    short = min(int(row.get("width") or 0), int(row.get("height") or 0))
    args: list[str] = []
    names: list[str] = []
    lowres = 0
    if codec in LOWRES_CODECS and short and int(row.get("rotation") or 0) == 0:
        while lowres < LOWRES_CODECS[codec] and (short >> (lowres + 1)) >= out_short_side:
            lowres += 1
        if lowres:
            args += ["-lowres", str(lowres)]
            names.append(f"lowres{lowres}")
    gap = 1.0
    src_fps = float(row.get("fps") or 0)
    if int(row.get("has_b_frames") or 0) > 0 and src_fps >= MIN_SOURCE_FRAMES_PER_OUTPUT * out_fps:
        args = ["-skip_frame", "noref", *args]
        names.insert(0, "noref")
        gap = 2.0  # typical: a B-frame pyramid keeps its middle B as a reference (BbBP -> every second frame)
    if not args:
        return FULL
    return DecodeChoice("+".join(names), tuple(args), lowres, gap)


def grid_shift_s(out_fps: float, src_fps: float, gap_frames: float) -> float:
    """Seconds added to the source timestamps before ``fps`` so that it takes the frame nearest each output slot.

    ``fps`` (rounding ``near``) gives slot ``k`` the last frame with ``t < (k + 0.5) / out_fps``; shifting by
    ``0.5 / out_fps - gap / 2`` moves that threshold to half a decoded-frame gap past the slot.
    """
    if src_fps <= 0:
        return 0.0
    return max(0.0, 0.5 / out_fps - 0.5 * gap_frames / src_fps)


@dataclass
class Timeline:
    """What the two showinfo taps saw: decoded frames (pts, packet position) and output frames (position)."""

    time_base: Fraction = Fraction(0)
    src_pts: list[int] = field(default_factory=list)
    src_pos: list[int] = field(default_factory=list)
    out_pos: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, lines) -> Timeline:
        """Parse ffmpeg's stderr lines (``-v info``); other lines are ignored."""
        t = cls()
        for line in lines:
            if not line.startswith("[showinfo@"):
                continue
            m = _LINE.match(line)
            if m is None:
                if not t.time_base and (tb := _TIME_BASE.match(line)):
                    t.time_base = Fraction(int(tb.group(1)), int(tb.group(2)))
                continue
            if m.group(1) == "src":
                t.src_pts.append(int(m.group(2)))
                t.src_pos.append(int(m.group(3)))
            else:
                t.out_pos.append(int(m.group(3)))
        return t

    @property
    def decoded(self) -> int:
        return len(self.src_pts)

    def span_s(self) -> float:
        """Seconds from the first to the last decoded frame."""
        if not self.src_pts:
            return 0.0
        return float((max(self.src_pts) - min(self.src_pts)) * self.time_base)

    def errors_s(self, out_fps: float) -> np.ndarray:
        """Per output frame: |source time - k / out_fps| in seconds (time from the first decoded frame); NaN
        where the source frame cannot be identified (no packet positions, or one position for several frames)."""
        n = len(self.out_pos)
        out = np.full(n, np.nan)
        if not self.src_pts or not self.time_base:
            return out
        start = min(self.src_pts)
        uses = Counter(self.src_pos)  # a packet position names one decoded frame only when it is unique
        pts_at = {p: t for p, t in zip(self.src_pos, self.src_pts, strict=True) if p >= 0 and uses[p] == 1}
        for k, pos in enumerate(self.out_pos):
            if pos in pts_at:
                out[k] = abs(float((pts_at[pos] - start) * self.time_base) - k / out_fps)
        return out
