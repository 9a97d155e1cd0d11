"""``surgcorpus eval``: score files (detections, similarity matrices) and checkpoints (SurgRec-16, OpenSurgery).

surgcorpus eval detection --gt GT.json --pred PRED.json       ActivityNet mAP at tIoU 0.3..0.7 and average_mAP
surgcorpus eval retrieval --sim MATRIX.npy                    R@1/5/10 and median rank, both directions
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import fail
from corpus.errors import SurgcorpusError

app = typer.Typer(
    rich_markup_mode=None,
    help="Evaluation: metrics on files, linear probes and zero-shot tasks on checkpoints.",
    no_args_is_help=True,
)

EvalFormat = Annotated[str, typer.Option("--format", "-f", help="output format: table or json")]


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        fail(f"--format must be table or json (got {fmt!r})")


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*header, title=title)
    for r in rows:
        t.add_row(*r)
    Console(width=160).print(t)


@app.command()
def detection(
    gt: Annotated[Path, typer.Option("--gt", help="ground truth, ActivityNet JSON ({'database': ...})")],
    pred: Annotated[Path, typer.Option("--pred", help="predictions, ActivityNet JSON ({'results': ...})")],
    subset: Annotated[str | None, typer.Option(help="score only ground-truth videos of this subset")] = None,
    fmt: EvalFormat = "table",
) -> None:
    """Temporal action localization: ActivityNet mAP at tIoU 0.3, 0.4, 0.5, 0.6, 0.7 and their mean (average_mAP)."""
    from eval.activitynet import read_ground_truth, read_predictions
    from eval.metrics import detection_map

    _check_format(fmt)
    try:
        result = detection_map(read_ground_truth(gt, subset), read_predictions(pred))
    except SurgcorpusError as exc:
        fail(str(exc))
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    keys = [k for k in result if k.startswith("mAP@")] + ["average_mAP"]
    _table(f"{pred} vs {gt}", ["metric", "value (%)"], [[k, f"{100 * result[k]:.2f}"] for k in keys])


@app.command()
def retrieval(
    sim: Annotated[Path, typer.Option("--sim", help="similarity matrix .npy: sim[text i, video j], i matches i")],
    fmt: EvalFormat = "table",
) -> None:
    """Retrieval: R@1/5/10, median and mean rank, text→video (rows) and video→text (columns); ties rank last."""
    import numpy as np

    from eval.metrics import retrieval_metrics

    _check_format(fmt)
    try:
        matrix = np.load(sim, allow_pickle=False)
        result = retrieval_metrics(matrix)
    except FileNotFoundError:
        fail(f"{sim}: file not found")
    except ValueError as exc:
        fail(f"{sim}: {exc}")
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    cols = list(result["chance"])
    rows = [
        [d, *(f"{100 * v:.2f}" if k.startswith("R@") else f"{v:g}" for k, v in result[d].items())]
        for d in ("text_to_video", "video_to_text", "chance")
    ]
    _table(
        f"{sim} ({result['n']} pairs)",
        ["direction", *(c + (" (%)" if c.startswith("R@") else "") for c in cols)],
        rows,
    )


@app.command()
def surgrec16(
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", "-c", help="trainer checkpoint, or 'default' (CPU encoder)")
    ],
    benchmark: Annotated[Path, typer.Option("--benchmark", "-b", help="`benchmark build` output (<dataset>/ dirs)")],
    splits: Annotated[
        str, typer.Option(help="published (SurgRec's protocol reproduced) or fixed (corrected)")
    ] = "fixed",
    out: Annotated[Path, typer.Option("--out", "-o", help="results folder")] = Path("build/eval/surgrec16"),
    cache: Annotated[Path | None, typer.Option(help="feature cache (default: OUT/features)")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="only these datasets (repeat)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the probe (view draws, init, order)")] = 0,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="benchmark manifest (default: surgrec16)")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars")] = True,
) -> None:
    """SurgRec-16 linear probe on frozen features, with majority/chance baselines and collapse flags."""
    from corpus.benchmark.spec import default_benchmark, load_benchmark
    from eval.report import to_markdown
    from eval.surgrec16 import COLUMNS, evaluate

    if splits not in ("published", "fixed"):
        fail(f"--splits must be published or fixed (got {splits!r})")
    try:
        bench = load_benchmark(manifest or default_benchmark())
        rows, run_dir = evaluate(checkpoint, benchmark, bench, splits, out, cache, dataset, seed, progress)
    except SurgcorpusError as exc:
        fail(str(exc))
    keep = ["dataset", "n_train", "n_val", "n_test", "accuracy", "macro_f1", "majority_accuracy", "chance_accuracy",
            "collapsed"]  # fmt: skip
    typer.echo(to_markdown(rows, [c for c in COLUMNS if c in keep]))
    typer.echo(f"results: {run_dir}/results.md")


@app.command()
def opensurgery(
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", "-c", help="trainer checkpoint, or 'default' (CPU encoder)")
    ],
    build: Annotated[Path, typer.Option("--build", "-b", help="hierarchy build dir (hierarchy import/split/shard)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="results folder")] = Path("build/eval/opensurgery"),
    window_s: Annotated[float, typer.Option(help="window length (s) of the localization head")] = 1.0,
    views: Annotated[str, typer.Option(help="views per operation clip: TEMPORALxSPATIAL (SurgRec: 5x3)")] = "5x3",
    seed: Annotated[int, typer.Option(help="seed of the probes")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars")] = True,
) -> None:
    """OpenSurgery tasks: operation recognition (probe; zero-shot per prompt), localization (mAP), retrieval."""
    from eval.opensurgery import COLUMNS, evaluate
    from eval.report import to_markdown
    from eval.views import ViewSpec

    t, _, sp = views.partition("x")
    if not (t.isdigit() and sp.isdigit() and int(t) > 0 and int(sp) > 0):
        fail(f"--views must be TEMPORALxSPATIAL, e.g. 5x3 (got {views!r})")
    spec = ViewSpec(temporal=int(t), spatial=int(sp))
    try:
        rows, run_dir = evaluate(
            checkpoint, build, out, window_s=window_s, views=spec, seed=seed, show_progress=progress
        )
    except SurgcorpusError as exc:
        fail(str(exc))
    keep = ["task", "variant", "n_test", "accuracy", "majority_accuracy", "average_mAP", "t2v_R@1", "v2t_R@1",
            "collapsed", "note"]  # fmt: skip
    typer.echo(to_markdown(rows, [c for c in COLUMNS if c in keep]))
    typer.echo(f"results: {run_dir}/results.md")
