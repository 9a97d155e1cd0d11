"""``surgcorpus train <recipe>``: pretrain a registered recipe (``trainers.recipe.RECIPES``) on a build's shards.

One command for every recipe; the recipe is looked up in the registry, so a new recipe needs no change here.
Under DDP: ``torchrun --nproc_per_node=N -m cli.main train mae --config ... --build ... --out ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import fail
from corpus.errors import SurgcorpusError


def train_cmd(
    recipe: Annotated[str, typer.Argument(help="a key of trainers.recipe.RECIPES: mae, jepa, hierskp")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: trainers/configs/<recipe>-tiny.yaml)")
    ] = None,
    build: Annotated[Path, typer.Option("--build", "-b", help="build dir whose shards to train on")] = Path(
        "build/corpus"
    ),
    out: Annotated[Path, typer.Option("--out", "-o", help="run dir: checkpoints, last.pt, metrics.jsonl")] = Path(
        "runs/train"
    ),
    steps: Annotated[
        int | None, typer.Option(help="stop after this optimizer step (the schedule keeps run.steps of the config)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="continue from OUT/last.pt exactly")] = False,
    workers: Annotated[int | None, typer.Option(help="DataLoader workers (overrides data.num_workers)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda when present, else cpu)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the model's parameter counts and exit")] = False,
) -> None:
    """Pretrain a recipe (SurgRec-MAE, SurgRec-JEPA, ...) streaming clips from BUILD; resumable with --resume."""
    from trainers.config import load_config
    from trainers.loop import describe, train
    from trainers.recipe import RECIPES, default_config

    if recipe not in RECIPES:
        fail(f"unknown recipe {recipe!r}: use one of {', '.join(sorted(RECIPES))}")
    config = config or default_config(recipe)
    overrides = {"data.num_workers": workers} if workers is not None else {}
    try:
        cfg = load_config(config, **overrides)
        if cfg.recipe != recipe:
            fail(f"{config}: is a config for recipe {cfg.recipe!r}, not {recipe!r}")
        if dry_run:
            typer.echo(json.dumps(describe(cfg)))
            return
        result = train(cfg, build, out, resume=resume, stop_at=steps, progress=progress, device=device)
    except SurgcorpusError as e:
        fail(f"error: {e}")
    except KeyboardInterrupt:
        fail(f"interrupted: resume from the last checkpoint with --resume ({out / 'last.pt'})", code=130)
    if result.rank == 0:
        typer.echo(
            f"{recipe}: step {result.step}, loss {result.loss:.4f}, {result.clips_per_s:.1f} clips/s; "
            f"checkpoint {result.checkpoint}, metrics {out / 'metrics.jsonl'}"
        )
