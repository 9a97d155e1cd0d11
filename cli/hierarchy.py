"""``surgcorpus hierarchy``: import, split, shard and export an OpenSurgery-style video → operation → frame hierarchy.

surgcorpus hierarchy import --videos V [--operations O] [--frames F] --out DIR
surgcorpus hierarchy split --build DIR --test-fraction 0.3 --seed 0 [--groups dedup.parquet]
surgcorpus hierarchy shard --build DIR [--media FOLDER]
surgcorpus hierarchy export --build DIR --task tal|retrieval|recognition --out FILE
surgcorpus hierarchy demo --out DIR
surgcorpus hierarchy video-list LIST --source NAME --manifest SRC.yaml [--records VIDEOS.jsonl]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli.common import RetryErrors, fail
from cli.executor import ExecutorKind, RayAddress, make_executor
from corpus.errors import AnnotationError, SurgcorpusError

app = typer.Typer(
    rich_markup_mode=None,
    name="hierarchy",
    help="OpenSurgery-style hierarchies (video → operation → frame): import, fixed split, shards, task exports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

BuildDir = Annotated[Path, typer.Option("--build", "-b", help="hierarchy build directory (the --out of import)")]


def _labels(path: Path | None) -> frozenset[str] | None:
    if path is None:
        return None
    if not path.is_file():
        fail(f"{path}: label vocabulary file not found")
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


@app.command("import")
def import_(
    videos: Annotated[
        Path,
        typer.Option(
            help="videos: CSV, JSON/JSONL records, ActivityNet JSON, narration "
            "CSV(s) or MultiBypass140 label JSON(s) (file or folder)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="build directory to write tables/ and catalog.duckdb into")],
    operations: Annotated[Path | None, typer.Option(help="operations CSV (CSV imports only)")] = None,
    frames: Annotated[Path | None, typer.Option(help="frames CSV (CSV imports only)")] = None,
    fmt: Annotated[
        Literal["auto", "records", "csv", "activitynet", "narration", "multibypass"],
        typer.Option("--format", help="input format", show_default=True),
    ] = "auto",
    source: Annotated[str | None, typer.Option(help="source name (prefixes native ids for some formats)")] = None,
    surgery_type: Annotated[str | None, typer.Option(help="surgery type for formats that carry none")] = None,
    labels: Annotated[Path | None, typer.Option(help="operation label vocabulary, one per line")] = None,
    frame_labels: Annotated[Path | None, typer.Option(help="frame label vocabulary, one per line")] = None,
    allow_overlap: Annotated[
        bool,
        typer.Option("--allow-overlap/--forbid-overlap", show_default=True, help="may operations of a video overlap"),
    ] = False,
    tolerance: Annotated[
        float, typer.Option(help="seconds a segment may reach past the video's end", show_default=True)
    ] = 0.5,
) -> None:
    """Import a hierarchy; invalid rows go to tables/errors.parquet and everything else imports."""
    from corpus.hierarchy.build import import_hierarchy
    from corpus.hierarchy.validate import Rules

    rules = Rules(
        labels=_labels(labels), frame_labels=_labels(frame_labels), allow_overlap=allow_overlap, tolerance_s=tolerance
    )
    try:
        report = import_hierarchy(
            out, videos, operations, frames, fmt=fmt, rules=rules, source=source, surgery_type=surgery_type
        )
    except AnnotationError as exc:
        fail(str(exc))
    typer.echo(
        f"{out}: {report.videos} videos, {report.operations} operations, {report.frames} frames, "
        f"{report.errors} error rows {report.error_kinds or ''}".rstrip()
    )


@app.command()
def split(
    build: BuildDir,
    test_fraction: Annotated[float, typer.Option(help="fraction of videos in test", show_default=True)] = 0.3,
    seed: Annotated[int, typer.Option(help="seed of the hash order within each surgery type", show_default=True)] = 0,
    groups: Annotated[
        Path | None,
        typer.Option(help="video_id→group: CSV video_id,group, or the pipeline's dedup / videos table (Parquet)"),
    ] = None,
) -> None:
    """Assign the fixed split (by video, stratified by surgery type, groups kept together) on every level."""
    from corpus.hierarchy.build import split_hierarchy
    from corpus.hierarchy.split import read_groups

    try:
        mapping = read_groups(groups) if groups is not None else None
    except AnnotationError as exc:
        fail(str(exc))
    counts = split_hierarchy(build, test_fraction=test_fraction, seed=seed, groups=mapping)
    typer.echo(f"{build}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " videos")


@app.command()
def shard(
    build: BuildDir,
    media: Annotated[Path | None, typer.Option(help="folder of <video_id>.mp4 for videos without a path")] = None,
    name: Annotated[str, typer.Option(help="shard name prefix", show_default=True)] = "opensurgery",
    n_frames: Annotated[int, typer.Option(help="frames per video sample", show_default=True)] = 8,
    size: Annotated[
        int, typer.Option(help="short side of frames and clips (0: source size)", show_default=True)
    ] = 224,
    max_samples: Annotated[int, typer.Option(help="samples per shard", show_default=True)] = 1000,
    seed: Annotated[int, typer.Option(help="seed of hard-negative selection", show_default=True)] = 0,
    workers: Annotated[int, typer.Option(help="processes decoding videos", show_default=True)] = 1,
    retry_errors: RetryErrors = False,
    executor: ExecutorKind = "local",
    address: RayAddress = None,
) -> None:
    """Write hierarchical WebDataset shards: shards/<level>/<split>/<name>-<level>-<split>-%06d.tar.

    Resumable: videos whose media, media settings and annotation times are unchanged are not decoded again
    (--retry-errors: also re-decode the videos whose media failed before).
    """
    from builders.hierarchy_shards import ShardSettings, write_hierarchy_shards

    settings = ShardSettings(name=name, n_frames=n_frames, size=size or None, max_samples=max_samples, seed=seed)
    try:
        counts = write_hierarchy_shards(
            build,
            media=media,
            settings=settings,
            workers=workers,
            retry_errors=retry_errors,
            executor=make_executor(executor, address, workers, False, retry_errors),
        )
    except SurgcorpusError as exc:
        fail(str(exc))
    for key, n in counts.items():
        typer.echo(f"{key}: {n} samples")


@app.command()
def export(
    build: BuildDir,
    task: Annotated[Literal["tal", "retrieval", "recognition"], typer.Option(help="which task export")],
    out: Annotated[Path, typer.Option(help="output file (.json, .jsonl or .csv)")],
) -> None:
    """Export a task: ActivityNet-style TAL JSON, retrieval pairs (JSONL) or operation-recognition labels (CSV)."""
    from corpus.hierarchy.exports import export_task

    typer.echo(str(export_task(build, task, out)))


@app.command("video-list")
def video_list(
    path: Annotated[Path, typer.Argument(help="video list: CSV, JSONL or JSON list (youtube_id/url/path, title...)")],
    source: Annotated[str, typer.Option(help="source name (video ids are <source>/<youtube id or id>)")],
    manifest: Annotated[Path, typer.Option(help="source manifest YAML to write")],
    records: Annotated[
        Path | None, typer.Option(help="also write video records (JSONL) for `hierarchy import`")
    ] = None,
    domain: Annotated[str, typer.Option(help="the source's domain", show_default=True)] = "open",
    license: Annotated[
        str, typer.Option(help="license text for the source", show_default=True)
    ] = "see each video's uploader",
) -> None:
    """Turn a public video list (YouTube ids/URLs with titles, or local copies) into a source manifest."""
    from corpus.errors import ManifestError
    from corpus.video_lists import read_video_list, to_records, to_source, write_source_manifest

    try:
        vl = read_video_list(path)
        src = to_source(vl, source, domain=domain, license=license)
    except (AnnotationError, ManifestError, ValueError) as exc:
        fail(str(exc))
    write_source_manifest(src, manifest)
    if records is not None:
        records.parent.mkdir(parents=True, exist_ok=True)
        records.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in to_records(vl, source)))
    for e in vl.errors:
        typer.secho(e.message, fg=typer.colors.YELLOW, err=True)
    local = sum(v.path is not None for v in vl.videos)
    typer.echo(
        f"{manifest}: {len(vl.videos)} videos ({local} local, {len(vl.videos) - local} to fetch; "
        f"access {src.access}), {len(vl.errors)} bad rows"
    )


@app.command()
def demo(out: Annotated[Path, typer.Option(help="folder for the demo hierarchy")]) -> None:
    """Generate a small OpenSurgery-style hierarchy from test-pattern videos, split and shard it."""
    from builders.hierarchy_demo import make_demo_hierarchy
    from corpus.hierarchy.build import load_hierarchy

    h = load_hierarchy(make_demo_hierarchy(out))
    typer.echo(
        json.dumps(
            {"out": str(out), "videos": len(h.videos), "operations": len(h.operations), "frames": len(h.frames)}
        )
    )
