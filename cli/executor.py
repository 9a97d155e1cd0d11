"""The ``--executor local|ray [--address …]`` options shared by build, embed, benchmark build and hierarchy shard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import fail

if TYPE_CHECKING:  # the executors are imported by the commands that run one, not by `surgcorpus --help`
    from builders.executors.base import Executor

ExecutorKind = Annotated[
    str,
    typer.Option(
        "--executor", help="local: a process pool here; ray: Ray tasks (a local Ray, or the cluster at --address)"
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster (auto, HOST:PORT or ray://HOST:PORT); the build dir must be on a path every node mounts",
    ),
]


def make_executor(
    kind: str, address: str | None, workers: int | None, show_progress: bool = True, retry_errors: bool = False
) -> Executor | None:
    """The executor for ``--executor``; None for ``local`` (each library function then makes its own process pool).
    A local Ray started here stops when the process exits."""
    if kind == "local":
        if address:
            fail("--address needs --executor ray")
        return None
    if kind == "ray":
        from builders.executors.ray import RayExecutor

        return RayExecutor(
            address=address, workers=workers or None, show_progress=show_progress, retry_errors=retry_errors
        )
    fail(f"unknown --executor {kind!r}: use local or ray")
