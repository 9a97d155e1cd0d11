"""Cluster-balanced selection on a generated imbalanced corpus: source A has 10x the clips of B, C and D.

Embeddings are synthetic clustered vectors (written to the real embeddings table): every source occupies two
well-separated blobs of its own, so balancing across clusters is what balances the sources.
Stated target and tolerance: with temperature 0 every one of the 8 blobs gets an equal share, i.e. each source
25% of the selection, within 3 percentage points (before balancing A holds 1000/1300 = 77%).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.balance import BalanceConfig, balance_build, balanced_order, read_balance_config
from corpus.embeddings import embeddings_table
from corpus.schemas import table_path, write_rows, write_table

pytest.importorskip("faiss")

SOURCES = {"A": ("laparoscopy", 1000), "B": ("laparoscopy", 100), "C": ("cataract", 100), "D": ("endoscopy", 100)}
TOL = 0.03


def make_corpus(build: Path, dim: int = 32, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    clips, vecs, ids = [], [], []
    blob = 0
    for source, (domain, n) in SOURCES.items():
        for i in range(n):
            vid = f"{source}/v{i % 10:02d}"
            cid = f"{vid}/{i:09d}"
            clips.append({"clip_id": cid, "video_id": vid, "source": source, "domain": domain, "split": "train"})
            ids.append(cid)
            vecs.append(centres[blob + (i % 2)] + 0.05 * rng.standard_normal(dim))
        blob += 2
    # ineligible rows: a test-split clip, a duplicate, a clip without an embedding
    clips.append(
        {"clip_id": "B/x/000000000", "video_id": "B/x", "source": "B", "domain": "laparoscopy", "split": "test"}
    )
    ids.append("B/x/000000000")
    vecs.append(centres[2])
    clips.append({"clip_id": "C/y/000000000", "video_id": "C/y", "source": "C", "domain": "cataract", "split": "train",
                  "dup_of": "C/v00/000000000"})  # fmt: skip
    ids.append("C/y/000000000")
    vecs.append(centres[4])
    clips.append(
        {"clip_id": "D/z/000000000", "video_id": "D/z", "source": "D", "domain": "endoscopy", "split": "train"}
    )
    write_rows(build, "clips", clips, sort_by=("clip_id",))
    write_table(embeddings_table(ids, "synthetic-v1", np.asarray(vecs, np.float32)), table_path(build, "embeddings"))


def shares(build: Path) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    bal = {r["clip_id"]: r for r in pq.read_table(table_path(build, "clip_balance")).to_pylist()}
    clips = pq.read_table(table_path(build, "clips")).to_pylist()
    sel = [c["source"] for c in clips if bal[c["clip_id"]]["balanced"]]
    count = {s: sel.count(s) / len(sel) for s in SOURCES}
    mass = {s: sum(bal[c["clip_id"]]["weight"] for c in clips if c["source"] == s) for s in SOURCES}
    return count, mass, {cid: r["reason"] for cid, r in bal.items()}


def test_temperature_zero_balances_sources_through_clusters(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    summary = balance_build(tmp_path, BalanceConfig(levels=(32, 8), seed=0, temperature=0.0, budget=400))
    assert summary.n_eligible == 1300 and summary.n_selected == 400
    assert summary.before["source"]["A"] == 1000
    count, mass, reasons = shares(tmp_path)
    for s in SOURCES:
        assert abs(count[s] - 0.25) <= TOL, (s, count)
        assert abs(mass[s] - 0.25) <= TOL, (s, mass)
    assert reasons["B/x/000000000"] == "split:test"
    assert reasons["C/y/000000000"] == "duplicate"
    assert reasons["D/z/000000000"] == "no_embedding"
    clusters = pq.read_table(table_path(tmp_path, "clusters")).to_pylist()
    assert sum(c["n_clips"] for c in clusters if c["level"] == 1) == 1300
    assert sum(c["n_selected"] for c in clusters if c["level"] == 2) == 400
    assert abs(sum(c["weight"] for c in clusters if c["level"] == 2) - 1.0) < 1e-9
    report = (tmp_path / "report" / "balance.html").read_text()
    assert report.count("data:image/png;base64,") == 3 and "split:test" in report
    assert read_balance_config(tmp_path).levels == (32, 8)


def test_without_balancing_the_big_source_dominates(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    balance_build(tmp_path, BalanceConfig(levels=(32, 8), seed=0, temperature=1.0, budget=400))
    count, _, _ = shares(tmp_path)
    assert abs(count["A"] - 1000 / 1300) <= TOL, count


def test_source_cap_holds_and_the_rest_fills_the_budget(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    cfg = BalanceConfig(levels=(32, 8), seed=0, temperature=1.0, budget=400, source_cap=0.4)
    summary = balance_build(tmp_path, cfg)
    count, mass, reasons = shares(tmp_path)
    assert summary.n_selected == 400
    assert count["A"] == pytest.approx(0.4, abs=1 / 400)  # the cap: 160 clips
    for s in "BCD":
        assert abs(count[s] - 0.2) <= TOL, count
    assert mass["A"] <= 0.4 + 1e-9
    assert "source_cap" in reasons.values()


def test_same_seed_same_selection_other_seed_differs(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    cfg = BalanceConfig(levels=(32, 8), seed=3, temperature=0.0, budget=400)
    balance_build(tmp_path, cfg)
    first = pq.read_table(table_path(tmp_path, "clip_balance"))
    balance_build(tmp_path, cfg)
    again = pq.read_table(table_path(tmp_path, "clip_balance"))
    assert first.equals(again)
    balance_build(tmp_path, BalanceConfig(levels=(32, 8), seed=4, temperature=0.0, budget=400))
    other = pq.read_table(table_path(tmp_path, "clip_balance"))
    sel = {r["clip_id"] for r in first.to_pylist() if r["balanced"]}
    sel_other = {r["clip_id"] for r in other.to_pylist() if r["balanced"]}
    assert len(sel) == len(sel_other) == 400 and sel != sel_other


def test_every_prefix_of_the_balanced_order_is_water_filled() -> None:
    # two top clusters; under the first, leaves of 100 and 5 items; under the second, one leaf of 50
    labels = np.array([[0, 0]] * 100 + [[1, 0]] * 5 + [[2, 1]] * 50)
    rank = balanced_order(labels, temperature=0.0, seed=0)
    assert sorted(rank.tolist()) == list(range(155))
    first20 = labels[rank < 20]
    assert (first20[:, 1] == 0).sum() == 10 and (first20[:, 0] == 1).sum() == 5  # the small leaf is exhausted
    first60 = labels[rank < 60]
    assert (first60[:, 0] == 2).sum() == 30 and (first60[:, 0] == 1).sum() == 5
