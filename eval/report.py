"""Results of one run (one checkpoint, one protocol) as ``results.md``, ``results.csv`` and ``results.png``.

Rows are flat dicts; every classification row carries the majority-class and chance baselines and a ``collapsed``
column (the reason, empty when the run did not collapse), so that tables of different checkpoints line up column by
column. :func:`write_comparison` puts the published-split and corrected-split runs of one checkpoint side by side.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from corpus.atomic import write_text_atomic

PERCENT = ("accuracy", "macro_", "top5", "jaccard", "majority", "chance", "test_majority", "mAP", "R@")


def _cell(key: str, value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and any(key.startswith(p) or p in key for p in PERCENT):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    return buf.getvalue()


def to_markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: Path, metric: str, label: str = "dataset", title: str = "") -> None:
    """Bars of ``metric`` per row, majority-class (▬) and chance (·) markers, collapsed runs hatched in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(rows) + 2), 3.6))
    xs = range(len(rows))
    vals = [100 * (r.get(metric) or 0.0) for r in rows]
    colors = ["#d62728" if r.get("collapsed") else "#1f77b4" for r in rows]
    bars = ax.bar(xs, vals, color=colors)
    for b, r in zip(bars, rows, strict=True):
        if r.get("collapsed"):
            b.set_hatch("//")
    for key, marker, name in (("majority_accuracy", "_", "majority class"), ("chance_accuracy", ".", "chance")):
        pts = [(x, 100 * r[key]) for x, r in zip(xs, rows, strict=True) if r.get(key) is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, s=300 if marker == "_" else 60, c="k", label=name)
    ax.set_xticks(list(xs), [str(r.get(label, "")) for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or metric, fontsize=9)
    if any(r.get("majority_accuracy") is not None for r in rows):
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_run(
    out: str | Path, rows: Sequence[dict], columns: Sequence[str], title: str, metric: str, label: str = "dataset"
) -> dict[str, Path]:
    """Write ``out/results.{md,csv,png}``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "results.md", "csv": out / "results.csv", "png": out / "results.png"}
    collapsed = [r[label] for r in rows if r.get("collapsed")]
    note = (
        f"\n**Collapsed** (a single class predicted, or accuracy equal to the test majority-class rate): "
        f"{', '.join(map(str, collapsed))}.\n"
        if collapsed
        else ""
    )
    write_text_atomic(
        paths["md"], f"# {title}\n\n" + to_markdown(rows, columns) + note + f"\n![{metric}](results.png)\n"
    )
    write_text_atomic(paths["csv"], to_csv(rows, columns))
    plot(rows, paths["png"], metric, label, title)
    return paths


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_comparison(out: str | Path, runs: Sequence[str] = ("published", "fixed")) -> Path | None:
    """``out/comparison.md``: the accuracy, majority rate and collapse flag of each run's datasets side by side."""
    out = Path(out)
    if not all((out / r / "results.csv").exists() for r in runs):
        return None
    tables = {r: {row["dataset"]: row for row in read_csv(out / r / "results.csv")} for r in runs}
    datasets = sorted({d for t in tables.values() for d in t})
    head = ["dataset"] + [f"{r} {c}" for r in tables for c in ("accuracy", "majority", "collapsed")]
    lines = ["# Published vs corrected splits", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in datasets:
        cells = [d]
        for t in tables.values():
            row = t.get(d, {})
            cells += [
                _cell("accuracy", float(row["accuracy"])) if row.get("accuracy") else "",
                _cell("majority_accuracy", float(row["majority_accuracy"])) if row.get("majority_accuracy") else "",
                "yes" if row.get("collapsed") else ("no" if row else ""),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return write_text_atomic(out / "comparison.md", "\n".join(lines) + "\n")
