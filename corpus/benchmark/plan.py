"""Clip planning: native segments -> the clips behind SurgRec's published rows, named exactly as SurgRec names them.

Each naming scheme is a plain function ``(segments of one level, videos, spec) -> [PlannedClip]`` in ``PLANNERS``.
Planning reads annotations only; it never opens a video. Paths are relative to SurgRec's ``__DATA_ROOT__`` and start
with the dataset's folder (``cataract-101/split_clip/...``), so a published row matches a plan row as-is.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from corpus.annotations import ParsedAnnotations
from corpus.benchmark.spec import BenchmarkSource
from corpus.errors import ManifestError
from corpus.sources import adapter


@dataclass(frozen=True)
class PlannedClip:
    """One benchmark clip: where it comes from (native video, frames) and the published path and label it gets."""

    path: str
    label: str
    label_id: int | None
    video_id: str
    video_file: str
    start_frame: int | None
    end_frame: int | None
    fps: float | None
    depends_on_video: str | None = None  # why the name/frames may change once the raw video is probed

    def to_dict(self) -> dict:
        return asdict(self)


Planner = Callable[[list[dict], dict[str, dict], BenchmarkSource], list[PlannedClip]]


def _by_video(segments: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for s in segments:
        out[s["video_id"]].append(s)
    for rows in out.values():
        rows.sort(key=lambda s: (s["start_frame"] if s["start_frame"] is not None else -1, s["end_frame"] or 0))
    return dict(out)


def _native(vid: str) -> str:
    return vid.split("/", 1)[1]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _clip(spec: BenchmarkSource, path: str, seg: dict, video_file: str, fps: float | None) -> PlannedClip:
    return PlannedClip(
        path=f"{spec.dataset}/{path}",
        label=seg["label"],
        label_id=spec.label_map.get(seg["label"]),
        video_id=seg["video_id"],
        video_file=video_file,
        start_frame=seg["start_frame"],
        end_frame=seg["end_frame"],
        fps=fps,
    )


def _long_enough(seg: dict, spec: BenchmarkSource) -> bool:
    if seg["label"] in spec.exclude_labels:
        return False
    if seg["start_frame"] is None or seg["end_frame"] is None:
        return True
    return seg["end_frame"] - seg["start_frame"] >= spec.min_frames


def plan_cataract101(segments, videos, spec):
    """``split_clip/phase_PP_<slug>/case_N_phasePP_III_SSSSSS_EEEEEE.mp4``: III = 1-based segment index."""
    out = []
    for vid, segs in _by_video(segments).items():
        native = _native(vid)
        for i, s in enumerate(segs, 1):
            if not _long_enough(s, spec):
                continue
            p = s["label_id"]
            name = f"{native}_phase{p:02d}_{i:03d}_{s['start_frame']:06d}_{s['end_frame']:06d}.mp4"
            out.append(
                _clip(spec, f"split_clip/phase_{p:02d}_{_slug(s['label'])}/{name}", s, f"videos/{native}.mp4", 25.0)
            )
    return out


def _sec(x: float) -> str:
    return str(round(x, 2))


def plan_jigsaws(segments, videos, spec):
    """``videos/<Task>_<trial>_capture{1,2}_<start s>_<end s>_Gxx.mp4``: inclusive native frames / 30, 2 decimals."""
    out = []
    for vid, segs in _by_video(segments).items():
        native = _native(vid)
        task = native.rsplit("_", 1)[0]
        for s in segs:
            if not _long_enough(s, spec):
                continue
            t0, t1 = _sec(s["start_frame"] / 30), _sec((s["end_frame"] - 1) / 30)
            for cam in (1, 2):
                name = f"videos/{native}_capture{cam}_{t0}_{t1}_{s['label']}.mp4"
                out.append(_clip(spec, name, s, f"{task}/video/{native}_capture{cam}.avi", 30.0))
    return out


def _runs_planner(prefix: Callable[[str], str], video_file: Callable[[str], str], fps: float):
    def plan(segments, videos, spec):
        out = []
        for vid, segs in _by_video(segments).items():
            native = _native(vid)
            for k, s in enumerate(segs, 1):
                if _long_enough(s, spec):
                    out.append(_clip(spec, f"{prefix(native)}_{k}.mp4", s, video_file(native), fps))
        return out

    return plan


def _digits(native: str) -> int:
    return int(re.sub(r"\D", "", native.rsplit("/", 1)[-1]))


plan_cholec80 = _runs_planner(lambda n: f"split_video/cholec80_{_digits(n):02d}", lambda n: f"videos/{n}.mp4", 25.0)
plan_cholec80.__doc__ = "``split_video/cholec80_NN_k.mp4``: the k-th contiguous phase run of video NN."
plan_autolaparo = _runs_planner(lambda n: f"split_video/label_{_digits(n):02d}", lambda n: f"videos/{n}.mp4", 25.0)
plan_autolaparo.__doc__ = "``split_video/label_NN_k.mp4``: the k-th contiguous phase run of video NN."


def plan_m2cai16(segments, videos, spec):
    """``split_video/m2cai16w_<subset>_<file stem>_<Phase>.mp4``: one clip per video and phase (first to last)."""
    out = []
    for vid, segs in _by_video(segments).items():
        native = _native(vid)
        stem = "m2cai16w_" + native.replace("/", "_")
        first: dict[str, dict] = {}
        for s in segs:
            if not _long_enough(s, spec):
                continue
            if s["label"] in first:
                first[s["label"]] = {**first[s["label"]], "end_frame": s["end_frame"]}
            else:
                first[s["label"]] = dict(s)
        for label, s in first.items():
            out.append(_clip(spec, f"split_video/{stem}_{label}.mp4", s, f"{native}.mp4", 25.0))
    return out


MBP_FPS = 25.0
NEAR_END_FRAMES = 25


def plan_multibypass140(segments, videos, spec):
    """``split_videos/<centre>/phase/<VID>/<VID>_phase_III_<label>_SSSSSS-EEEEEE.mp4``: III = 1-based index by start.

    Frames come from the annotated milliseconds at the video's own frame rate (start rounded down, end up), and an
    end past the video is cut at its frame count: SurgRec's names do both (BBP39 and BBP53 run at 24.999 fps). With
    a probed video (``videos[id]["probed"]``) both are exact; without, 25 fps is assumed and clips ending within
    1 s of the video's last annotated frame are marked as depending on the video's length.
    """
    out = []
    for vid, segs in _by_video(segments).items():
        centre, name = _native(vid).split("/", 1)
        probed = videos.get(vid, {}).get("probed") or {}
        fps = probed.get("fps") or MBP_FPS
        n_frames = probed.get("n_frames")
        last_end = max(s["end_frame"] for s in segs)
        for i, s in enumerate(segs, 1):
            if not _long_enough(s, spec):
                continue
            start = math.floor(round(s["start_s"] * 1000) * fps / 1000)
            end = math.ceil(round(s["end_s"] * 1000) * fps / 1000)
            depends = None
            if n_frames is not None:
                end = min(end, n_frames)
            elif s["end_frame"] >= last_end - NEAR_END_FRAMES:
                depends = "end within 1 s of the annotated video end: cut at the video's frame count when shorter"
            clip = f"{name}_phase_{i:03d}_{s['label']}_{start:06d}-{end:06d}.mp4"
            c = _clip(spec, f"split_videos/{centre}/phase/{name}/{clip}", s, f"videos/{centre}/{name}.mp4", fps)
            out.append(replace(c, start_frame=start, end_frame=end, depends_on_video=depends))
    return out


def plan_sar_rarp50(segments, videos, spec):
    """``split_video/AA_<slug>/video_NN_labelAA_<slug>_segKKKK_SSSSSS-EEEEEE.mp4``: KKKK = 0-based run index."""
    out = []
    for vid, segs in _by_video(segments).items():
        n = _digits(_native(vid))
        for k, s in enumerate(segs):
            if not _long_enough(s, spec):
                continue
            a, slug = s["label_id"], s["text"] or _slug(s["label"]).replace("-", "_")
            name = f"video_{n:02d}_label{a:02d}_{slug}_seg{k:04d}_{s['start_frame']:06d}-{s['end_frame'] - 1:06d}.mp4"
            out.append(_clip(spec, f"split_video/{a:02d}_{slug}/{name}", s, f"{_native(vid)}/video_left.avi", 60.0))
    return out


def plan_cataract1k(segments, videos, spec):
    """``split_video/case_N/case_N_segment_KK_<label>_SSS.sss-EEE.sss.mp4``: annotated intervals in seconds."""
    out = []
    for vid, segs in _by_video(segments).items():
        native = _native(vid)
        for k, s in enumerate(segs, 1):
            if _long_enough(s, spec):
                name = f"{native}_segment_{k:02d}_{s['label']}_{s['start_s']:07.3f}-{s['end_s']:07.3f}.mp4"
                out.append(_clip(spec, f"split_video/{native}/{name}", s, f"videos/{native}.mp4", None))
    return out


def plan_folder(segments, videos, spec):
    """Clip-level datasets: the native file path (``text``) is the clip path, with an ``.mp4`` extension."""
    out = []
    for s in segments:
        if _long_enough(s, spec):
            rel = str(Path(s["text"]).with_suffix(".mp4"))
            out.append(_clip(spec, rel, s, s["text"], None))
    return sorted(out, key=lambda c: c.path)


def plan_aixsuture(segments, videos, spec):
    """``video_faststart/<ID>.mp4``: one clip per video (the whole video), labelled by skill class."""
    out = []
    for s in segments:
        if _long_enough(s, spec):
            v = videos.get(s["video_id"], {})
            video_file = v.get("video_file") or f"video/{_native(s['video_id'])}.mp4"
            out.append(_clip(spec, f"video_faststart/{_native(s['video_id'])}.mp4", s, video_file, None))
    return sorted(out, key=lambda c: c.path)


def plan_cat21(segments, videos, spec):
    """``split_clip/<phase>/case_NN_<subset>_KKKK.mp4``: KKKK = 0-based index of the phase run in the video."""
    out = []
    for vid, segs in _by_video(segments).items():
        v = videos.get(vid, {})
        native, subset = _native(vid), v.get("subset", "training")
        video_file = v.get("video_file") or f"videos/{native}.mp4"
        for k, s in enumerate(segs):
            if _long_enough(s, spec):
                out.append(_clip(spec, f"split_clip/{s['label']}/{native}_{subset}_{k:04d}.mp4", s, video_file, 25.0))
    return out


KVASIR_CAPSULE_WINDOW = 80
KVASIR_CAPSULE_FOLDERS = {"Ileocecal valve": "Ileocecal valve"}  # SurgRec kept this one class name as is


def plan_kvasir_capsule(segments, videos, spec):
    """``videos/<folder>/<video>_SSSS-EEEE.mp4``: each finding segment cut into windows of up to 80 frames from its
    start (end exclusive, the last window shorter); folder = the class slug (``blood-fresh``), "Ileocecal valve" as
    is. Inferred from SurgRec's published names; which windows SurgRec kept is not derivable (see the manifest)."""
    out = []
    for vid, segs in _by_video(segments).items():
        native, fps = _native(vid), videos.get(vid, {}).get("fps") or 30.0
        for s in segs:
            if not _long_enough(s, spec):
                continue
            folder = KVASIR_CAPSULE_FOLDERS.get(s["label"], _slug(s["label"]))
            for a in range(s["start_frame"], s["end_frame"], KVASIR_CAPSULE_WINDOW):
                b = min(a + KVASIR_CAPSULE_WINDOW, s["end_frame"])
                c = _clip(spec, f"videos/{folder}/{native}_{a}-{b}.mp4", s, f"labelled_videos/{native}.mp4", fps)
                out.append(replace(c, start_frame=a, end_frame=b))
    return out


PLANNERS: dict[str, Planner] = {
    "cataract-101": plan_cataract101,
    "jigsaws": plan_jigsaws,
    "cholec80": plan_cholec80,
    "autolaparo": plan_autolaparo,
    "m2cai16": plan_m2cai16,
    "multibypass140": plan_multibypass140,
    "sar-rarp50": plan_sar_rarp50,
    "cataract-1k": plan_cataract1k,
    "folder": plan_folder,
    "aixsuture": plan_aixsuture,
    "cat-21": plan_cat21,
    "kvasir-capsule": plan_kvasir_capsule,
}


def plan_parsed(
    parsed: ParsedAnnotations, spec: BenchmarkSource, probed: dict[str, dict] | None = None
) -> list[PlannedClip]:
    """Plan the clips of parsed annotations; ``probed`` (video id -> probe facts of its raw video) refines planners
    whose names depend on the video (MultiBypass140: its frame rate and frame count)."""
    if spec.naming is None:
        raise ManifestError(
            f"{spec.name}: no clip naming scheme: the published clip names cannot be derived from the annotations"
            + (f" ({spec.notes})" if spec.notes else "")
        )
    if spec.naming not in PLANNERS:
        raise ManifestError(f"{spec.name}: no clip naming scheme {spec.naming!r} (known: {', '.join(PLANNERS)})")
    videos = {v["video_id"]: {**v, "probed": (probed or {}).get(v["video_id"])} for v in parsed.videos}
    return PLANNERS[spec.naming](parsed.segments_of(spec.level), videos, spec)


def plan(spec: BenchmarkSource, root: str | Path) -> list[PlannedClip]:
    """Parse ``root`` with the dataset's adapter and plan its clips."""
    if not spec.adapter:
        raise ManifestError(f"{spec.name}: no adapter, so no clip plan")
    return plan_parsed(adapter(spec.adapter).parse(Path(root)), spec)


def surgrec_row(clip: PlannedClip, prefix: str = "") -> str:
    """A SurgRec CSV row: ``<prefix><path> <label id>``, the path quoted when it has a space."""
    path = f"{prefix}{clip.path}"
    return f'"{path}" {clip.label_id}' if " " in path else f"{path} {clip.label_id}"
