"""Near-duplicate search on clip embeddings (faiss, never all pairs) and the benchmark leakage check.

The leakage check indexes the benchmark builds' ``val``/``test`` clips (cosine similarity: inner product of
L2-normalised vectors; ``IndexFlatIP``, or ``IndexIVFFlat`` above ``ivf_min`` vectors) and searches it with every
pretraining clip. A pretraining clip whose nearest benchmark clip scores ``>= threshold`` is a ``near_duplicate``;
with ``scope="video"`` (the default) every other clip of its video is excluded too (``same_video``), since the
rest of that video is the rest of a test video. Both builds must be embedded with the same encoder.

The default threshold 0.9 is set for the default encoder: re-encoded copies (other crf, brightness and contrast
changes, rescaling) score above 0.99, a strongly relit copy about 0.93, other moments of the same surgery at most
0.8 (tests/test_leakage.py measures this on real surgical clips).

Writes ``tables/leakage.parquet`` (the offenders) and ``report/leakage.html``. When the build was balanced before,
the balance is rerun with its stored config, so offenders end with ``balanced = false``, ``weight = 0`` and
``reason = "leakage"``; a later ``balance`` run reads the table and excludes them as well.

Example::

    from corpus.leakage import leakage_build
    summary = leakage_build("build/surgrec", ["build/surgrec-bench"])
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus.balance import l2_normalise
from corpus.build_dir import writes_build_dir
from corpus.embeddings import read_embeddings
from corpus.errors import MissingInput
from corpus.schemas import table_path, write_table

LEAKAGE = pa.schema(
    [
        ("clip_id", pa.string()),  # the excluded pretraining clip
        ("video_id", pa.string()),
        ("kind", pa.string()),  # near_duplicate | same_video
        ("bench_clip_id", pa.string()),  # the benchmark clip it (or its video) near-duplicates
        ("bench_build", pa.string()),
        ("bench_split", pa.string()),
        ("similarity", pa.float64()),
        ("encoder", pa.string()),
    ]
)


def build_index(vectors: np.ndarray, ivf_min: int = 200_000, nprobe: int = 16, seed: int = 0):
    """A faiss inner-product index over L2-normalised ``vectors``: exact below ``ivf_min`` rows, else IVF."""
    import faiss

    x = l2_normalise(vectors)
    n, d = x.shape
    if n < ivf_min:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))]
        index.train(train)
        index.nprobe = nprobe
    index.add(x)
    return index


def search(index, queries: np.ndarray, k: int = 1, batch: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """``(similarities, indices)`` of the ``k`` nearest index rows of each query, in batches."""
    q = l2_normalise(queries)
    sims, idx = [], []
    for i in range(0, len(q), batch):
        s, j = index.search(q[i : i + batch], k)
        sims.append(s)
        idx.append(j)
    if not sims:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(sims), np.concatenate(idx)


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, k: int = 10, **index_kw) -> np.ndarray:
    """Pairs ``(i, j, similarity)`` with ``i < j`` and cosine ``>= threshold`` within one set, via each item's ``k``
    nearest neighbours (a clip with more than ``k - 1`` near-duplicates is still linked to ``k - 1`` of them)."""
    index = build_index(vectors, **index_kw)
    sims, idx = search(index, vectors, k=min(k, len(vectors)))
    rows = np.repeat(np.arange(len(vectors)), sims.shape[1])
    cols, s = idx.reshape(-1), sims.reshape(-1)
    keep = (cols >= 0) & (rows < cols) & (s >= threshold)
    out = np.zeros(int(keep.sum()), dtype=[("i", np.int64), ("j", np.int64), ("similarity", np.float32)])
    out["i"], out["j"], out["similarity"] = rows[keep], cols[keep], s[keep]
    return np.unique(out)


@dataclass
class LeakageSummary:
    encoder: str
    n_checked: int
    n_benchmark: int
    n_near_duplicates: int
    n_excluded: int
    offenders: list[dict] = field(default_factory=list)
    rebalanced: bool = False
    report: str = ""


def _benchmark_clips(
    bench_dir: Path, splits: tuple[str, ...], encoder: str
) -> tuple[list[str], list[str], np.ndarray]:
    clips_path = table_path(bench_dir, "clips")
    if not clips_path.exists():
        raise MissingInput(f"{clips_path}: the benchmark build has no clips table")
    clips = pq.read_table(clips_path, columns=["clip_id", "split"])
    clips = clips.filter(pc.is_in(clips["split"], value_set=pa.array(list(splits))))
    try:
        ids, vecs, _ = read_embeddings(bench_dir, encoder)
    except MissingInput as e:
        raise MissingInput(
            f"{e}; embed the benchmark with the same encoder: surgcorpus embed --build {bench_dir} --encoder ..."
        ) from e
    pos = {c: i for i, c in enumerate(ids)}
    split_of = dict(zip(clips["clip_id"].to_pylist(), clips["split"].to_pylist(), strict=True))
    missing = [c for c in split_of if c not in pos]
    if missing:
        raise MissingInput(f"{bench_dir}: {len(missing)} {'/'.join(splits)} clips have no {encoder} embedding")
    keep = sorted(split_of)
    return keep, [split_of[c] for c in keep], vecs[[pos[c] for c in keep]] if keep else vecs[:0]


@writes_build_dir("leakage")
def leakage_build(
    build_dir: str | Path,
    benchmark_dirs: list[str | Path],
    *,
    threshold: float = 0.9,
    scope: str = "video",
    splits: tuple[str, ...] = ("val", "test"),
    encoder: str | None = None,
    rebalance: bool = True,
) -> LeakageSummary:
    """Check a pretraining build against benchmark builds; see the module docstring."""
    if scope not in ("clip", "video"):
        raise ValueError(f"scope must be 'clip' or 'video', got {scope!r}")
    build_dir = Path(build_dir)
    ids, vecs, encoder = read_embeddings(build_dir, encoder)
    clips = pq.read_table(table_path(build_dir, "clips"), columns=["clip_id", "video_id", "split"])
    video_of = dict(zip(clips["clip_id"].to_pylist(), clips["video_id"].to_pylist(), strict=True))
    split_of = dict(zip(clips["clip_id"].to_pylist(), clips["split"].to_pylist(), strict=True))

    best: dict[str, tuple[float, str, str, str]] = {}  # pretraining clip -> (sim, bench clip, bench build, split)
    n_bench = 0
    for bench in benchmark_dirs:
        bench = Path(bench)
        b_ids, b_splits, b_vecs = _benchmark_clips(bench, splits, encoder)
        n_bench += len(b_ids)
        same = bench.resolve() == build_dir.resolve()
        q = [i for i, c in enumerate(ids) if c in video_of and not (same and split_of[c] in splits)]
        if not b_ids or not q:
            continue
        sims, idx = search(build_index(b_vecs), vecs[q], k=1)
        for qi, s, j in zip(q, sims[:, 0].tolist(), idx[:, 0].tolist(), strict=True):
            if j >= 0 and s >= threshold and s > best.get(ids[qi], (-2.0,))[0]:
                best[ids[qi]] = (s, b_ids[j], str(bench), b_splits[j])

    rows = [
        {"clip_id": c, "video_id": video_of[c], "kind": "near_duplicate", "bench_clip_id": b, "bench_build": bb,
         "bench_split": sp, "similarity": s, "encoder": encoder}
        for c, (s, b, bb, sp) in best.items()
    ]  # fmt: skip
    if scope == "video":
        hit_by_video: dict[str, dict] = {}
        for r in sorted(rows, key=lambda r: -r["similarity"]):
            hit_by_video.setdefault(r["video_id"], r)
        for c, v in video_of.items():
            if v in hit_by_video and c not in best:
                rows.append({**hit_by_video[v], "clip_id": c, "kind": "same_video"})
    rows.sort(key=lambda r: r["clip_id"])
    write_table(pa.Table.from_pylist(rows, schema=LEAKAGE), table_path(build_dir, "leakage"))

    summary = LeakageSummary(encoder, len(ids), n_bench, len(best), len(rows), rows)
    summary.report = str(_write_report(build_dir, summary, threshold, scope, splits, benchmark_dirs))
    if rebalance:
        from corpus.balance import balance_build, read_balance_config

        config = read_balance_config(build_dir)
        if config is not None:
            balance_build(build_dir, config)
            summary.rebalanced = True
    return summary


def _write_report(build_dir: Path, s: LeakageSummary, threshold: float, scope: str, splits, benches) -> Path:
    out = build_dir / "report" / "leakage.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<tr><td>{html.escape(r['clip_id'])}</td><td>{r['kind']}</td><td>{html.escape(r['bench_clip_id'])}</td>"
        f"<td>{html.escape(r['bench_split'])}</td><td>{r['similarity']:.4f}</td></tr>"
        for r in sorted(s.offenders, key=lambda r: -r["similarity"])
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>leakage report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}</style></head><body>
<h1>Leakage check</h1>
<p>{s.n_checked} pretraining clips searched against {s.n_benchmark} benchmark {"/".join(splits)} clips of
{", ".join(html.escape(str(b)) for b in benches)} (encoder <code>{html.escape(s.encoder)}</code>, cosine threshold
{threshold}, scope {scope}): {s.n_near_duplicates} near-duplicates, {s.n_excluded} clips excluded from pretraining.</p>
<table><tr><th>pretraining clip</th><th>kind</th><th>benchmark clip</th><th>split</th><th>similarity</th></tr>
{body}</table></body></html>
"""
    tmp = out.with_name(".leakage.html.tmp")
    tmp.write_text(doc)
    tmp.replace(out)
    return out
