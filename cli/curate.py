"""CLI commands of the curation step: ``embed``, ``balance`` and ``leakage`` (mounted in ``cli/main.py``).

Order: ``surgcorpus embed --build B`` (and the benchmark builds), ``surgcorpus leakage --build B --benchmark BB``,
``surgcorpus balance --build B``. Each parses its options and calls one library function.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from cli.common import fail
from cli.executor import ExecutorKind, RayAddress, make_executor
from corpus.errors import SurgcorpusError

app = typer.Typer(
    rich_markup_mode=None,
    help="Embed clips, balance a pretraining corpus, check benchmark leakage.",
    no_args_is_help=True,
)


@app.command("embed")
def embed_cmd(
    build: Path = typer.Option(..., "--build", help="build dir (with tables/clips.parquet)"),
    encoder: str = typer.Option("default", help="'default' (CPU frame statistics) or a trainer checkpoint path"),
    batch_size: int = typer.Option(32, show_default=True),
    workers: int = typer.Option(1, show_default=True, help="decode processes"),
    limit: int | None = typer.Option(None, help="embed at most this many new clips (a trial run)"),
    executor: ExecutorKind = "local",
    address: RayAddress = None,
) -> None:
    """Embed every clip not yet embedded by this encoder into tables/embeddings.parquet (resumable)."""
    from builders.stages.embed import embed_build

    try:
        s = embed_build(
            build,
            encoder,
            batch_size=batch_size,
            workers=workers,
            limit=limit,
            executor=make_executor(executor, address, workers),
        )
    except (SurgcorpusError, ValueError) as e:
        fail(f"error: {e}", 1)
    typer.echo(
        f"{s.encoder}: {s.n_embedded} embedded, {s.n_skipped} already done, {s.n_errors} errors "
        f"({s.n_clips} clips, {s.seconds:.1f} s)"
    )
    if s.n_errors:
        raise typer.Exit(2)


@app.command("balance")
def balance_cmd(
    build: Path = typer.Option(..., "--build", help="build dir (clips and embeddings tables)"),
    seed: int = typer.Option(0, show_default=True),
    temperature: float = typer.Option(0.5, show_default=True, help="0: equal share per cluster, 1: no balancing"),
    k: list[int] = typer.Option(None, "--k", help="clusters per level, bottom-up; repeat (--k 1000 --k 32)"),
    fraction: float = typer.Option(1.0, show_default=True, help="budget as a fraction of eligible clips"),
    budget: int | None = typer.Option(None, help="budget in clips (overrides --fraction)"),
    source_cap: float | None = typer.Option(None, help="max share of the budget per source"),
    domain_cap: float | None = typer.Option(None, help="max share of the budget per domain"),
    split: list[str] = typer.Option(["train"], "--split", show_default=True, help="eligible splits; repeat"),
    encoder: str | None = typer.Option(None, help="encoder id when the table holds several"),
    niter: int = typer.Option(20, show_default=True, help="k-means iterations per level"),
) -> None:
    """Cluster-balanced selection: tables/clusters.parquet, tables/clip_balance.parquet, report/balance.html."""
    from corpus.balance import BalanceConfig, balance_build

    try:
        cfg = BalanceConfig(
            levels=tuple(k) if k else None,
            seed=seed,
            temperature=temperature,
            fraction=fraction,
            budget=budget,
            source_cap=source_cap,
            domain_cap=domain_cap,
            splits=tuple(split),
            niter=niter,
            encoder=encoder,
        )
        s = balance_build(build, cfg)
    except (SurgcorpusError, ValueError) as e:
        fail(f"error: {e}", 1)
    typer.echo(f"{s.n_selected}/{s.n_eligible} eligible clips selected (budget {s.budget}, levels {list(s.levels)})")
    for name, n in s.before["source"].items():
        typer.echo(
            f"  {name}: {n} -> {s.after['source'].get(name, 0)} clips, mass {s.mass['source'].get(name, 0):.3f}"
        )
    typer.echo(f"report: {s.report}")


@app.command("leakage")
def leakage_cmd(
    build: Path = typer.Option(..., "--build", help="pretraining build dir"),
    benchmark: list[Path] = typer.Option(..., "--benchmark", help="benchmark build dir; repeat for several"),
    threshold: float = typer.Option(0.9, show_default=True, help="cosine similarity of a near-duplicate"),
    scope: str = typer.Option("video", show_default=True, help="video: exclude the offender's whole video; clip"),
    split: list[str] = typer.Option(["val", "test"], "--split", show_default=True, help="benchmark splits; repeat"),
    encoder: str | None = typer.Option(None, help="encoder id when the table holds several"),
    as_json: bool = typer.Option(False, "--json/--no-json", help="print the offenders as JSON"),
) -> None:
    """Exclude pretraining clips that near-duplicate a benchmark val/test clip (tables/leakage.parquet)."""
    from corpus.leakage import leakage_build

    try:
        s = leakage_build(build, benchmark, threshold=threshold, scope=scope, splits=tuple(split), encoder=encoder)
    except (SurgcorpusError, ValueError) as e:
        fail(f"error: {e}", 1)
    if as_json:
        typer.echo(json.dumps(asdict(s), indent=2))
        return
    typer.echo(
        f"{s.n_checked} clips vs {s.n_benchmark} benchmark clips: {s.n_near_duplicates} near-duplicates, "
        f"{s.n_excluded} excluded{' (balance rerun)' if s.rebalanced else ''}; report: {s.report}"
    )
    for r in sorted(s.offenders, key=lambda r: -r["similarity"])[:20]:
        typer.echo(f"  {r['clip_id']} ~ {r['bench_clip_id']} ({r['bench_split']}, {r['similarity']:.3f}, {r['kind']})")


if __name__ == "__main__":
    app()
