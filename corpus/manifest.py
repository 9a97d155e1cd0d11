"""Corpus and source manifests: YAML parsed once, at the edge, into frozen pydantic models.

A corpus manifest names the sources (inline or as paths to source manifests) and the clip, dedup, split and shard
settings. Every validation error names the file, the field path and the bad value::

    manifests/demo.yaml: sources.0.domain: input should be 'laparoscopy', 'endoscopy', ... (got 'lapro')

>>> m = load_manifest("manifests/demo.yaml")  # doctest: +SKIP
>>> m.sources[0].name  # doctest: +SKIP
'synthetic-lap'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from corpus.errors import ManifestError

Domain = Literal["laparoscopy", "endoscopy", "cataract", "robotic", "open", "other"]
Access = Literal["local", "http", "hf", "youtube"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GlobSpec(_Model):
    """Videos found by a glob relative to the source root (``**`` recurses)."""

    glob: str
    exclude: tuple[str, ...] = ()


class VideoEntry(_Model):
    """One explicitly listed video: a URI (absolute, or relative to the source root), optionally pinned."""

    uri: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = Field(default=None, ge=0)
    id: str | None = None


class AnnotationSpec(_Model):
    """Native annotations of a source: the adapter that parses them and where they are."""

    adapter: str
    path: str


class OfficialSplits(_Model):
    """Official splits: a mapping split -> native video ids, or a file (CSV ``video,split`` or YAML)."""

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    file: str | None = None


class VideoListSpec(_Model):
    """Videos named by a public video list (CSV, JSONL or JSON list, e.g. LEMON's ``labels.json``), read by
    ``corpus.video_lists.read_video_list``; ``list`` is relative to the manifest file that names it.

    ``format`` checks what the file is (``auto``: by its suffix; ``lemon``: a JSON list with ``youtubeId``;
    ``surgatlas``: a JSON object keyed by YouTube id; ``ophnet``: a CSV of ``video_id`` rows, ids only);
    ``where`` keeps only the rows whose field (``surgery_type``, ``license`` or any extra field such as LEMON's
    ``robotic``) equals the given value. ``uri`` places the videos of an id-only list (``{id}.mp4``, relative to
    the source root). ``url`` and ``sha256`` pin the published list file (checked when the file is present).
    """

    list: str
    format: Literal["auto", "lemon", "json", "jsonl", "csv", "surgatlas", "ophnet"] = "auto"
    where: dict[str, str | bool | int | float] = {}
    uri: str | None = Field(default=None, pattern=r"\{id\}")
    url: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Expected(_Model):
    """Published size of a source (shown by ``surgcorpus plan``); a figure left out is unknown, never guessed."""

    videos: int | None = Field(default=None, ge=0)
    hours: float | None = Field(default=None, ge=0)
    frames: int | None = Field(default=None, ge=0)
    fps: float | None = Field(default=None, gt=0, description="native frame rate, when the publication states it")
    reference: str = Field(min_length=1, description="where the figures are published")
    note: str = ""


SplitName = Literal["train", "val", "test"]


class Source(_Model):
    """A source dataset: where its videos are and what they are.

    ``use_splits`` keeps only the videos of these official splits (from ``splits``): a benchmark dataset in a
    pretraining corpus contributes its train portion only. ``expected`` holds the published figures.
    """

    name: str = Field(pattern=NAME_PATTERN)
    domain: Domain
    license: str = "unknown"
    license_id: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="SPDX-style id of the videos' license (CC-BY-NC-SA-4.0, …)"
    )
    access: Access = "local"
    root: str = "."
    videos: GlobSpec | VideoListSpec | tuple[VideoEntry, ...]
    annotations: AnnotationSpec | None = None
    splits: OfficialSplits | None = None
    use_splits: tuple[SplitName, ...] | None = Field(default=None, min_length=1)
    expected: Expected | None = None
    group_pattern: str | None = Field(
        default=None, description="regex on the native id; its first group keeps videos in one split"
    )
    mask: Literal["none", "black-border", "circle"] | None = Field(
        default=None, description="this source's mask crop, overriding clips.mask (e.g. circle for endoscopy)"
    )
    homepage: str | None = None

    @field_validator("videos", mode="before")
    @classmethod
    def _videos_shape(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple({"uri": v} if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="after")
    def _use_splits_need_splits(self) -> Source:
        if self.use_splits is not None and self.splits is None:
            raise ValueError(f"use_splits {list(self.use_splits)} needs the source's official 'splits'")
        return self


class ClipSpec(_Model):
    """How videos are cut: target fps, output short side (centre crop to square unless ``crop: none``), length."""

    fps: float = Field(default=8.0, gt=0, le=240)
    size: int = Field(default=224, ge=16, le=4096)
    crop: Literal["center", "none"] = "center"
    mask: Literal["none", "black-border", "circle"] = "none"
    seconds: float | None = Field(default=None, gt=0)
    frames: int | None = Field(default=None, gt=0)
    stride: float | None = Field(default=None, gt=0, description="seconds between clip starts (default: clip length)")
    format: Literal["mp4", "jpg"] = "mp4"
    crf: int = Field(default=23, ge=0, le=51)
    keep_tail: bool = Field(default=False, description="keep a last clip shorter than the clip length")
    decoder: Literal["ffmpeg", "decord"] = Field(
        default="ffmpeg", description="bulk decoder of the clip stage (decord falls back to ffmpeg when it cannot)"
    )
    timing: Literal["exact", "fast"] = Field(
        default="exact",
        description="exact: the source frame nearest each output time; fast: the nearest frame of a cheaper decode "
        "(skipped non-reference frames, reduced resolution), its timestamp error recorded per clip",
    )

    @model_validator(mode="after")
    def _length(self) -> ClipSpec:
        if self.seconds is not None and self.frames is not None:
            raise ValueError("give either 'seconds' or 'frames', not both")
        return self

    @property
    def length_frames(self) -> int:
        """Clip length in output frames."""
        if self.frames is not None:
            return self.frames
        return max(1, round((self.seconds if self.seconds is not None else 4.0) * self.fps))

    @property
    def stride_frames(self) -> int:
        """Distance between clip starts in output frames."""
        return self.length_frames if self.stride is None else max(1, round(self.stride * self.fps))


class DedupSpec(_Model):
    """Near-duplicate thresholds: mean Hamming distance of 64-bit perceptual hashes over aligned sampled frames."""

    enabled: bool = True
    frames: int = Field(default=16, ge=2, le=256, description="frames sampled per video/clip")
    video_threshold: float = Field(default=10.0, ge=0, le=64)
    clip_threshold: float = Field(default=8.0, ge=0, le=64)
    min_match_fraction: float = Field(default=0.6, gt=0, le=1, description="fraction of sampled frames that match")


class SplitSpec(_Model):
    """Deterministic grouped split by hashing the group key (sources with official splits keep them)."""

    val: float = Field(default=0.1, ge=0, lt=1)
    test: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    group_by: Literal["video", "source", "group"] = "video"
    group_pattern: str | None = Field(
        default=None, description="regex on the native id; its first group is the group key (for group_by: group)"
    )

    @model_validator(mode="after")
    def _fractions(self) -> SplitSpec:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be < 1 (got {self.val} + {self.test})")
        if self.group_by == "group" and not self.group_pattern:
            raise ValueError("group_by: group needs a group_pattern")
        return self


class ShardSpec(_Model):
    """Shard size limits: a shard closes at whichever limit comes first."""

    max_samples: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=1 << 30, ge=1024)


_OPTIONAL_SOURCE_FIELDS = ("use_splits", "expected", "license_id")
_OPTIONAL_LIST_FIELDS = ("uri", "url", "sha256")

SourceRef = Annotated[Source | str, Field(union_mode="left_to_right")]


class CorpusManifest(_Model):
    """A corpus: sources plus how to clip, deduplicate, split and shard them."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    sources: tuple[Source, ...] = Field(min_length=1)
    clips: ClipSpec = ClipSpec()
    dedup: DedupSpec = DedupSpec()
    split: SplitSpec = SplitSpec()
    shard: ShardSpec = ShardSpec()
    exclude_licenses: tuple[str, ...] = Field(
        default=(), description="license ids (or 'non-commercial', 'unknown') whose sources are left out"
    )

    @model_validator(mode="after")
    def _unique_sources(self) -> CorpusManifest:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique (repeated: {', '.join(dupes)})")
        return self

    def fingerprint(self, *parts: str) -> str:
        """Hash of selected manifest sections (all when none given), for change detection."""
        data = self.model_dump(mode="json")
        for src in data["sources"]:  # optional fields added later leave the hash of older manifests unchanged
            for key in _OPTIONAL_SOURCE_FIELDS:
                if src.get(key) is None:
                    src.pop(key, None)
            if isinstance(src["videos"], dict):
                for key in _OPTIONAL_LIST_FIELDS:
                    if src["videos"].get(key) is None:
                        src["videos"].pop(key, None)
        if not data["exclude_licenses"]:
            data.pop("exclude_licenses")
        if data["clips"]["timing"] == "exact":  # the default, added later
            data["clips"].pop("timing")
        chosen = {p: data[p] for p in parts} if parts else data
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
        value = err.get("input")
        shown = value if not isinstance(value, dict | list) else json.dumps(value)[:80]
        lines.append(f"{path}: {loc or '<root>'}: {err['msg']} (got {shown!r})")
    return "\n".join(lines)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc


def _resolve_root(root: str, base: Path) -> str:
    if "://" in root:
        return root
    p = Path(root).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_list(videos: Any, base: Path) -> Any:
    """A video-list spec's ``list`` path resolved against the folder of the manifest that names it."""
    if isinstance(videos, VideoListSpec):
        return videos.model_copy(update={"list": _resolve_root(videos.list, base)})
    if isinstance(videos, dict) and isinstance(videos.get("list"), str):
        return {**videos, "list": _resolve_root(videos["list"], base)}
    return videos


def load_source(path: str | Path) -> Source:
    """Load one source manifest file; ``root`` is resolved relative to the file."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a source manifest must be a mapping (got {type(data).__name__})")
    try:
        src = Source.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_format_error(path, exc)) from None
    return src.model_copy(
        update={"root": _resolve_root(src.root, path.parent), "videos": _resolve_list(src.videos, path.parent)}
    )


def load_manifest(path: str | Path) -> CorpusManifest:
    """Load and validate a corpus manifest; source references and relative roots resolve against its folder."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a corpus manifest must be a mapping (got {type(data).__name__})")
    sources = data.get("sources")
    if isinstance(sources, list):
        resolved: list[Any] = []
        for i, item in enumerate(sources):
            if isinstance(item, str):
                ref = (path.parent / item).resolve()
                try:
                    resolved.append(load_source(ref).model_dump())
                except ManifestError as exc:
                    raise ManifestError(f"{path}: sources.{i}: {exc}") from None
            elif isinstance(item, dict) and isinstance(item.get("root", "."), str):
                entry = {**item, "root": _resolve_root(item.get("root", "."), path.parent)}
                if "videos" in item:
                    entry["videos"] = _resolve_list(item["videos"], path.parent)
                resolved.append(entry)
            else:
                resolved.append(item)
        data = {**data, "sources": resolved}
    try:
        return CorpusManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_format_error(path, exc)) from None
