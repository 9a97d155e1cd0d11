"""A static HTML report of a build dir: summary, composition plots, duplicate clusters, errors, per-source table.

Reads only the build dir's Parquet tables (through :func:`corpus.schemas.read_rows`) and ``build.lock``; any table
may be missing or empty, and each section then says so. Writes::

    <build>/report/index.html        the page (plain HTML, small inline CSS, every value escaped)
    <build>/report/img/plot-*.png    matplotlib figures (Agg), referenced relatively
    <build>/report/img/thumb-*.jpg   one thumbnail per duplicate-cluster member (ffmpeg)

so the page works offline and when its folder is copied elsewhere.

>>> write_report("build/surgrec")  # doctest: +SKIP
PosixPath('build/surgrec/report/index.html')
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from corpus.atomic import temp_sibling
from corpus.figures import build_figures
from corpus.ids import sample_key
from corpus.schemas import read_rows, table_path

logger = logging.getLogger(__name__)

TABLES = ("sources", "videos", "clips", "dedup", "errors", "shards")
SPLIT_ORDER = ("train", "val", "test")
SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
OTHER_COLOR = "#8c8c8c"
NO_SPLIT = "unsplit"
NO_SOURCE = "(no video)"
THUMB_WIDTH = 160
FFMPEG_TIMEOUT_S = 60
MAX_RESOLUTIONS = 20
MSG_CLASS = ' class="msg"'
_FFMPEG_POINTER = re.compile(r" @ 0x[0-9a-fA-F]+")

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; } .empty { color: #777; font-style: italic; }
.cluster { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 0.8em; margin: 0.8em 0; }
.members { display: flex; flex-wrap: wrap; gap: 0.8em; }
.member { width: 170px; font-size: 0.8em; word-break: break-all; }
.member.rep { font-weight: bold; }
.thumb { width: 160px; min-height: 60px; background: #eee; display: flex; align-items: center;
         justify-content: center; color: #777; font-size: 0.85em; text-align: center; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
td.msg { white-space: pre-wrap; word-break: break-word; max-width: 600px; }
"""


def write_report(build_dir: str | Path, out: str | Path | None = None, *, max_clusters: int = 200) -> Path:
    """Write the HTML report of ``build_dir`` and return its path.

    ``out`` defaults to ``<build>/report/index.html``; images go to ``img/`` beside it. At most ``max_clusters``
    duplicate clusters get a block with thumbnails (the page says how many more there are).
    """
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise FileNotFoundError(f"{build_dir}: build dir does not exist")
    out = Path(out) if out is not None else build_dir / "report" / "index.html"
    img_dir = out.parent / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    _clear_generated(img_dir)

    data = _BuildData.load(build_dir)
    name = corpus_name(build_dir)
    sections = [
        _summary_section(data),
        _composition_section(data, img_dir),
        _histogram_section(data, img_dir),
        _timing_section(data),
        _dedup_section(data, img_dir, max_clusters),
        _errors_section(data),
        _per_source_section(data),
    ]
    page = _page(name, build_dir, data, sections)
    _write_bytes(out, page.encode("utf-8"))
    logger.info("report of %s written to %s", build_dir, out)
    return out


def corpus_name(build_dir: Path) -> str:
    """``manifest_name`` from ``build.lock`` when present and readable, else the build folder's name."""
    lock = build_dir / "build.lock"
    try:
        name = json.loads(lock.read_text()).get("manifest_name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name) if name else build_dir.resolve().name


# --- data -------------------------------------------------------------------------------------------------------


@dataclass
class _BuildData:
    build_dir: Path
    present: dict[str, bool]
    sources: list[dict]
    videos: list[dict]
    clips: list[dict]
    dedup: list[dict]
    errors: list[dict]
    shards: list[dict]

    @classmethod
    def load(cls, build_dir: Path) -> _BuildData:
        present = {name: table_path(build_dir, name).exists() for name in TABLES}
        return cls(build_dir, present, **{name: read_rows(build_dir, name) for name in TABLES})

    def __post_init__(self) -> None:
        self.video_source = {v["video_id"]: v.get("source") for v in self.videos if v.get("video_id")}

    def rows(self, name: str) -> list[dict]:
        return getattr(self, name)

    @property
    def empty(self) -> bool:
        return not any(self.rows(t) for t in TABLES)

    def missing(self, name: str) -> str:
        """The sentence a section shows when ``name`` has no rows."""
        state = "is empty" if self.present[name] else "has not been written yet"
        return f'<p class="empty">The {_e(name)} table {state}: nothing to show.</p>'

    def source_of(self, video_id: str | None) -> str:
        """A video's source: from the videos table, else the prefix of its id (``<source>/<native id>``)."""
        if not video_id:
            return NO_SOURCE
        return self.video_source.get(video_id) or video_id.split("/", 1)[0]

    def domain_of_source(self) -> dict[str, str]:
        dom = {s["source"]: s.get("domain") for s in self.sources if s.get("source")}
        for v in self.videos:
            if v.get("source") and not dom.get(v["source"]):
                dom[v["source"]] = v.get("domain")
        return {k: v or "unknown" for k, v in dom.items()}

    def all_sources(self) -> list[str]:
        names = {s["source"] for s in self.sources if s.get("source")}
        names |= {v["source"] for v in self.videos if v.get("source")}
        names |= {c["source"] for c in self.clips if c.get("source")}
        names |= {self.source_of(e.get("video_id")) for e in self.errors}
        names |= {self.source_of(d.get("video_id")) for d in self.duplicates()}
        return sorted(names)

    def duplicates(self) -> list[dict]:
        """Dedup rows that are duplicates of another member (not representatives)."""
        return [d for d in self.dedup if not d.get("is_representative") and d.get("kind") in ("exact", "near")]

    def source_frames(self) -> int:
        return sum(_video_frames(v) for v in self.videos)


def _video_frames(v: dict) -> int:
    n = v.get("n_frames")
    if n is None:
        n = v.get("n_frames_decoded")
    return int(n or 0)


def _hours(rows: Iterable[dict]) -> float:
    return sum(r.get("duration_s") or 0.0 for r in rows) / 3600.0


def _split(row: dict) -> str:
    return row.get("split") or NO_SPLIT


def _ordered_splits(splits: Iterable[str]) -> list[str]:
    present = set(splits)
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


# --- sections ---------------------------------------------------------------------------------------------------


def _summary_section(data: _BuildData) -> str:
    if data.empty:
        return (
            f'<h2>Summary</h2><p class="empty">Nothing built yet: no tables under {_e(data.build_dir / "tables")}.</p>'
        )
    clips_per_split = Counter(_split(c) for c in data.clips)
    figures = build_figures(data.build_dir)  # the same definitions as the build summary and `status`
    shards = {s["shard"] for s in data.shards if s.get("shard")}
    rows = [
        ("sources", _num(len(data.all_sources()))),
        ("videos", _num(len(data.videos))),
        ("hours of video", f"{_hours(data.videos):,.2f}"),
        ("source frames", _num(data.source_frames())),
        ("clips", _num(len(data.clips))),
    ]
    rows += [(f"clips in {s}", _num(clips_per_split[s])) for s in _ordered_splits(clips_per_split)]
    rows += [
        ("shards", _num(len(shards))),
        ("errors", _num(len(data.errors))),
        ("duplicate videos", _num(figures["duplicate_videos"])),
        ("duplicate clips (left out of the shards)", _num(figures["duplicate_clips"])),
    ]
    body = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in rows)
    return f"<h2>Summary</h2><table>{body}</table>"


def _composition_section(data: _BuildData, img_dir: Path) -> str:
    parts = ["<h2>Composition</h2>"]
    if data.videos:
        domains = data.domain_of_source()
        by_source = _stack(data.videos, key=lambda v: v.get("source") or "unknown")
        by_domain = _stack(data.videos, key=lambda v: v.get("domain") or domains.get(v.get("source"), "unknown"))
        for label, stack in (("source", by_source), ("domain", by_domain)):
            png = _plot_stacked(stack, img_dir / f"plot-composition-{label}.png", label)
            parts.append(_img(png, f"videos and hours by {label}, stacked by split"))
    else:
        parts.append(data.missing("videos"))
    if data.clips:
        per_split = Counter(_split(c) for c in data.clips)
        png = _plot_bars(
            {s: per_split[s] for s in _ordered_splits(per_split)},
            img_dir / "plot-clips-per-split.png",
            title="clips per split",
            colors=True,
        )
        parts.append(_img(png, "clips per split"))
    else:
        parts.append(data.missing("clips"))
    return "".join(parts)


def _histogram_section(data: _BuildData, img_dir: Path) -> str:
    parts = ["<h2>Durations and resolutions</h2>"]
    if not data.videos:
        return parts[0] + data.missing("videos")
    durations = [v["duration_s"] for v in data.videos if v.get("duration_s") is not None]
    sized = [v for v in data.videos if v.get("width") is not None and v.get("height") is not None]
    resolutions = Counter(f"{v['width']}x{v['height']}" for v in sized)
    if durations:
        png = _plot_hist(durations, img_dir / "plot-duration.png")
        parts.append(_img(png, "histogram of video durations (s)"))
    else:
        parts.append('<p class="empty">No video has a probed duration yet.</p>')
    if resolutions:
        top = resolutions.most_common(MAX_RESOLUTIONS)
        counts = dict(top)
        if len(resolutions) > MAX_RESOLUTIONS:
            counts["other"] = sum(resolutions.values()) - sum(counts.values())
        png = _plot_bars(counts, img_dir / "plot-resolution.png", title="videos per resolution (width x height)")
        parts.append(_img(png, "videos per resolution"))
    else:
        parts.append('<p class="empty">No video has a probed resolution yet.</p>')
    return "".join(parts)


def _timing_section(data: _BuildData) -> str:
    """Largest timestamp error per clip (``clips.max_timestamp_error_s``), per source, in ms and source frames."""
    parts = ["<h2>Clip timing</h2>"]
    fps = {v["video_id"]: v.get("fps") for v in data.videos}
    per_source: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for c in data.clips:
        if c.get("max_timestamp_error_s") is not None:
            src_fps = fps.get(c["video_id"])
            frames = c["max_timestamp_error_s"] * src_fps if src_fps else None
            per_source[c.get("source") or data.source_of(c["video_id"])].append((c["max_timestamp_error_s"], frames))
    if not per_source:
        return parts[0] + '<p class="empty">No clip records a timestamp error.</p>'
    parts.append(
        "<p>For each clip, the largest distance between an output frame's time and the time of the source frame it "
        "shows (<code>clips.timing: fast</code> takes the nearest frame of a cheaper decode; <code>exact</code> the "
        "nearest source frame).</p>"
    )
    rows = []
    for src, errs in sorted(per_source.items()):
        ms = sorted(1000 * e for e, _ in errs)
        frames = sorted(f for _, f in errs if f is not None)
        rows.append(
            [src, _num(len(errs))]
            + [_fmt(_at(ms, q)) for q in (0.5, 0.9, 1.0)]
            + [_fmt(_at(frames, q)) for q in (0.5, 0.9, 1.0)]
        )
    header = ["source", "clips", "median ms", "p90 ms", "max ms", "median frames", "p90 frames", "max frames"]
    parts.append(_table(header, rows))
    return "".join(parts)


def _at(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of an ascending list."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _dedup_section(data: _BuildData, img_dir: Path, max_clusters: int) -> str:
    parts = ["<h2>Duplicate clusters</h2>"]
    if not data.dedup:
        return parts[0] + data.missing("dedup")
    clusters: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in data.dedup:
        clusters[(row.get("level") or "", row.get("cluster_id") or "")].append(row)
    multi = {k: rows for k, rows in sorted(clusters.items()) if len(rows) > 1}
    if not multi:
        parts.append(f'<p class="empty">No duplicates among {_num(len(data.dedup))} deduplicated items.</p>')
        return "".join(parts)
    parts.append(f"<p>{_num(len(multi))} clusters with more than one member.</p>")
    thumbs = _Thumbnailer(data, img_dir)
    for (level, cluster_id), rows in list(multi.items())[:max_clusters]:
        rows.sort(key=lambda r: (not r.get("is_representative"), r.get("member_id") or ""))
        kinds = sorted({r["kind"] for r in rows if r.get("kind") in ("exact", "near")})
        members = "".join(_member_block(r, thumbs.thumbnail(r)) for r in rows)
        parts.append(
            '<div class="cluster">'
            f"<p><b>{_e(level)} cluster {_e(cluster_id)}</b> "
            f'<span class="muted">{_e(len(rows))} members; kind: {_e(", ".join(kinds) or "—")}</span></p>'
            f'<div class="members">{members}</div></div>'
        )
    if len(multi) > max_clusters:
        parts.append(f'<p class="muted">{_num(len(multi) - max_clusters)} more clusters not shown.</p>')
    return "".join(parts)


def _member_block(row: dict, thumb: str | Path) -> str:
    if isinstance(thumb, Path):
        pic = f'<img class="thumb" src="img/{_e(thumb.name)}" alt="{_e(row.get("member_id"))}">'
    else:
        pic = f'<div class="thumb" title="{_e(thumb)}">no thumbnail</div>'
    rep = row.get("is_representative")
    lines = [
        _e(row.get("member_id")),
        "representative" if rep else f"{_e(row.get('kind'))}, distance {_e(_fmt(row.get('distance')))}",
    ]
    if row.get("offset_s") not in (None, 0, 0.0):
        lines.append(f"offset {_e(_fmt(row.get('offset_s')))} s")
    if row.get("video_id") and row.get("video_id") != row.get("member_id"):
        lines.append(f'<span class="muted">video {_e(row["video_id"])}</span>')
    return f'<div class="member{" rep" if rep else ""}">{pic}{"<br>".join(lines)}</div>'


def _errors_section(data: _BuildData) -> str:
    parts = ["<h2>Errors</h2>"]
    if not data.errors:
        return parts[0] + data.missing("errors")
    by_stage = Counter(e.get("stage") or "—" for e in data.errors)
    by_kind = Counter(e.get("kind") or "—" for e in data.errors)
    parts.append(_table(["stage", "errors"], sorted(by_stage.items())))
    parts.append(_table(["kind", "errors"], sorted(by_kind.items())))
    cols = ("stage", "video_id", "uri", "kind", "message")
    rows = sorted(data.errors, key=lambda e: tuple(e.get(c) or "" for c in cols))
    body = "".join(
        "<tr>" + "".join(f"<td{MSG_CLASS if c == 'message' else ''}>{_e(e.get(c))}</td>" for c in cols) + "</tr>"
        for e in rows
    )
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return "".join(parts)


def _per_source_section(data: _BuildData) -> str:
    parts = ["<h2>Per source</h2>"]
    sources = data.all_sources()
    if not sources:
        return parts[0] + '<p class="empty">No source in any table yet.</p>'
    domains = data.domain_of_source()
    videos = defaultdict(list)
    for v in data.videos:
        videos[v.get("source") or "unknown"].append(v)
    clips = Counter(c.get("source") or data.source_of(c.get("video_id")) for c in data.clips)
    dups = Counter(data.source_of(d.get("video_id")) for d in data.duplicates())
    errors = Counter(data.source_of(e.get("video_id")) for e in data.errors)
    splits = _ordered_splits(_split(v) for v in data.videos)
    header = ["source", "domain", "videos", "hours", "frames", "clips"]
    header += [f"videos in {s}" for s in splits] + ["duplicates", "errors"]
    rows = []
    for src in sources:
        vs = videos.get(src, [])
        per_split = Counter(_split(v) for v in vs)
        rows.append(
            [src, domains.get(src, "—"), _num(len(vs)), f"{_hours(vs):,.2f}", _num(sum(map(_video_frames, vs)))]
            + [_num(clips[src])]
            + [_num(per_split[s]) for s in splits]
            + [_num(dups[src]), _num(errors[src])]
        )
    parts.append(_table(header, rows, text_cols=2))
    return "".join(parts)


def _page(name: str, build_dir: Path, data: _BuildData, sections: list[str]) -> str:
    tables = ", ".join(f"{t} ({len(data.rows(t))} rows)" if data.present[t] else f"{t} (absent)" for t in TABLES)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(name)} — surgcorpus build report</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(name)}</h1>"
        f'<p class="muted">Build dir {_e(build_dir)}. Tables: {_e(tables)}.</p>'
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


# --- thumbnails -------------------------------------------------------------------------------------------------


class _Thumbnailer:
    """Middle frame of a member's clip (or of its source video when it has no clip), scaled to 160 px wide."""

    def __init__(self, data: _BuildData, img_dir: Path) -> None:
        self.data = data
        self.img_dir = img_dir
        self.clips_by_id = {c["clip_id"]: c for c in data.clips if c.get("clip_id")}
        self.first_clip: dict[str, dict] = {}
        for c in sorted(data.clips, key=lambda c: (c.get("start_s") or 0.0, c.get("clip_id") or "")):
            self.first_clip.setdefault(c.get("video_id"), c)
        self.videos = {v["video_id"]: v for v in data.videos if v.get("video_id")}
        self.done: dict[tuple[str, float], Path | str] = {}

    def thumbnail(self, member: dict) -> Path | str:
        """The thumbnail's path, or a string saying why there is none."""
        try:
            src, t = self._frame_source(member)
        except LookupError as exc:
            return str(exc)
        if (str(src), t) not in self.done:
            self.done[(str(src), t)] = self._extract(src, t, member.get("member_id") or str(src))
        return self.done[(str(src), t)]

    def _frame_source(self, member: dict) -> tuple[Path, float]:
        vid = member.get("video_id")
        clip = self.clips_by_id.get(member.get("member_id")) or self.first_clip.get(vid)
        if clip is not None and clip.get("path"):
            path = self.data.build_dir / clip["path"]
            if (clip.get("format") or "").lower() in ("jpg", "jpeg") or path.is_dir():
                frames = sorted(path.glob("*.jpg")) if path.is_dir() else []
                if not frames:
                    raise LookupError(f"{path}: no .jpg frames")
                return frames[len(frames) // 2], 0.0
            start, end = clip.get("start_s"), clip.get("end_s")
            return path, (end - start) / 2 if start is not None and end is not None and end > start else 0.0
        video = self.videos.get(vid)
        if video is not None and video.get("path"):
            return Path(video["path"]), (video.get("duration_s") or 0.0) / 2
        raise LookupError(f"no clip file and no video file known for {vid}")

    def _extract(self, src: Path, t: float, name: str) -> Path | str:
        if not src.exists():
            return f"{src}: file not found"
        digest = hashlib.sha1(f"{src}|{t}".encode()).hexdigest()[:10]
        out = self.img_dir / f"thumb-{sample_key(name)[:80]}-{digest}.jpg"
        # Retry from the first frame: a clip's recorded duration can overshoot its last decodable frame.
        for seek in dict.fromkeys((round(t, 3), 0.0)):
            why = _ffmpeg_frame(src, seek, out)
            if why is None:
                return out
        logger.warning("thumbnail of %s failed: %s", src, why)
        return why


def _ffmpeg_frame(src: Path, t: float, out: Path) -> str | None:
    """Extract one frame at ``t`` seconds into ``out`` (JPEG); None on success, else the reason."""
    tmp = temp_sibling(out, ".jpg")
    kwargs = {"ss": t} if t > 0 else {}
    cmd = (
        ffmpeg.input(str(src), **kwargs)
        .output(str(tmp), vframes=1, vf=f"scale={THUMB_WIDTH}:-2", loglevel="error")
        .overwrite_output()
        .compile()
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        tmp.unlink(missing_ok=True)
        return f"{src}: ffmpeg failed: {exc}"
    if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        # Drop ffmpeg's context pointers ("[mov,mp4 @ 0x55e1...]") so the page is the same on every run.
        tail = _FFMPEG_POINTER.sub("", proc.stderr.decode(errors="replace")).strip()[-300:]
        return f"{src}: ffmpeg produced no frame at {t:.3f} s (exit {proc.returncode}) {tail}".strip()
    os.replace(tmp, out)
    return None


# --- plots ------------------------------------------------------------------------------------------------------


def _stack(rows: list[dict], key) -> dict[str, dict[str, tuple[int, float]]]:
    """{category: {split: (videos, hours)}}."""
    acc: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for r in rows:
        cell = acc[key(r)][_split(r)]
        cell[0] += 1
        cell[1] += (r.get("duration_s") or 0.0) / 3600.0
    return {cat: {s: (v[0], v[1]) for s, v in splits.items()} for cat, splits in sorted(acc.items())}


def _figure(n_bars: int, ncols: int = 1):
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas on savefig

    height = max(2.6, 0.35 * n_bars + 1.2)
    fig = Figure(figsize=(5.2 * ncols, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _plot_stacked(stack: dict[str, dict[str, tuple[int, float]]], path: Path, label: str) -> Path:
    cats = list(stack)
    splits = _ordered_splits(s for cell in stack.values() for s in cell)
    fig, axes = _figure(len(cats), ncols=2)
    for ax, idx, title in ((axes[0], 0, "videos"), (axes[1], 1, "hours")):
        left = [0.0] * len(cats)
        for split in splits:
            vals = [stack[c].get(split, (0, 0.0))[idx] for c in cats]
            ax.barh(cats, vals, left=left, label=split, color=SPLIT_COLORS.get(split, OTHER_COLOR))
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_title(f"{title} by {label}")
        ax.invert_yaxis()
    _integer_ticks(axes[0].xaxis)
    axes[0].legend(title="split", fontsize="small")
    axes[1].tick_params(labelleft=False)
    return _save(fig, path)


def _plot_bars(counts: dict[str, int], path: Path, title: str, colors: bool = False) -> Path:
    fig, (ax,) = _figure(len(counts))
    cats = list(counts)
    color = [SPLIT_COLORS.get(c, OTHER_COLOR) for c in cats] if colors else SPLIT_COLORS["train"]
    bars = ax.barh(cats, [counts[c] for c in cats], color=color)
    ax.bar_label(bars, fmt="{:,.0f}", fontsize="small", padding=2)
    ax.invert_yaxis()
    _integer_ticks(ax.xaxis)
    ax.set_title(title)
    return _save(fig, path)


def _plot_hist(values: list[float], path: Path) -> Path:
    fig, (ax,) = _figure(0)
    ax.hist(values, bins=min(30, max(5, len(values))), color=SPLIT_COLORS["train"])
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("videos")
    ax.set_title("video duration")
    _integer_ticks(ax.yaxis)
    return _save(fig, path)


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    tmp = temp_sibling(path, ".png")
    # No "Software" metadata, so the same tables give the same bytes with the same matplotlib.
    fig.savefig(tmp, format="png", metadata={"Software": None})
    os.replace(tmp, path)
    return path


# --- html helpers -----------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return "—" if value is None else html.escape(str(value))


def _num(n: int) -> str:
    return f"{n:,}"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _img(path: Path, alt: str) -> str:
    return f'<img class="plot" src="img/{_e(path.name)}" alt="{_e(alt)}">'


def _table(header: list[str], rows: Iterable[Iterable[object]], text_cols: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{_e(v)}</td>" if i < text_cols else f'<td class="num">{_e(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _clear_generated(img_dir: Path) -> None:
    """Remove images a previous run wrote (only our own ``plot-``/``thumb-`` names), so none go stale."""
    for p in img_dir.iterdir():
        if p.is_file() and p.name.startswith(("plot-", "thumb-")) and p.suffix in (".png", ".jpg"):
            p.unlink()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)
