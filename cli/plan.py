"""``surgcorpus plan MANIFEST [--by source|license]``: expected vs found videos, hours and frames per source and
domain, or per license, and the overlap between sources (mounted in ``cli/main.py``); the work is
``builders.plan.plan_corpus``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from corpus.errors import ManifestError, ToolMissing


def _num(value: float | None, unknown: int = 0, digits: int = 0) -> str:
    if value is None:
        return "?"
    text = f"{value:,.{digits}f}"
    return f"{text} (+{unknown}?)" if unknown else text


def _print_table(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    from builders.plan import versus_reference

    console = Console(width=200 if not sys.stdout.isatty() else None)
    t = Table(title=f"surgcorpus plan: {plan.manifest}")
    cols = ("source", "domain", "take", "exp. videos", "exp. hours", "exp. frames", "found", "found h", "found fr.")
    for col in cols:
        t.add_column(col, justify="left" if col in ("source", "domain", "take") else "right")
    t.add_column("reference", overflow="fold", max_width=60)

    def row(label: str, domain: str, take: str, f, ref: str = "", total: bool = False) -> None:
        frames = _num(f.expected_frames, f.unknown_frames if total else 0)
        if f.frames_estimated and f.expected_frames is not None:
            frames = "≈" + frames
        found = f"{f.found_videos:,}" + (f" ({f.found_remote:,} remote)" if f.found_remote else "")
        found += f" +{f.overlap_videos:,} planned elsewhere" if f.overlap_videos else ""
        found += f" +{f.held_out_videos:,} held out" if f.held_out_videos else ""
        t.add_row(
            label,
            domain,
            take,
            _num(f.expected_videos, f.unknown_videos if total else 0),
            _num(f.expected_hours, f.unknown_hours if total else 0, 1),
            frames,
            found,
            _num(f.found_hours, digits=2),
            _num(f.found_frames),
            ref,
        )

    for sp in plan.sources:
        take = "+".join(sp.use_splits) if sp.use_splits else "all"
        if sp.excluded is not None:
            take = f"excluded ({sp.excluded})"
        ref = (sp.reference or "no published figures in the manifest") + (f" [{sp.note}]" if sp.note else "")
        row(sp.source, sp.domain, take, sp.figures, ref)
    t.add_section()
    for domain, f in sorted(plan.domains.items()):
        row(f"all {domain}", domain, "", f, total=True)
    t.add_section()
    row("all sources", "", "", plan.total, total=True)
    console.print(t)
    ref, vs = plan.reference, versus_reference(plan.total, plan.reference)

    def pct(x: float | None) -> str:
        return "?" if x is None else f"{100 * x:.1f}%"

    console.print(
        f"reference: {ref.name}\n"
        f"  expected videos {_num(plan.total.expected_videos)} = {pct(vs['expected_videos'])} of {ref.videos:,}; "
        f"expected frames {_num(plan.total.expected_frames)} = {pct(vs['expected_frames'])} of {ref.frames:,} "
        f"({plan.total.unknown_frames} source(s) without a published frame count)\n"
        f"  found videos {plan.total.found_videos:,} = {pct(vs['found_videos'])}; "
        f"found frames {_num(plan.total.found_frames)} = {pct(vs['found_frames'])}"
        + ("" if plan.total.probed_videos else " (run with --probe to count hours and frames of local videos)")
    )
    console.print("'?' unknown (not published); '(+n?)' n sources without the figure; '≈' hours x fps")
    _print_overlap(console, plan)


def _print_overlap(console, plan) -> None:
    from rich.table import Table

    if not plan.overlap:
        console.print("overlap: no video is listed by two sources (among the lists present)")
        return
    t = Table(title="overlap: videos listed by two sources, planned once (in the earlier source)")
    for col in ("planned in", "also listed by", "videos", "by key", "why"):
        t.add_column(col, justify="right" if col == "videos" else "left")
    for o in plan.overlap:
        by = ", ".join(f"{k} {n:,}" for k, n in o["by"].items())
        why = "held out (val/test)" if o["reason"] == "held_out" else "earlier source keeps it"
        t.add_row(o["kept_in"], o["source"], f"{o['videos']:,}", by, why)
    console.print(t)


def _print_licenses(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200 if not sys.stdout.isatty() else None)
    t = Table(title=f"surgcorpus plan --by license: {plan.manifest}")
    cols = ("license", "commercial use", "sources", "exp. videos", "exp. hours", "found", "found h")
    for col in cols:
        t.add_column(col, justify="left" if col in ("license", "commercial use") else "right")
    t.add_column("source names", overflow="fold", max_width=70)
    use = {True: "yes", False: "no (NC)", None: "not cleared"}
    for lic, lp in sorted(plan.licenses.items(), key=lambda kv: -(kv[1].figures.expected_videos or 0)):
        f = lp.figures
        t.add_row(
            lic,
            use[lp.commercial_use],
            str(len(lp.sources)),
            _num(f.expected_videos, f.unknown_videos),
            _num(f.expected_hours, f.unknown_hours, 1),
            f"{f.found_videos:,}",
            _num(f.found_hours, digits=2),
            ", ".join(lp.sources),
        )
    t.add_section()
    f = plan.total
    t.add_row(
        "all",
        "",
        str(sum(len(lp.sources) for lp in plan.licenses.values())),
        _num(f.expected_videos, f.unknown_videos),
        _num(f.expected_hours, f.unknown_hours, 1),
        f"{f.found_videos:,}",
        _num(f.found_hours, digits=2),
        "",
    )
    console.print(t)
    for name, term in plan.excluded.items():
        console.print(f"excluded by exclude_licenses ({term}): {name}")
    console.print("commercial build: only 'yes' rows; exclude_licenses: non-commercial, unknown leaves the others out")


def plan_cmd(
    manifest: Annotated[Path, typer.Argument(help="corpus manifest (YAML)")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    probe: Annotated[
        bool, typer.Option("--probe/--no-probe", help="ffprobe the local videos for their hours and frames")
    ] = False,
    by: Annotated[str, typer.Option("--by", help="table rows: source (and domain) or license")] = "source",
) -> None:
    """Expected (published) vs found (here, now) videos, hours and frames per source and domain (or per license
    with --by license), with totals, the overlap between sources (each video planned once) and the comparison with
    the SurgRec reference build (10,535 videos, 214.5M frames). JSON holds all of it."""
    from builders.plan import plan_corpus
    from corpus.manifest import load_manifest

    if fmt not in ("table", "json"):
        typer.secho(f"unknown --format {fmt!r}: use table or json", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if by not in ("source", "license"):
        typer.secho(f"unknown --by {by!r}: use source or license", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    try:
        m = load_manifest(manifest)
        plan = plan_corpus(m, probe=probe, name=str(manifest), show_progress=fmt == "table")
    except ManifestError as exc:
        typer.secho(f"invalid manifest:\n{exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except ToolMissing as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if fmt == "json":
        sys.stdout.write(json.dumps(plan.to_dict(), indent=1) + "\n")
    elif by == "license":
        _print_licenses(plan)
    else:
        _print_table(plan)
    for e in plan.errors:
        typer.secho(f"warning: {e.message}", fg=typer.colors.YELLOW, err=True)
