"""Benchmark manifests: ``manifests/benchmarks/<name>.yaml`` lists ``manifests/sources/<dataset>.yaml`` files.

A benchmark source file is a dataset card plus what it takes to rebuild the published clips::

    name: cataract-101            # our source name (video ids are "<name>/<native id>")
    dataset: cataract-101         # the folder name in the published splits
    domain: cataract
    adapter: cataract-101         # key of corpus.sources.ADAPTERS
    naming: cataract-101          # clip naming scheme, key of corpus.benchmark.plan.PLANNERS
    label_map: {Incision: 0, ...} # native label -> published label id
    splits: {url: ".../{dataset}/{split}.csv", commit: ..., sha256: {train: ...}}

Split CSVs are never stored in this repository: they are read from ``splits.local`` or a ``--splits`` folder
(``<folder>/<dataset>/<split>.csv``), and checked against the pinned sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corpus.errors import ChecksumMismatch, ManifestError, MissingInput
from corpus.manifest import NAME_PATTERN, Access, Domain, _format_error

SPLITS = ("train", "val", "test")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSource(_Model):
    """Where the published split CSVs come from: a URL template pinned to a commit, with checksums."""

    url: str = Field(description="template with {commit}, {dataset} and {split}")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    sha256: dict[Literal["train", "val", "test"], str] = {}
    local: str | None = Field(default=None, description="a folder holding <split>.csv, used instead of the URL")

    def urls(self, dataset: str) -> dict[str, str]:
        return {s: self.url.format(commit=self.commit, dataset=dataset, split=s) for s in SPLITS}


class BenchmarkSource(_Model):
    """One downstream dataset of a benchmark."""

    name: str = Field(pattern=NAME_PATTERN)
    dataset: str = Field(description="the dataset's folder name in the published splits and clip paths")
    domain: Domain
    license: str = "unknown"
    access: Access = "local"
    homepage: str | None = None
    expected_videos: int | None = Field(default=None, ge=1)
    task: str = ""
    adapter: str | None = None
    naming: str | None = None
    level: str | None = Field(default=None, description="segment level the clips are cut from")
    label_map: dict[str, int] = {}
    min_frames: int = Field(default=0, ge=0, description="segments shorter than this are not clips")
    exclude_labels: tuple[str, ...] = ()
    videos: str | None = Field(default=None, description="glob of the raw videos under the dataset root")
    splits: SplitSource
    notes: str = ""


class Benchmark(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    sources: tuple[BenchmarkSource, ...]

    def get(self, name: str) -> BenchmarkSource:
        for s in self.sources:
            if name in (s.name, s.dataset):
                return s
        raise ManifestError(f"{self.name}: no dataset {name!r} (have {', '.join(s.name for s in self.sources)})")


def _load(path: Path) -> dict:
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: must be a mapping (got {type(data).__name__})")
    return data


def load_benchmark_source(path: str | Path) -> BenchmarkSource:
    path = Path(path)
    try:
        return BenchmarkSource.model_validate(_load(path))
    except ValidationError as exc:
        raise ManifestError(_format_error(path, exc)) from None


def load_benchmark(path: str | Path) -> Benchmark:
    """A benchmark manifest; ``sources`` are paths relative to it."""
    path = Path(path)
    data = _load(path)
    refs = data.get("sources")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ManifestError(f"{path}: sources: a list of source manifest paths")
    sources = []
    for i, ref in enumerate(refs):
        try:
            sources.append(load_benchmark_source((path.parent / ref).resolve()))
        except ManifestError as exc:
            raise ManifestError(f"{path}: sources.{i}: {exc}") from None
    try:
        return Benchmark.model_validate({**data, "sources": sources})
    except ValidationError as exc:
        raise ManifestError(_format_error(path, exc)) from None


def default_benchmark() -> Path:
    return Path(__file__).resolve().parents[2] / "manifests" / "benchmarks" / "surgrec16.yaml"


def split_dir(src: BenchmarkSource, splits: str | Path | None = None) -> Path:
    """The folder holding ``src``'s published ``<split>.csv``: ``splits/<dataset>``, ``splits`` or ``splits.local``."""
    for cand in ([Path(splits) / src.dataset, Path(splits)] if splits else []) + (
        [Path(src.splits.local)] if src.splits.local else []
    ):
        if (cand / "train.csv").is_file():
            return cand
    where = f"{splits}/{src.dataset}" if splits else "splits.local"
    raise MissingInput(
        f"{src.name}: published split CSVs not found in {where}; "
        f"download them from {src.splits.urls(src.dataset)['train']}"
    )


def verify_splits(src: BenchmarkSource, folder: Path) -> dict[str, bool]:
    """Check each split CSV against its pinned sha256; returns split -> matched (unpinned splits are skipped)."""
    out = {}
    for split, want in src.splits.sha256.items():
        path = folder / f"{split}.csv"
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        out[split] = got == want
    return out


def require_verified(src: BenchmarkSource, folder: Path) -> None:
    bad = [s for s, ok in verify_splits(src, folder).items() if not ok]
    if bad:
        raise ChecksumMismatch(
            f"{folder}: {', '.join(bad)}.csv differ from the pinned SurgRec commit {src.splits.commit}"
        )
