"""``surgcorpus publish``: upload a finished build's shards and tables to the Hugging Face Hub."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from cli.common import fail


def publish_cmd(
    build: Annotated[Path, typer.Argument(help="build directory (the --out of `surgcorpus build`)")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo for the shards: ORG/NAME")],
    private: Annotated[bool, typer.Option("--private/--public", help="create the repos private")] = False,
    revision: Annotated[str, typer.Option("--revision", help="branch to commit to (created when missing)")] = "main",
    tables_repo_id: Annotated[
        str | None, typer.Option("--tables-repo-id", help="Hub dataset repo for the tables (default: ORG/NAME-tables)")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="corpus manifest for the citations (default: the one in build.lock)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the files, sizes and cards; upload nothing")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars")] = True,
) -> None:
    """Publish shards (WebDataset, to ORG/NAME) and tables (Parquet, to ORG/NAME-tables), each with a generated
    dataset card, through huggingface_hub. Resumable: re-running sends only what the Hub lacks. The token comes from
    HF_TOKEN or `hf auth login`, and is never printed."""
    from builders.publish import PublishError, UploadError, plan_publish
    from builders.publish import publish as run_publish

    try:
        if dry_run:  # per-split tables are staged in a temporary folder: a dry run writes nothing into the build
            with tempfile.TemporaryDirectory(prefix="surgcorpus-publish-") as tmp:
                plan = plan_publish(
                    build, repo_id, revision=revision, private=private, tables_repo_id=tables_repo_id,
                    staging=tmp, manifest=manifest,
                )  # fmt: skip
                typer.echo(plan.describe())
            typer.echo("\n--dry-run: nothing uploaded")
            return
        plan = plan_publish(
            build, repo_id, revision=revision, private=private, tables_repo_id=tables_repo_id, manifest=manifest
        )
        result = run_publish(plan, show_progress=progress)
    except PublishError as exc:
        fail(str(exc), code=1 if isinstance(exc, UploadError) else 2)
    for repo in plan.repos:
        commits = result.commits[repo.repo_id]
        deleted = result.deleted[repo.repo_id]
        typer.echo(
            f"{repo.repo_id}@{plan.revision} ({repo.kind}): {len(repo.files) + 1} file(s); "
            f"{len(commits)} new commit(s){f', {len(deleted)} stale file(s) deleted' if deleted else ''}"
        )
