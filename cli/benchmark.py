"""``surgcorpus benchmark``: plan, audit and build the SurgRec downstream benchmark from native annotations.

surgcorpus benchmark clips DATASET --root RAW --out FILE.csv      planned clips as SurgRec rows (no video opened)
surgcorpus benchmark audit DATASET --root RAW --splits DIR        published splits vs native annotations
surgcorpus benchmark audit all --root RAW --splits DIR --report P every dataset, plus a Markdown report page
surgcorpus benchmark build MANIFEST --root RAW --out DIR          cut clips, write shards and SurgRec CSVs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import RetryErrors, fail
from cli.executor import ExecutorKind, RayAddress, make_executor
from corpus.errors import SurgcorpusError

app = typer.Typer(
    rich_markup_mode=None, help="SurgRec downstream benchmark: clip plans, split audit, build.", no_args_is_help=True
)

Manifest = Annotated[Path, typer.Option("--manifest", "-m", help="benchmark manifest (default: surgrec16)")]
Root = Annotated[Path, typer.Option("--root", "-r", help="the dataset's raw folder (annotation files)")]


def _spec(dataset: str, manifest: Path | None):
    from corpus.benchmark.spec import default_benchmark, load_benchmark

    return load_benchmark(manifest or default_benchmark()).get(dataset)


@app.command()
def clips(
    dataset: Annotated[str, typer.Argument(help="dataset name (e.g. cataract-101, jigsaws)")],
    root: Root,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write, one '<path> <label id>' row per clip")],
    prefix: Annotated[str, typer.Option(help="text before each path, e.g. __DATA_ROOT__/")] = "",
    manifest: Manifest = None,
) -> None:
    """Write every planned clip of DATASET as a SurgRec row; reads annotation files only."""
    from corpus.benchmark.plan import plan, surgrec_row

    try:
        spec = _spec(dataset, manifest)
        planned = plan(spec, root)
    except (SurgcorpusError, KeyError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    skipped = [c for c in planned if c.label_id is None]
    out.write_text("".join(surgrec_row(c, prefix) + "\n" for c in planned if c.label_id is not None))
    typer.echo(
        f"{out}: {len(planned) - len(skipped)} clips"
        + (f" ({len(skipped)} with unmapped labels left out)" if skipped else "")
    )
    depends = [c for c in planned if c.depends_on_video and c.label_id is not None]
    if depends:
        typer.echo(
            f"{len(depends)} rows depend on the video length (no video is opened here; `benchmark build` probes the "
            "raw videos and may end them earlier, which changes their names):"
        )
        for c in depends:
            typer.echo(f"  {c.path}: {c.depends_on_video}")
    if spec.naming == "multibypass140":
        typer.echo("frame numbers assume 25 fps; a raw video at another rate gets other frame numbers when built")


def _audit_one(spec, root: Path | None, splits: Path | None) -> dict:
    from corpus.benchmark.audit import audit, read_splits
    from corpus.benchmark.plan import plan
    from corpus.benchmark.spec import split_dir

    folder = split_dir(spec, splits)
    planned = plan(spec, root) if root is not None and spec.adapter and spec.naming else None
    report = audit(spec, read_splits(folder), planned, folder)
    if root is not None and planned is None:
        report["annotation_not_checked_because"] = spec.notes or f"{spec.name} has no adapter or clip naming scheme"
    return report


def _print(reports: list[dict], fmt: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from corpus.benchmark.audit import findings, to_json

    if fmt == "json":
        typer.echo(to_json(reports[0] if len(reports) == 1 else reports))
        return
    table = Table("dataset", "train", "val", "test", "val=test", "test maj. acc.", "annotation", "findings")
    for r in reports:
        table.add_row(
            r["dataset"],
            *(str(r["rows"][s]) for s in ("train", "val", "test")),
            "yes" if r["val_equals_test"] else "no",
            str(r["class_balance"]["test"]["majority_class_accuracy"]),
            "checked" if r["annotation_checked"] else "-",
            "\n".join(findings(r)) or "none",
        )
    Console(width=200).print(table)


def _with_splits(bench, splits: Path, root: Path | None, root_for: list[str] | None) -> list[tuple]:
    """(dataset spec, its raw folder or None) for every dataset of ``bench`` with published splits in ``splits``:
    the folder from ``--root-for NAME=PATH``, else ``<root>/<name>`` when it exists."""
    roots = dict(item.split("=", 1) for item in root_for or [])
    todo = []
    for spec in bench.sources:
        if not (splits / spec.dataset / "train.csv").is_file():
            continue
        raw = roots.get(spec.name) or roots.get(spec.dataset)
        if raw is None and root is not None and (root / spec.name).is_dir():
            raw = root / spec.name
        todo.append((spec, Path(raw) if raw else None))
    return todo


@app.command("audit")
def audit_cmd(
    dataset: Annotated[str, typer.Argument(help="dataset name, or 'all'")],
    splits: Annotated[
        Path, typer.Option("--splits", "-s", help="folder of published split CSVs (<dataset>/<split>.csv)")
    ],
    root: Annotated[
        Path | None, typer.Option("--root", "-r", help="raw folder (for 'all': a folder of <dataset name> folders)")
    ] = None,
    root_for: Annotated[
        list[str] | None, typer.Option("--root-for", help="NAME=PATH: raw folder of one dataset (with 'all')")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    report: Annotated[Path | None, typer.Option(help="with 'all': Markdown report page to write")] = None,
    manifest: Manifest = None,
) -> None:
    """Audit published splits: label mismatches vs native annotation, counts, val==test, leakage, balance."""
    from corpus.benchmark.audit import report_page
    from corpus.benchmark.spec import default_benchmark, load_benchmark

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json (got {fmt!r})")
    try:
        if dataset != "all":
            reports = [_audit_one(_spec(dataset, manifest), root, splits)]
        else:
            bench = load_benchmark(manifest or default_benchmark())
            reports = [_audit_one(spec, raw, splits) for spec, raw in _with_splits(bench, splits, root, root_for)]
            if report is not None:
                report.parent.mkdir(parents=True, exist_ok=True)
                report.write_text(report_page(reports))
    except (SurgcorpusError, KeyError) as exc:
        fail(str(exc))
    _print(reports, fmt)
    if report is not None and dataset == "all":
        typer.echo(f"report: {report}", err=True)


@app.command()
def build(
    manifest: Annotated[Path, typer.Argument(help="benchmark manifest or one benchmark source manifest")],
    root: Annotated[Path, typer.Option("--root", "-r", help="raw folder (benchmark: a folder of <name> folders)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (one build dir per dataset)")],
    splits: Annotated[Path | None, typer.Option("--splits", "-s", help="folder of published split CSVs")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="local worker processes")] = 1,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    retry_errors: RetryErrors = False,
    executor: ExecutorKind = "local",
    address: RayAddress = None,
) -> None:
    """Probe the raw videos, cut the published clips (frame-exact, H.264), write shards, tables, catalog, CSVs."""
    import yaml

    from builders.benchmark import build_dataset
    from corpus.benchmark.spec import load_benchmark, load_benchmark_source

    try:
        if "sources" in (yaml.safe_load(manifest.read_text()) or {}):
            todo = [
                (s, root / s.name)
                for s in load_benchmark(manifest).sources
                if (root / s.name).is_dir() and s.adapter and s.naming
            ]
        else:
            todo = [(load_benchmark_source(manifest), root)]
        runner = make_executor(executor, address, workers, progress, retry_errors)  # one for every dataset
        for spec, raw in todo:
            res = build_dataset(
                spec,
                raw,
                out,
                splits,
                workers=workers,
                show_progress=progress,
                retry_errors=retry_errors,
                executor=runner,
            )
            kinds = sorted({e.kind for e in res.errors})
            retried = f", {res.retried} failed unit(s) retried" if retry_errors else ""
            typer.echo(
                f"{spec.name}: {res.clips} clips from {res.videos} videos ({res.cut} cut now{retried}), "
                f"{res.shards} shards, "
                f"{len(res.errors)} errors{' (' + ', '.join(kinds) + ')' if kinds else ''} -> {res.build_dir}"
            )
    except (SurgcorpusError, KeyError) as exc:
        fail(str(exc))


@app.command("fix")
def fix_cmd(
    dataset: Annotated[str, typer.Argument(help="dataset name, or 'all'")],
    splits: Annotated[
        Path, typer.Option("--splits", "-s", help="folder of published split CSVs (<dataset>/<split>.csv); read only")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the corrected splits (<dataset>/<split>.csv)")],
    root: Annotated[
        Path | None, typer.Option("--root", "-r", help="raw folder (for 'all': a folder of <dataset name> folders)")
    ] = None,
    root_for: Annotated[
        list[str] | None, typer.Option("--root-for", help="NAME=PATH: raw folder of one dataset (with 'all')")
    ] = None,
    val_fraction: Annotated[float, typer.Option(help="share of train clips carved into val where val = test")] = 0.1,
    leaking: Annotated[str, typer.Option(help="a video in several splits: move (to its majority split) or drop")] = (
        "move"
    ),
    seed: Annotated[int, typer.Option(help="seed of the validation carve")] = 0,
    manifest: Manifest = None,
) -> None:
    """Corrected splits (real val, no video on two sides, annotated labels, no artefact classes) + diff reports."""
    from corpus.benchmark.audit import read_splits
    from corpus.benchmark.fix import fix, write_fixed
    from corpus.benchmark.plan import plan
    from corpus.benchmark.spec import default_benchmark, load_benchmark, split_dir

    if leaking not in ("move", "drop"):
        fail(f"--leaking must be move or drop (got {leaking!r})")
    if out.resolve() == splits.resolve() or (out / "x").resolve().is_relative_to(splits.resolve()):
        fail(f"--out {out} is inside --splits {splits}: the published splits are never overwritten")
    try:
        bench = load_benchmark(manifest or default_benchmark())
        if dataset != "all":
            todo = [(bench.get(dataset), root)]
        else:
            todo = _with_splits(bench, splits, root, root_for)
        lines = []
        for spec, raw in todo:
            planned = plan(spec, raw) if raw is not None and spec.adapter and spec.naming else None
            rows, report = fix(
                spec,
                read_splits(split_dir(spec, splits)),
                planned,
                val_fraction=val_fraction,
                seed=seed,
                leaking=leaking,
            )
            folder = write_fixed(spec, rows, report, out)
            counts = ", ".join(f"{n} {a}" for a, n in sorted(report["counts"].items())) or "no change"
            fixed = "/".join(str(report["rows_fixed"][s]) for s in ("train", "val", "test"))
            lines.append(f"| {spec.name} | {fixed} | {counts} | {'yes' if planned else 'no'} |")
            typer.echo(f"{spec.name}: train/val/test {fixed} ({counts}) -> {folder}")
        if dataset == "all":
            summary = out / "fix_report.md"
            summary.write_text(
                "# Corrected SurgRec splits\n\n| dataset | train/val/test | changes | annotation checked |\n"
                "|---|---|---|---|\n" + "\n".join(lines) + "\n"
            )
            typer.echo(f"report: {summary}")
    except (SurgcorpusError, KeyError) as exc:
        fail(str(exc))
