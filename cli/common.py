"""Helpers shared by every command module: one way to fail, the shared option types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

BuildDir = Annotated[Path, typer.Option("--build", "-b", help="build directory (the --out of `surgcorpus build`)")]
Format = Annotated[str, typer.Option("--format", "-f", help="output format: table, csv or json")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code`` (2: bad input, 1: the work failed)."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


RetryErrors = Annotated[
    bool,
    typer.Option(
        "--retry-errors",
        help="re-run exactly the units that failed before (transient failures are always re-run)",
    ),
]
