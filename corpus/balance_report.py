"""The balance report: ``report/balance.html`` (self-contained, plots inlined as PNG) and ``report/balance.json``.

Plots: leaf-cluster sizes before and after selection; per-source and per-domain composition before (eligible
clips), after (selected clips) and as sampling mass. Tables: the numbers behind them, exclusion reasons, and the
leakage offenders when ``tables/leakage.parquet`` exists.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from corpus.schemas import table_path

if TYPE_CHECKING:
    from corpus.balance import BalanceResult, BalanceSummary

MAX_LEAKAGE_ROWS = 500


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _cluster_plot(res: BalanceResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    leaf = res.hierarchy.labels[:, 0]
    k = len(res.hierarchy.centroids[0])
    before = np.bincount(leaf, minlength=k)
    after = np.bincount(leaf, weights=res.status == 0, minlength=k)
    order = np.argsort(-before, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(np.arange(k), before[order], label="eligible clips", lw=1.5)
    ax.plot(np.arange(k), after[order], label="selected clips", lw=1.5)
    ax.set_yscale("symlog")
    ax.set_xlabel("leaf cluster (sorted by size)")
    ax.set_ylabel("clips")
    ax.legend()
    ax.set_title(f"{k} leaf clusters")
    out = _png(fig)
    plt.close(fig)
    return out


def _composition_plot(summary: BalanceSummary, key: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(summary.before[key])
    tot_b = max(sum(summary.before[key].values()), 1)
    tot_a = max(sum(summary.after[key].values()), 1)
    series = {
        "before (eligible)": [summary.before[key].get(s, 0) / tot_b for s in names],
        "after (selected)": [summary.after[key].get(s, 0) / tot_a for s in names],
        "sampling mass": [summary.mass[key].get(s, 0.0) for s in names],
    }
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    y = np.arange(len(names))
    h = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        ax.barh(y + i * h, vals, height=h, label=label)
    ax.set_yticks(y + h, names)
    ax.invert_yaxis()
    ax.set_xlabel("share")
    ax.set_title(f"per-{key} composition")
    ax.legend(loc="lower right")
    out = _png(fig)
    plt.close(fig)
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def leakage_section(build_dir: Path) -> str:
    path = table_path(build_dir, "leakage")
    if not path.exists():
        return "<p>No leakage check has been run (<code>surgcorpus leakage</code>).</p>"
    rows = pq.read_table(path).sort_by([("similarity", "descending")]).to_pylist()
    hits = [r for r in rows if r["kind"] == "near_duplicate"]
    shown = rows[:MAX_LEAKAGE_ROWS]
    more = f"; first {MAX_LEAKAGE_ROWS} shown" if len(rows) > len(shown) else ""
    return (
        f"<p>{len(rows)} pretraining clips excluded ({len(hits)} near-duplicates of benchmark val/test clips, "
        f"the rest share a video with one){more}.</p>"
        + _table(
            ["clip_id", "kind", "benchmark clip", "benchmark split", "similarity"],
            [[r["clip_id"], r["kind"], r["bench_clip_id"], r["bench_split"], f"{r['similarity']:.4f}"] for r in shown],
        )
    )


def write_balance_report(build_dir: Path, summary: BalanceSummary, res: BalanceResult, paths) -> Path:
    report = Path(build_dir) / "report"
    report.mkdir(parents=True, exist_ok=True)
    (report / "balance.json").write_text(json.dumps({k: v for k, v in asdict(summary).items()}, indent=2) + "\n")
    comp_rows = []
    for key in ("source", "domain"):
        tb, ta = max(sum(summary.before[key].values()), 1), max(sum(summary.after[key].values()), 1)
        for name in sorted(summary.before[key]):
            b, a = summary.before[key].get(name, 0), summary.after[key].get(name, 0)
            m = summary.mass[key].get(name, 0.0)
            comp_rows.append([key, name, b, f"{b / tb:.3f}", a, f"{a / ta:.3f}", f"{m:.3f}"])
    cfg = summary.config
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>balance report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}</style></head><body>
<h1>Balanced pretraining selection</h1>
<p>{summary.n_selected} of {summary.n_eligible} eligible clips selected (budget {summary.budget}, {summary.n_clips}
clips in the build); hierarchical k-means levels {list(summary.levels)} over embeddings
<code>{html.escape(summary.encoder)}</code>;
temperature {cfg["temperature"]}, seed {cfg["seed"]}, source cap {cfg["source_cap"]}, domain cap {cfg["domain_cap"]},
splits {list(cfg["splits"])}.</p>
<h2>Cluster sizes</h2><img src="data:image/png;base64,{_cluster_plot(res)}">
<h2>Composition</h2><img src="data:image/png;base64,{_composition_plot(summary, "source")}">
<img src="data:image/png;base64,{_composition_plot(summary, "domain")}">
{_table(["by", "name", "eligible", "share", "selected", "share", "sampling mass"], comp_rows)}
<h2>Clips by outcome</h2>{_table(["reason", "clips"], [[k, v] for k, v in summary.reasons.items()])}
<h2>Leakage</h2>{leakage_section(Path(build_dir))}
</body></html>
"""
    out = report / "balance.html"
    tmp = out.with_name(".balance.html.tmp")
    tmp.write_text(doc)
    tmp.replace(out)
    return out
