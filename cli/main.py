"""The ``surgcorpus`` command line: thin commands that parse arguments and call one library function each.

surgcorpus validate MANIFEST               check a manifest without building
surgcorpus build MANIFEST --out DIR        build or resume a corpus
surgcorpus query --build DIR "SQL"         query the build's tables with DuckDB
surgcorpus report --build DIR              write the HTML report
surgcorpus status --build DIR              what each stage has finished (reads the state on disk)
surgcorpus errors --build DIR              the errors table
surgcorpus demo --out DIR                  generate demo videos and build them (no network)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.common import BuildDir, Format, RetryErrors, fail
from cli.executor import ExecutorKind, RayAddress, make_executor
from corpus.errors import ManifestError, SurgcorpusError, ToolMissing

app = typer.Typer(
    rich_markup_mode=None,
    name="surgcorpus",
    help="Reproducible surgical video corpora: manifests → WebDataset shards + Parquet tables + DuckDB catalog.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _load(manifest: Path):
    from corpus.manifest import load_manifest

    try:
        return load_manifest(manifest)
    except ManifestError as exc:
        fail(f"invalid manifest:\n{exc}")


@app.command()
def validate(manifest: Annotated[Path, typer.Argument(help="corpus manifest (YAML)")]) -> None:
    """Check a manifest (fields, values, source files) without building anything."""
    m = _load(manifest)
    from corpus.resolve import official_splits, plan_videos

    plan, errors = plan_videos(m)
    try:
        for src in m.sources:
            official_splits(src)
    except ManifestError as exc:
        fail(f"invalid manifest:\n{exc}")
    typer.echo(f"{manifest}: valid corpus manifest {m.name!r}: {len(m.sources)} source(s), {len(plan)} video(s) found")
    for s in m.sources:
        typer.echo(f"  {s.name:<24} {s.domain:<12} {sum(r['source'] == s.name for r in plan):>6} videos  {s.root}")
    for e in errors:
        typer.secho(f"  warning: {e.message}", fg=typer.colors.YELLOW)


@app.command()
def build(
    manifest: Annotated[Path, typer.Argument(help="corpus manifest (YAML)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="build directory")] = Path("build/corpus"),
    workers: Annotated[int, typer.Option("--workers", "-j", help="worker processes (default: all cores)")] = 0,
    cache: Annotated[
        Path | None, typer.Option(help="download cache (default: $SURGCORPUS_CACHE or OUT/cache)")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="exit 1 when any error was recorded")] = False,
    preset: Annotated[str, typer.Option(help="x264 preset of the clip encoder")] = "ultrafast",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars")] = True,
    retry_errors: RetryErrors = False,
    executor: ExecutorKind = "local",
    address: RayAddress = None,
) -> None:
    """Build a corpus, or resume an interrupted build: the same command redoes only unfinished or changed work.

    Units that failed are remembered as failed (a corrupt file stays corrupt) unless the failure was transient
    (network, out of memory, disk full, a decoder killed from outside); --retry-errors re-runs exactly the
    failed units. A second writer on the same build dir exits at once (exit code 2) naming the holder's pid.
    """
    m = _load(manifest)
    from builders.pipeline import build as run_build
    from builders.pipeline import print_summary

    try:
        summary = run_build(
            m,
            out,
            workers=workers or None,
            cache_dir=cache,
            show_progress=progress,
            manifest_path=manifest,
            preset=preset,
            retry_errors=retry_errors,
            executor=make_executor(executor, address, workers, progress),
        )
    except SurgcorpusError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted: finished work is kept; run the same command to resume ({out})", code=130)
    print_summary(summary)
    if strict and summary.n_errors:
        fail(f"--strict: {summary.n_errors} error(s) recorded, see `surgcorpus errors --build {out}`", code=1)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views: sources, videos, clips, dedup, errors, shards...")],
    build_dir: BuildDir = Path("build/corpus"),
    fmt: Format = "table",
) -> None:
    """Run SQL against a build's tables (DuckDB views over the Parquet files)."""
    import duckdb

    from corpus.catalog import query as run_query

    try:
        cols, rows = run_query(build_dir, sql)
    except (FileNotFoundError, duckdb.Error) as exc:
        fail(str(exc))
    _print_rows(cols, rows, fmt)


def _print_rows(cols: list[str], rows: list[tuple], fmt: str) -> None:
    from corpus.catalog import format_rows

    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table(*cols)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        Console(width=max(120, os.get_terminal_size().columns if sys.stdout.isatty() else 200)).print(t)
    elif fmt in ("csv", "json"):
        sys.stdout.write(format_rows(cols, rows, fmt) + ("\n" if fmt == "json" else ""))
    else:
        fail(f"unknown --format {fmt!r}: use table, csv or json")


@app.command()
def report(
    build_dir: BuildDir = Path("build/corpus"),
    out: Annotated[Path | None, typer.Option(help="HTML file (default: BUILD/report/index.html)")] = None,
) -> None:
    """Write a static HTML report: composition, durations, resolutions, duplicate clusters, errors."""
    from corpus.report import write_report

    if not (build_dir / "tables").exists():
        fail(f"{build_dir}: not a build dir (no tables/); run `surgcorpus build` first")
    typer.echo(str(write_report(build_dir, out)))


@app.command()
def status(build_dir: BuildDir = Path("build/corpus")) -> None:
    """What the build dir holds, read from disk (not from logs): finished units per stage, every table and its
    rows, catalog views, errors by stage, the headline figures, clips added after the last balance run, and who
    is writing to it now."""
    import pyarrow.parquet as pq

    from corpus.balance import unbalanced_clips
    from corpus.build_dir import BuildDir as Dir
    from corpus.catalog import connect
    from corpus.figures import build_figures

    bd = Dir(build_dir)
    if not bd.path.exists():
        fail(f"{build_dir}: no such build dir")
    holder = bd.lock_holder()
    if holder:
        typer.echo(
            f"in use: {holder.get('command')} (pid {holder.get('pid')} on {holder.get('host')}, since "
            f"{holder.get('since')})"
        )
    state = bd.path / "_state"
    for stage in sorted(p.name for p in state.iterdir() if p.is_dir()) if state.exists() else []:
        typer.echo(f"{stage:<16} {len(list((state / stage).glob('*.json'))):>7} unit(s) done")
    for name in bd.table_names():
        typer.echo(f"table {name:<16} {pq.ParquetFile(bd.table_path(name)).metadata.num_rows:>7} row(s)")
    if bd.tables_dir.exists():
        con = connect(bd.path)
        views = [
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
        ]
        con.close()
        typer.echo(f"catalog views: {', '.join(views) or '-'}")
        by_stage: dict[str, int] = {}
        for r in bd.errors():
            by_stage[r["stage"]] = by_stage.get(r["stage"], 0) + 1
        typer.echo("errors by stage: " + (", ".join(f"{k} {v}" for k, v in sorted(by_stage.items())) or "none"))
    if bd.has("videos"):
        f = build_figures(bd)
        typer.echo(
            f"videos {f['videos']}, clips {f['clips']} ({f['sharded_clips']} sharded), duplicate videos "
            f"{f['duplicate_videos']}, duplicate clips {f['duplicate_clips']}, hours {f['hours']:.3f}"
        )
    new = unbalanced_clips(bd.path)
    if new:
        typer.secho(
            f"unbalanced: {len(new)} clip(s) added after the last balance run have no weight (e.g. {new[0]}); "
            f"re-run `surgcorpus balance --build {build_dir}`",
            fg=typer.colors.YELLOW,
        )
    prov = bd.provenance()
    if prov:
        typer.echo(f"last complete build: manifest {prov.get('manifest_sha256')}")
    elif bd.has("videos"):
        typer.echo("no complete build yet (build.lock missing): re-run `surgcorpus build` to resume")


@app.command()
def errors(build_dir: BuildDir = Path("build/corpus"), fmt: Format = "table") -> None:
    """The errors table: stage, video, uri, kind and message of every failure."""
    import duckdb

    from corpus.catalog import query as run_query

    try:
        cols, rows = run_query(build_dir, "SELECT stage, video_id, uri, kind, message FROM errors ORDER BY ALL")
    except (FileNotFoundError, duckdb.Error) as exc:
        fail(f"{build_dir}: no errors table yet ({exc})")
    _print_rows(cols, rows, fmt)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="demo build directory")] = Path("build/demo"),
    workers: Annotated[int, typer.Option("--workers", "-j", help="worker processes (default: all cores)")] = 0,
    real: Annotated[bool, typer.Option("--real/--no-real", help="add ../shared/data/real clips when present")] = True,
) -> None:
    """Generate demo videos (ffmpeg lavfi; with a near duplicate, a trimmed copy, a corrupt file) and build them."""
    from builders.demo import run_demo

    try:
        run_demo(out, workers=workers or None, include_real=real)
    except ToolMissing as exc:
        fail(str(exc))


# ---- sub-apps and commands from their own modules ----
from cli.benchmark import app as benchmark_app  # noqa: E402
from cli.curate import balance_cmd, embed_cmd, leakage_cmd  # noqa: E402
from cli.eval import app as eval_app  # noqa: E402
from cli.hierarchy import app as hierarchy_app  # noqa: E402
from cli.plan import plan_cmd  # noqa: E402
from cli.publish import publish_cmd  # noqa: E402
from cli.train import train_cmd  # noqa: E402

app.add_typer(benchmark_app, name="benchmark")
app.add_typer(hierarchy_app, name="hierarchy")
app.add_typer(eval_app, name="eval")
app.command("embed")(embed_cmd)
app.command("balance")(balance_cmd)
app.command("leakage")(leakage_cmd)
app.command("plan")(plan_cmd)
app.command("train")(train_cmd)
app.command("publish")(publish_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
