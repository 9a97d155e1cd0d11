"""Which source frame each output frame came from, and the cheapest decode that keeps it close.

The clip filter graph keeps, of the decoded frames, only the candidates: for each output slot ``k / fps`` the
first frame at or after the slot minus half a decoded-frame gap (``candidates_filter``: the nearest one where
frames are that dense), timed on its nearest slot (``slot_filter``) so that ``fps`` gives it that slot. Two
``showinfo`` taps print a line per candidate (``showinfo@src``: its pts and packet position, on a 2x2 crop) and
per output frame (``showinfo@out``: the packet position of the source frame it is a copy of); joining them on the
position gives each output frame's source timestamp. ffmpeg's own end-of-run statistics (``-v verbose``) give
the decoded frame count. All of it comes from the pass that cuts the clips, at a few log lines per output frame,
never simulated and never read twice.

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
_STATS = re.compile(r"Input stream #0:\d+ \(video\): (\d+) packets read .*?; (\d+) frames decoded")


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

    def every_frame_variant(self) -> DecodeChoice:
        """The fallback when this decode is rejected: its reduced resolution without skipped frames (timing then
        exact), or the full decode."""
        if self.lowres and not self.every_frame:
            return DecodeChoice(f"lowres{self.lowres}", ("-lowres", str(self.lowres)), self.lowres)
        return FULL


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


def half_gap_s(src_fps: float, gap_frames: float) -> float:
    """Half the expected time between decoded frames."""
    return 0.5 * gap_frames / src_fps if src_fps > 0 else 0.0


def candidates_filter(out_fps: float, src_fps: float, gap_frames: float) -> str:
    """A ``select`` keeping, for each output slot ``k / out_fps`` (from the first frame), the first frame at or after
    the slot minus half a decoded-frame gap: the nearest frame where frames are that dense. ``ld(0)`` holds the next
    slot without a candidate; a frame past several slots stands for all of them (``fps`` then repeats it)."""
    h, f = half_gap_s(src_fps, gap_frames), f"{out_fps:g}"
    return f"select='if(gte(t-start_t,ld(0)/{f}-{h:.9f}),st(0,floor((t-start_t+{h:.9f})*{f})+1),0)'"


def slot_filter(out_fps: float) -> str:
    """A ``setpts`` putting each candidate on its nearest output slot (time from the first frame), so that ``fps``
    gives it exactly that slot and repeats a frame over a gap. The end of the stream is rounded alike, so the
    output has as many frames as a plain ``fps`` would give."""
    f = f"{out_fps:g}"
    return f"setpts='round((T-STARTT)*{f})/({f}*TB)'"


@dataclass
class Timeline:
    """What the two showinfo taps saw, candidates (pts, packet position) and output frames (position), and ffmpeg's
    count of the packets it read and the frames it decoded (None when its statistics are missing)."""

    time_base: Fraction = Fraction(0)
    src_pts: list[int] = field(default_factory=list)
    src_pos: list[int] = field(default_factory=list)
    out_pos: list[int] = field(default_factory=list)
    packets: int | None = None
    decoded: int | None = None

    @classmethod
    def parse(cls, lines) -> Timeline:
        """Parse ffmpeg's stderr lines (``-v verbose``); other lines are ignored."""
        t = cls()
        for line in lines:
            if not line.startswith("[showinfo@"):
                if stats := _STATS.search(line):
                    t.packets, t.decoded = int(stats.group(1)), int(stats.group(2))
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

    def errors_s(self, out_fps: float) -> np.ndarray:
        """Per output frame: |source time - k / out_fps| in seconds (time from the first decoded frame); NaN
        where the source frame cannot be identified (no packet position, or one position for several candidates)."""
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
