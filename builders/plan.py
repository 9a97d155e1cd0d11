"""What a corpus manifest should yield and what is here now: expected vs found videos, hours and frames.

Per source: the published figures of its ``expected`` block (videos, hours, frames, fps, reference) and what the
manifest resolves to on this machine right now (videos listed or globbed, after ``use_splits``). With ``probe``,
the local videos are probed with ffprobe (``builders.stages.probe.probe_video``) for their hours and frames; remote
videos (YouTube, HTTP) are counted but not probed. Per domain and in total the figures are summed; a sum over
sources of which some have no published figure is reported with the number of unknowns, never filled in. Frames
are only "expected" when published, or estimated as hours x fps when both are published (marked as estimated).

Each video is planned once (``corpus.resolve.resolve_plan``): a video that a source lists but an earlier source
already plans (same YouTube id, URL or published sha256) counts in that source's ``overlap_videos``, not in its
found videos, and ``overlap`` gives the count per pair of sources; held-out benchmark videos stay out. Per license
(``licenses``): the same figures summed over the sources with that license id, and whether it allows commercial
use; sources left out by the manifest's ``exclude_licenses`` are listed in ``excluded`` and summed nowhere.

>>> p = plan_corpus(load_manifest("manifests/surgrec.yaml"))  # doctest: +SKIP
>>> p.total.expected_videos, p.reference.videos  # doctest: +SKIP
(26116, 10535)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from corpus.errors import ErrorRow, SurgcorpusError
from corpus.licenses import commercial_use, license_of
from corpus.manifest import CorpusManifest, Source
from corpus.overlap import HELD_OUT, overlap_pairs
from corpus.progress import stage_progress
from corpus.resolve import resolve_plan

REFERENCE_VIDEOS = 10_535
REFERENCE_FRAMES = 214_500_000


@dataclass(frozen=True)
class Reference:
    """The reference build the plan is compared with (SurgRec's pretraining corpus)."""

    videos: int = REFERENCE_VIDEOS
    frames: int = REFERENCE_FRAMES
    name: str = "SurgRec reference build (10,535 videos, 214.5M frames)"


@dataclass
class Figures:
    """Expected (published) and found (local) figures of one source, one domain or the whole corpus.

    ``unknown_*`` count the sources without a published figure in a sum; ``frames_estimated`` counts the sources
    whose expected frames are hours x fps rather than published; ``found_hours``/``found_frames`` are ``None`` when
    nothing was probed; ``overlap_videos``/``held_out_videos`` count listed videos that another source plans or
    holds out (not in ``found_videos``).
    """

    expected_videos: int | None = None
    expected_hours: float | None = None
    expected_frames: int | None = None
    unknown_videos: int = 0
    unknown_hours: int = 0
    unknown_frames: int = 0
    frames_estimated: int = 0
    found_videos: int = 0
    found_remote: int = 0
    probed_videos: int = 0
    found_hours: float | None = None
    found_frames: int | None = None
    overlap_videos: int = 0
    held_out_videos: int = 0

    def add(self, other: Figures) -> None:
        for key in ("videos", "hours", "frames"):
            mine, theirs = getattr(self, f"expected_{key}"), getattr(other, f"expected_{key}")
            if theirs is not None:
                setattr(self, f"expected_{key}", theirs if mine is None else mine + theirs)
            setattr(self, f"unknown_{key}", getattr(self, f"unknown_{key}") + getattr(other, f"unknown_{key}"))
        self.frames_estimated += other.frames_estimated
        self.found_videos += other.found_videos
        self.found_remote += other.found_remote
        self.probed_videos += other.probed_videos
        self.overlap_videos += other.overlap_videos
        self.held_out_videos += other.held_out_videos
        for key in ("found_hours", "found_frames"):
            theirs = getattr(other, key)
            if theirs is not None:
                setattr(self, key, theirs if getattr(self, key) is None else getattr(self, key) + theirs)


@dataclass
class SourcePlan:
    source: str
    domain: str
    access: str
    figures: Figures
    fps: float | None = None
    reference: str | None = None
    note: str = ""
    use_splits: list[str] | None = None
    license: str = ""
    license_id: str = ""
    excluded: str | None = None


@dataclass
class LicensePlan:
    """The figures of the sources sharing one license id; ``commercial_use`` None when not cleared."""

    license_id: str
    commercial_use: bool | None
    sources: list[str] = field(default_factory=list)
    figures: Figures = field(default_factory=Figures)


@dataclass
class CorpusPlan:
    """A manifest's plan: per source, per domain, per license, total, the overlap between sources, the reference
    build, and the problems met."""

    manifest: str
    sources: list[SourcePlan] = field(default_factory=list)
    domains: dict[str, Figures] = field(default_factory=dict)
    licenses: dict[str, LicensePlan] = field(default_factory=dict)
    total: Figures = field(default_factory=Figures)
    overlap: list[dict] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    reference: Reference = field(default_factory=Reference)
    errors: list[ErrorRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        ref = self.reference
        return {
            "manifest": self.manifest,
            "sources": [asdict(s) for s in self.sources],
            "domains": {d: asdict(f) for d, f in self.domains.items()},
            "licenses": {k: asdict(lp) for k, lp in self.licenses.items()},
            "total": asdict(self.total),
            "overlap": self.overlap,
            "excluded": self.excluded,
            "reference": asdict(ref),
            "versus_reference": versus_reference(self.total, ref),
            "errors": [e.to_dict() for e in self.errors],
        }


def _ratio(a: float | None, b: float) -> float | None:
    return None if a is None else round(a / b, 4)


def versus_reference(total: Figures, ref: Reference) -> dict:
    """Expected and found totals as fractions of the reference build's videos and frames."""
    return {
        "expected_videos": _ratio(total.expected_videos, ref.videos),
        "expected_frames": _ratio(total.expected_frames, ref.frames),
        "found_videos": _ratio(total.found_videos, ref.videos),
        "found_frames": _ratio(total.found_frames, ref.frames),
    }


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def plan_corpus(
    manifest: CorpusManifest,
    *,
    probe: bool = False,
    name: str = "",
    show_progress: bool = False,
) -> CorpusPlan:
    """Expected vs found figures of ``manifest`` (see the module docstring); probe failures become error rows."""
    resolved = resolve_plan(manifest)
    rows = resolved.rows
    out = CorpusPlan(
        manifest=name or manifest.name,
        errors=list(resolved.errors),
        overlap=overlap_pairs(resolved.duplicates),
        excluded=dict(resolved.excluded),
    )
    n_probe = sum(_is_local(r["uri"]) for r in rows) if probe else 0
    with stage_progress("probe", total=n_probe, enabled=show_progress and n_probe > 0) as advance:
        for src in manifest.sources:
            sp = _source_plan(src, [r for r in rows if r["source"] == src.name], probe, out, advance)
            sp.excluded = resolved.excluded.get(src.name)
            dups = [d for d in resolved.duplicates if d.source == src.name]
            sp.figures.held_out_videos = sum(d.reason == HELD_OUT for d in dups)
            sp.figures.overlap_videos = len(dups) - sp.figures.held_out_videos
            out.sources.append(sp)
    for sp, src in zip(out.sources, manifest.sources, strict=True):
        if sp.excluded is not None:
            continue
        out.domains.setdefault(sp.domain, Figures()).add(sp.figures)
        lp = out.licenses.setdefault(sp.license_id, LicensePlan(sp.license_id, commercial_use(sp.license_id)))
        lp.sources.append(src.name)
        lp.figures.add(sp.figures)
        out.total.add(sp.figures)
    return out


def _source_plan(src: Source, mine: list[dict], probe: bool, out: CorpusPlan, advance) -> SourcePlan:
    from builders.stages.probe import probe_video

    exp = src.expected
    fig = Figures()
    if exp is not None:
        fig.expected_videos, fig.expected_hours, fig.expected_frames = exp.videos, exp.hours, exp.frames
        if exp.frames is None and exp.hours is not None and exp.fps is not None:
            fig.expected_frames, fig.frames_estimated = round(exp.hours * 3600 * exp.fps), 1
    fig.unknown_videos = int(fig.expected_videos is None)
    fig.unknown_hours = int(fig.expected_hours is None)
    fig.unknown_frames = int(fig.expected_frames is None)
    fig.found_videos = len(mine)
    fig.found_remote = sum(not _is_local(r["uri"]) for r in mine)
    if probe:
        seconds, frames = 0.0, 0
        for r in (r for r in mine if _is_local(r["uri"])):
            try:
                facts = probe_video(r["uri"].removeprefix("file://"))
            except SurgcorpusError as exc:
                out.errors.append(ErrorRow.from_exception("plan-probe", exc, video_id=r["video_id"], uri=r["uri"]))
            else:
                seconds += facts["duration_s"] or 0.0
                frames += facts["n_frames"] or 0
                fig.probed_videos += 1
            advance(1)
        if fig.probed_videos:
            fig.found_hours, fig.found_frames = seconds / 3600, frames
    return SourcePlan(
        source=src.name,
        domain=src.domain,
        access=src.access,
        figures=fig,
        fps=exp.fps if exp else None,
        reference=exp.reference if exp else None,
        note=exp.note if exp else "",
        use_splits=list(src.use_splits) if src.use_splits else None,
        license=src.license,
        license_id=license_of(src),
    )
