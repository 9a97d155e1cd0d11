"""A simulated corpus-size build through the real driver: peak driver memory and merge times, at several sizes.

The reference corpus: 10,535 videos, 214.5M frames (25 fps, about 20,361 frames per video), about 3M clips. Nothing
is decoded; everything else is the real build (``builders.pipeline.build``): the real plan over real files, the
real ``annotate`` stage parsing generated Cholec80 phase files (native format: header ``Frame<TAB>Phase``, one
named phase per frame at 25 fps), the real executor, markers, merges, dedup, split, shards and catalog. Only the
per-video stages are simulated (``VideoStages``): subclasses of the real fetch, probe and clip stages, with the
same names and row columns, that generate their rows deterministically from the video id:

- video ``i`` (``<source>/videoNNNNN``, ``i % 8`` picks one of 8 sources in 4 domains) has ``frames_of(i)``
  frames: pairs of videos deviate by +-d from an even share of 214.5M, so the full corpus sums to exactly 214.5M;
- ``fetch`` and ``probe`` rows carry a sha256 derived from the id and the generated frame count (1920x1080, 25 fps);
- ``clip`` cuts ``clips: {fps: 7, frames: 20}`` (2.86 s clips: about 285 per video, about 3.0M in all), each clip
  with its own sha256 and four random 64-bit perceptual hashes (no near duplicates), and writes one tiny real
  H.264 file per video that every clip row of that video points to (the shards pack it once per clip).

Each size is built from scratch in a child process (``_child``) with ``--workers`` local workers; the driver's peak
RSS is the child's own ``VmHWM`` (``/proc/self/status``; workers are separate processes, not counted), also per
stage (reset through ``/proc/self/clear_refs`` at each stage's start). The table writes, reads and merges the
driver makes (``write_table``, ``StageOutput.merge`` ..., whichever of ``_timed_calls`` the driver has) are timed
by wrapping them in the child.

Inputs are generated once into ``--scratch`` (default ``/tmp/corpus_scale``; the full size needs about 5 GB of
annotation text plus the build: check ``df`` first), never into the repository; each size's sources are hard links
to the first N videos. Results: ``bench/results/corpus_scale.{json,md}``.

    .venv/bin/python bench/corpus_scale.py                     # 1/64 of the corpus (165 videos), a few minutes
    .venv/bin/python bench/corpus_scale.py --videos 165,659,2634,10535 --workers 2   # 1/64 .. full (manual, ~1 h)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from builders.pipeline import VideoStages
from builders.stages.base import UnitResult
from builders.stages.clip import CLIPS_DIR, ClipStage
from builders.stages.fetch import FetchStage
from builders.stages.probe import ProbeStage
from corpus.atomic import write_bytes_atomic
from corpus.ids import clip_id, safe_relpath
from corpus.sources.cholec80 import PHASES

REPO = Path(__file__).resolve().parents[1]
FULL_VIDEOS = 10_535
FULL_FRAMES = 214_500_000
FPS = 25.0
MAX_DEVIATION = 8_000  # frames a pair of videos deviates from an even share (about 8 to 19 minutes per video)
SOURCES = (
    ("lap-a", "laparoscopy"),
    ("lap-b", "laparoscopy"),
    ("lap-c", "laparoscopy"),
    ("endo-a", "endoscopy"),
    ("endo-b", "endoscopy"),
    ("cat-a", "cataract"),
    ("cat-b", "cataract"),
    ("rob-a", "robotic"),
)
CLIPS = {"fps": 7, "frames": 20, "size": 112}  # 20/7 s clips: about 285 per video, about 3.0M at corpus size
WIDTH, HEIGHT = 1920, 1080


# ------------------------------------------------------------------------------------------- generated facts


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def frames_of(i: int) -> int:
    """Frames of video ``i``: an even share of 214.5M, plus d for even and minus d for odd ``i`` (pairs cancel)."""
    base = (i + 1) * FULL_FRAMES // FULL_VIDEOS - i * FULL_FRAMES // FULL_VIDEOS
    pair = i // 2
    if 2 * pair + 1 >= FULL_VIDEOS:  # the last, unpaired video
        return base
    d = int.from_bytes(_digest("pair", pair)[:4], "big") % MAX_DEVIATION
    return base + d if i % 2 == 0 else base - d


def native_id(i: int) -> str:
    return f"video{i:05d}"


def index_of(video_id: str) -> int:
    """The generator's index of a video id ``<source>/videoNNNNN``."""
    return int(video_id.rsplit("/video", 1)[1])


def phase_bounds(i: int, n: int) -> np.ndarray:
    """Start frames of the 7 phases of video ``i`` (in order, each at least one frame), and ``n`` at the end."""
    rng = np.random.default_rng(int.from_bytes(_digest("phases", i)[:8], "big"))
    share = rng.dirichlet(np.full(len(PHASES), 2.0))
    cuts = np.floor(np.cumsum(share)[:-1] * n).astype(np.int64)
    cuts = np.maximum(cuts, np.arange(1, len(PHASES)))  # every phase non-empty
    return np.concatenate([[0], np.maximum.accumulate(cuts), [n]])


def phase_text(i: int, numbers: list[str]) -> str:
    """A native Cholec80 phase file (``Frame<TAB>Phase`` header, one named phase per 25 fps frame)."""
    bounds = phase_bounds(i, frames_of(i))
    out = ["Frame\tPhase\n"]
    for p, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if b > a:
            tail = f"\t{PHASES[p]}\n"
            out.append(tail.join(numbers[a:b]) + tail)
    return "".join(out)


def frame_labels_table(ids: list[int]) -> pa.Table:
    """The ``frame_labels`` rows the build's ``annotate`` stage makes from the phase files of videos ``ids`` (in
    that order), built column-wise (for a corpus-size table without a corpus-size build)."""
    from builders.stages.annotate import FRAME_LABELS_OUT

    counts = [frames_of(i) for i in ids]
    phase = np.concatenate(
        [np.repeat(np.arange(len(PHASES)), np.diff(phase_bounds(i, n))) for i, n in zip(ids, counts, strict=True)]
    )
    owner = np.repeat(np.arange(len(ids)), counts)
    frame = np.concatenate([np.arange(n) for n in counts])
    vids = [f"{SOURCES[i % len(SOURCES)][0]}/{native_id(i)}" for i in ids]

    def by(values: list[str], index: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), pa.array(values)).cast(pa.string())

    columns = {
        "video_id": by(vids, owner),
        "level": by(["phase"], np.zeros(len(frame), np.int32)),
        "frame": pa.array(frame, pa.int64()),
        "time_s": pa.array(frame / FPS),
        "label": by(list(PHASES), phase),
        "label_id": pa.array(phase.astype(np.int32)),
        "annotation_id": by([f"cholec80/{native_id(i)}" for i in ids], owner),
        "source": by([v.split("/")[0] for v in vids], owner),
    }
    return pa.table(columns, schema=FRAME_LABELS_OUT)


def write_frame_labels(n: int, dest: Path, chunk: int = 64) -> int:
    """Write the first ``n`` videos' ``frame_labels`` to ``dest`` in the driver's layout: sorted by video id, row
    groups of ``corpus.parts.ROW_GROUP_ROWS`` rows, the driver's writer (``corpus.parts.PartWriter``). Returns
    the rows."""
    from builders.stages.annotate import FRAME_LABELS_OUT
    from corpus.parts import ROW_GROUP_ROWS, PartWriter

    ids = sorted(range(n), key=lambda i: f"{SOURCES[i % len(SOURCES)][0]}/{native_id(i)}")
    carry = FRAME_LABELS_OUT.empty_table()
    with PartWriter(dest, FRAME_LABELS_OUT) as w:
        for k in range(0, n, chunk):
            t = pa.concat_tables([carry, frame_labels_table(ids[k : k + chunk])])
            whole = t.num_rows - t.num_rows % ROW_GROUP_ROWS  # whole row groups now, the rest with the next chunk
            w.write(t.slice(0, whole))
            carry = t.slice(whole)
        w.write(carry)
    return w.rows


# ----------------------------------------------------------------------------------------- simulated stages


class SimFetch(FetchStage):
    """fetch with generated rows: the listed tiny file in place, a sha256 and size derived from the id."""

    def process(self, row: dict) -> UnitResult:
        i = index_of(row["video_id"])
        out = {k: row[k] for k in ("video_id", "source", "domain", "native_id", "uri")}
        sha = _digest("video", row["video_id"], frames_of(i)).hex()
        return UnitResult(rows=[{**out, "path": row["uri"], "sha256": sha, "bytes": frames_of(i) * 6_000}])


class SimProbe(ProbeStage):
    """probe with generated facts: 1920x1080 H.264 at 25 fps, ``frames_of`` frames."""

    def setup(self) -> None:
        """Nothing to check: no ffprobe runs."""

    def process(self, row: dict) -> UnitResult:
        n = frames_of(index_of(row["video_id"]))
        facts = {
            "codec": "h264",
            "width": WIDTH,
            "height": HEIGHT,
            "fps": FPS,
            "duration_s": n / FPS,
            "rotation": 0,
            "has_audio": False,
            "has_b_frames": 2,
            "n_frames": n,
            "n_frames_header": n,
            "frames_counted": False,
        }
        return UnitResult(rows=[{"video_id": row["video_id"], **facts}])


class SimClip(ClipStage):
    """clip with generated rows: every clip the spec gives, each with its own sha256 and 4 random phashes, all
    pointing at one tiny real H.264 file per video (``clips/<video>/shared.mp4``, a copy of ``media``)."""

    def __init__(self, build_dir: str, spec, preset: str = "ultrafast", media: str = "") -> None:
        super().__init__(build_dir, spec, preset)
        self.media = media

    def setup(self) -> None:
        """Nothing to check: no ffmpeg runs."""

    def process(self, row: dict) -> UnitResult:
        spec, vid = self.spec, row["video_id"]
        i = index_of(vid)
        n = int(row["n_frames"])
        n_out = int(n / float(row["fps"]) * spec.fps)
        length, stride = spec.length_frames, spec.stride_frames
        starts = np.arange(0, max(0, n_out - length) + 1, stride) if n_out >= length else np.arange(0)
        rel = Path(CLIPS_DIR) / safe_relpath(vid) / "shared.mp4"
        data = Path(self.media).read_bytes()
        write_bytes_atomic(Path(self.build_dir) / rel, data)
        rng = np.random.default_rng(int.from_bytes(_digest("phash", i)[:8], "big"))
        hashes = rng.integers(0, 2**64, size=(len(starts), 4), dtype=np.uint64, endpoint=False).tolist()
        rows = []
        for start, phash in zip(starts.tolist(), hashes, strict=True):
            cid = clip_id(vid, round(start * 1000 / spec.fps))
            rows.append(
                {
                    "clip_id": cid,
                    "video_id": vid,
                    "source": row["source"],
                    "domain": row["domain"],
                    "start_s": start / spec.fps,
                    "end_s": (start + length) / spec.fps,
                    "n_frames": length,
                    "fps": spec.fps,
                    "width": spec.size,
                    "height": spec.size,
                    "format": "mp4",
                    "path": str(rel),
                    "bytes": len(data),
                    "sha256": _digest("clip", cid).hex(),
                    "phash": phash,
                    "max_timestamp_error_s": 0.0,
                }
            )
        facts = {"video_id": vid, "n_frames": n, "frames_counted": True, "duration_s": n / float(row["fps"])}
        return UnitResult(rows=[facts, *rows], files=[str(rel)])


def sim_stages(media: str) -> VideoStages:
    return VideoStages(
        fetch=SimFetch, probe=SimProbe, clip=lambda build_dir, spec, preset: SimClip(build_dir, spec, preset, media)
    )


# ------------------------------------------------------------------------------------------------- inputs


def _template(scratch: Path) -> Path:
    """The one tiny real H.264 file (one 16x16 frame) every generated video and clip file copies."""
    from corpus.testing import make_video

    path = scratch / "pool" / "tiny.mp4"
    if not path.exists():
        make_video(path, seconds=0.04, size="16x16", source="testsrc2")
    return path


def prepare(scratch: Path, n: int) -> Path:
    """Generate (once, in ``scratch/pool``) the first ``n`` videos and phase files, link them into
    ``scratch/n<N>/`` and write its manifest; returns the manifest path."""
    pool = scratch / "pool"
    tiny = _template(scratch)
    numbers = [str(f) for f in range(max(frames_of(i) for i in range(n)) + 1)]
    where = scratch / f"n{n}"
    for i in range(n):
        src = SOURCES[i % len(SOURCES)][0]
        media = pool / "media" / src / f"{native_id(i)}.mp4"
        ann = pool / "annotations" / src / f"{native_id(i)}-phase.txt"
        if not media.exists():
            media.parent.mkdir(parents=True, exist_ok=True)
            os.link(tiny, media)
        if not ann.exists():
            write_bytes_atomic(ann, phase_text(i, numbers).encode())
        for kind, f in (("media", media), ("annotations", ann)):
            link = where / kind / src / f.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, link)
    manifest = {
        "name": f"scale{n}",
        "description": f"simulated corpus-size build, {n} of {FULL_VIDEOS} videos (bench/corpus_scale.py)",
        "sources": [
            {
                "name": name,
                "domain": domain,
                "license": "CC BY-NC-SA 4.0",
                "root": str(where / "media" / name),
                "videos": {"glob": "*.mp4"},
                "annotations": {"adapter": "cholec80", "path": str(where / "annotations" / name)},
            }
            for name, domain in SOURCES[: min(n, len(SOURCES))]
        ],
        "clips": CLIPS,
        "split": {"val": 0.1, "test": 0.1, "seed": 0},
    }
    path = where / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------- the child build


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_hwm() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux: ``/proc/self/clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def _table_of(name: str, args: tuple, kwargs: dict) -> str:
    """Which table a wrapped writer call writes: a ``.parquet`` path's stem, or the first plain name argument."""
    values = [*args, *kwargs.values()]
    for v in values:
        if isinstance(v, str | Path) and str(v).endswith(".parquet"):
            return Path(v).stem
    for v in values[:3]:
        if isinstance(v, str) and v.isidentifier():
            return v
    return name


# What the child times, where present (the driver changes; a name it no longer has is skipped): (owner, attribute,
# label, is a method). Each call is recorded with the table it writes, reads or merges.
def _timed_calls() -> list[tuple[object, str, str, bool]]:
    import builders.executors.base as executor_base
    import builders.pipeline as pipeline
    from corpus.build_dir import BuildDir

    calls: list[tuple[object, str, str, bool]] = [
        (pipeline, name, name, False)
        for name in ("write_rows", "write_table", "merge_parts", "_plan_shards", "_finish_videos", "_write_lock")
    ]
    calls += [
        (BuildDir, name, f"BuildDir.{name}", True) for name in ("write_rows", "replace_errors", "refresh_catalog")
    ]
    calls += [(executor_base.StageOutput, name, f"StageOutput.{name}", True) for name in ("merge", "read")]
    return calls


def _install_timers(record: list[dict], stage_hwm: dict[str, int]) -> None:
    """Time the driver's table writes, reads and merges, and note the peak RSS within each stage."""
    import builders.pipeline as pipeline

    def timed(label: str, fn, method: bool):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                table = _table_of(label, args[1:] if method else args, kwargs)
                record.append({"call": label, "table": table, "s": time.perf_counter() - t})

        return wrapper

    for owner, name, label, method in _timed_calls():
        if hasattr(owner, name):
            setattr(owner, name, timed(label, getattr(owner, name), method))
    if hasattr(pipeline, "_timed"):
        original = pipeline._timed

        @contextlib.contextmanager
        def stage_timer(summary, name):
            # the peak since the last reset (before the first stage, or between stages) goes to "between"
            stage_hwm["between"] = max(stage_hwm.get("between", 0), _status_kib("VmHWM"))
            _reset_hwm()
            with original(summary, name):
                yield
            stage_hwm[name] = _status_kib("VmHWM")
            _reset_hwm()

        pipeline._timed = stage_timer


def _child(manifest_path: Path, out: Path, workers: int, media: str, result: Path) -> None:
    from builders.pipeline import build
    from corpus.manifest import load_manifest

    writes: list[dict] = []
    stage_hwm: dict[str, int] = {}
    _install_timers(writes, stage_hwm)
    t = time.perf_counter()
    summary = build(load_manifest(manifest_path), out, workers=workers, stages=sim_stages(media), show_progress=False)
    wall = time.perf_counter() - t
    tables = {p.stem: pq.ParquetFile(p).metadata for p in sorted((out / "tables").glob("*.parquet"))}
    report = {
        "wall_s": wall,
        "driver_peak_rss_mib": max([_status_kib("VmHWM"), *stage_hwm.values()]) / 1024,
        "driver_peak_rss_mib_in_stage": {
            **{k: v / 1024 for k, v in stage_hwm.items()},
            "between": max(stage_hwm.get("between", 0), _status_kib("VmHWM")) / 1024,
        },
        "stage_s": summary.stage_seconds,
        "videos": summary.videos,
        "clips": summary.clips,
        "sharded_clips": summary.sharded_clips,
        "shards": summary.shards,
        "source_frames": summary.source_frames,
        "errors": dict(summary.errors),
        "table_writes": writes,
        "tables": {
            k: {
                "rows": m.num_rows,
                "row_groups": m.num_row_groups,
                "mib": (out / "tables" / f"{k}.parquet").stat().st_size / 2**20,
            }
            for k, m in tables.items()
        },
    }
    result.write_text(json.dumps(report, default=str))


# --------------------------------------------------------------------------------------------------- parent


def _du_mib(path: Path) -> float:
    res = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    return int(res.stdout.split()[0]) / 1024 if res.returncode == 0 else float("nan")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _last_stage(out: Path) -> str:
    """The stage the build log last started (where a killed build was)."""
    log = out / "logs" / "build.log"
    started = [ln.split("stage ", 1)[1].split(":")[0] for ln in log.read_text().splitlines() if ": start" in ln]
    return started[-1] if started else "plan"


def _watch(cmd: list[str], limit_gib: float) -> tuple[int, int, bool]:
    """Run the child, sampling its RSS twice a second; kill it above ``limit_gib`` (a shared machine must not
    swap). Returns (exit code, largest sampled RSS in KiB, killed)."""
    proc = subprocess.Popen(cmd)
    peak, killed = 0, False
    while proc.poll() is None:
        rss = _rss_kib(proc.pid)
        peak = max(peak, rss)
        if rss > limit_gib * 2**20:
            proc.kill()
            killed = True
        time.sleep(0.5)
    return proc.wait(), peak, killed


def run_size(scratch: Path, n: int, workers: int, limit_gib: float) -> dict:
    """Prepare and build ``n`` videos from scratch in a child process; returns the child's report plus context."""
    t = time.perf_counter()
    manifest = prepare(scratch, n)
    prepare_s = time.perf_counter() - t
    out = scratch / f"n{n}" / "build"
    shutil.rmtree(out, ignore_errors=True)
    result = scratch / f"n{n}" / "result.json"
    result.unlink(missing_ok=True)
    load_before = os.getloadavg()
    cmd = [
        sys.executable,
        __file__,
        "_child",
        str(manifest),
        str(out),
        str(workers),
        str(_template(scratch)),
        str(result),
    ]
    print(f"[{time.strftime('%H:%M:%S')}] {n} videos: building into {out}", flush=True)
    t = time.perf_counter()
    code, sampled, killed = _watch(cmd, limit_gib)
    elapsed = time.perf_counter() - t
    load_after = os.getloadavg()
    if code != 0 or not result.exists():
        why = f"killed above {limit_gib:g} GiB" if killed else f"exit code {code}"
        return {
            "videos_planned": n,
            "failed": f"{why} in stage {_last_stage(out)}",
            "elapsed_s": elapsed,
            "driver_sampled_peak_rss_mib": sampled / 1024,
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        }
    report = json.loads(result.read_text())
    report.update(
        {
            "videos_planned": n,
            "expected_frames": sum(frames_of(i) for i in range(n)),
            "prepare_s": prepare_s,
            "process_s": elapsed,
            "driver_sampled_peak_rss_mib": sampled / 1024,
            "build_dir_mib": _du_mib(out),
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        }
    )
    print(f"  peak driver RSS {report['driver_peak_rss_mib']:.0f} MiB, wall {report['wall_s']:.0f} s", flush=True)
    return report


_WHOLE = ("_plan_shards", "_finish_videos", "_write_lock", "BuildDir.replace_errors", "BuildDir.refresh_catalog")


def _merge_s(report: dict) -> dict[str, float]:
    """Seconds per operation: ``<call> <table>`` (a write, read or merge of one table) or the call's name."""
    per: dict[str, float] = {}
    for w in report.get("table_writes", []):
        call = w["call"].split(".")[-1]
        key = call if w["call"] in _WHOLE else f"{call} {w['table']}"
        per[key] = per.get(key, 0.0) + w["s"]
    return per


def write_results(reports: list[dict], args: argparse.Namespace) -> None:
    ok = [r for r in reports if "failed" not in r]
    slope = None
    if len(ok) >= 2:  # log-log slope of peak RSS against videos: < 1 is sub-linear
        x = np.log([r["videos"] for r in ok])
        y = np.log([r["driver_peak_rss_mib"] for r in ok])
        slope = float(np.polyfit(x, y, 1)[0])
    full = next((r for r in ok if r["videos"] >= FULL_VIDEOS), None)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "driver_commit": subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
        ).stdout.strip()[:120],
        "note": args.note,
        "workers": args.workers,
        "goal": "driver peak RSS under 4 GiB at corpus size (10,535 videos, 214.5M frame-label rows, ~3M clips), "
        "growing sub-linearly with the video count",
        "rss_loglog_slope": slope,
        "corpus_size_peak_rss_mib": full["driver_peak_rss_mib"] if full else None,
        "sizes": reports,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corpus_scale.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [
        "# Simulated corpus-size build through the real driver",
        "",
        f"{report['date']}, {report['machine']}, {args.workers} local workers, driver at `{report['driver_commit']}`."
        + (f" {args.note}" if args.note else ""),
        "Generated rows and tiny media, real plan/annotate/executor/merges/dedup/split/shards/catalog "
        "(`bench/corpus_scale.py`). Driver peak RSS = the build process's own `VmHWM` (workers not counted).",
        "",
        "| videos | frame-label rows | clips | shards | driver peak RSS (MiB) | total (s) | annotate / fetch / probe"
        " / clip / dedup / split / shard (s) | load avg before / after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in reports:
        if "failed" in r:
            lines.append(
                f"| {r['videos_planned']} | failed: {r['failed']} after {r['elapsed_s']:.0f} s | | | "
                f"{r['driver_sampled_peak_rss_mib']:.0f} (sampled) | | | "
                f"{r['load_average_before_after'][0]:.1f} / {r['load_average_before_after'][1]:.1f} |"
            )
            continue
        st = r["stage_s"]
        stages = " / ".join(
            f"{st.get(k, float('nan')):.1f}" for k in ("annotate", "fetch", "probe", "clip", "dedup", "split", "shard")
        )
        la = r["load_average_before_after"]
        lines.append(
            f"| {r['videos']} | {r['tables'].get('frame_labels', {}).get('rows', 0):,} | {r['clips']:,} | "
            f"{r['shards']} | {r['driver_peak_rss_mib']:.0f} | {r['wall_s']:.0f} | {stages} | "
            f"{la[0]:.1f} / {la[1]:.1f} |"
        )
    lines += [
        "",
        "Driver peak RSS within each stage (MiB; `VmHWM` reset at each stage's start; `between`: before the first "
        "stage, between stages and after the last, where the driver writes and merges tables):",
        "",
    ]
    names = sorted(
        {k for r in ok for k in r["driver_peak_rss_mib_in_stage"]},
        key=lambda k: min(
            list(r["driver_peak_rss_mib_in_stage"]).index(k) for r in ok if k in r["driver_peak_rss_mib_in_stage"]
        ),
    )
    lines += ["| videos | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
    for r in ok:
        lines.append(
            f"| {r['videos']} | "
            + " | ".join(f"{r['driver_peak_rss_mib_in_stage'].get(k, float('nan')):.0f}" for k in names)
            + " |"
        )
    lines += ["", "Table writes, reads and merges in the driver (s, summed per operation and table):", ""]
    ops = sorted({k for r in ok for k in _merge_s(r)})
    lines += ["| operation | " + " | ".join(f"{r['videos']} videos" for r in ok) + " |"]
    lines += ["| --- |" + " ---: |" * len(ok)]
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(f"{_merge_s(r).get(op, 0.0):.2f}" for r in ok) + " |")
    lines += [""]
    if slope is not None:
        lines.append(f"Peak RSS against videos, log-log slope: {slope:.2f} (1.0 = linear; below 1 = sub-linear).")
    if full:
        verdict = "met" if full["driver_peak_rss_mib"] < 4096 else "MISSED"
        lines.append(f"Goal (under 4 GiB at corpus size): {verdict}, {full['driver_peak_rss_mib']:.0f} MiB.")
    else:
        lines.append("Goal (under 4 GiB at corpus size): not measured at corpus size in this run.")
    (args.out / "corpus_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        manifest, out, workers, media, result = sys.argv[2:7]
        _child(Path(manifest), Path(out), int(workers), media, Path(result))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", default="165", help="comma-separated sizes (10535 = the whole corpus)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/corpus_scale"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--note", default="", help="a sentence written into the results (e.g. which driver)")
    ap.add_argument("--limit-gib", type=float, default=12.0, help="kill a driver whose RSS exceeds this")
    ap.add_argument(
        "--frame-labels",
        type=int,
        default=None,
        metavar="N",
        help="only write the frame_labels table the build would write for N videos to SCRATCH/flN/tables/ "
        "(for bench/query_latency.py at corpus size), and stop",
    )
    ap.add_argument("--keep", action="store_true", help="keep every build dir (default: only the largest)")
    args = ap.parse_args()
    if args.frame_labels:
        dest = args.scratch / f"fl{args.frame_labels}" / "tables" / "frame_labels.parquet"
        t = time.perf_counter()
        rows = write_frame_labels(args.frame_labels, dest)
        print(f"{dest}: {rows:,} rows in {time.perf_counter() - t:.0f} s")
        return
    sizes = sorted(int(s) for s in args.videos.split(","))
    if max(sizes) > FULL_VIDEOS:
        ap.error(f"at most {FULL_VIDEOS} videos")
    free = shutil.disk_usage(args.scratch.parent if not args.scratch.exists() else args.scratch).free / 2**30
    need = 20 * max(sizes) / FULL_VIDEOS + 0.5
    if free < need:
        ap.error(f"{args.scratch}: {free:.1f} GiB free, this run needs about {need:.0f} GiB")
    args.scratch.mkdir(parents=True, exist_ok=True)
    reports = []
    for n in sizes:
        reports.append(run_size(args.scratch, n, args.workers, args.limit_gib))
        if not args.keep and n != max(sizes):
            shutil.rmtree(args.scratch / f"n{n}" / "build", ignore_errors=True)
    write_results(reports, args)


if __name__ == "__main__":
    main()
