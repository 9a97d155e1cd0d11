"""Cluster-balanced selection of pretraining clips: hierarchical k-means, then balanced sampling across clusters.

In the spirit of clustering-based data curation (Vo et al. 2024, as used for DINOv2/v3 data):

1. **Hierarchical k-means** (faiss, spherical, k-means++ seeding, seeded): level 1 clusters the clips' L2-normalised
   embeddings into ``levels[0]`` clusters; each next level clusters the previous level's centroids into
   ``levels[i]`` clusters. A clip's ``cluster`` is its path from the top, e.g. ``"03/0417"``.
2. **Balanced order**: top-down, every node shares its budget among its children in proportion to
   ``n_child ** temperature`` (``0``: equal shares per cluster, ``1``: proportional to size, i.e. no balancing),
   water-filling (a child smaller than its share gives the surplus to its siblings); inside a leaf, clips are
   taken in a seeded random order. This is one global order whose every prefix is the balanced selection of that
   size.
3. **Caps**: walking that order, a clip whose source (domain) already holds ``source_cap`` (``domain_cap``) of the
   budget is skipped; the next clips fill the budget.
4. **Weights**: selected clips get a sampling ``weight`` (summing to 1): the same temperature rule over the
   selected clips' clusters, then the per-source/per-domain mass capped by proportional fitting.

Eligible clips: a split in ``splits`` (default ``train``), not a duplicate (``dup_of`` null), with an embedding,
not flagged by the leakage check (``tables/leakage.parquet``). Same tables and config ⇒ same selection.

Writes ``tables/clusters.parquet``, ``tables/clip_balance.parquet`` (the clip table stays the pipeline's; DuckDB
joins them on ``clip_id``), ``report/balance.html`` and ``report/balance.json``.

Example::

    from corpus.balance import BalanceConfig, balance_build
    summary = balance_build("build/surgrec", BalanceConfig(seed=0, temperature=0.0, source_cap=0.3))
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus.build_dir import writes_build_dir
from corpus.embeddings import read_embeddings
from corpus.errors import MissingInput
from corpus.schemas import table_path, write_table

CLUSTERS = pa.schema(
    [
        ("level", pa.int32()),  # 1 = the clusters of clips; higher levels cluster the level below's centroids
        ("cluster", pa.string()),  # path from the top level, e.g. "03/0417"
        ("parent", pa.string()),
        ("n_clips", pa.int64()),  # eligible clips under it
        ("n_selected", pa.int64()),
        ("weight", pa.float64()),  # sampling mass of its selected clips
        ("centroid", pa.list_(pa.float32())),
    ]
)

CLIP_BALANCE = pa.schema(
    [
        ("clip_id", pa.string()),
        ("cluster", pa.string()),  # leaf cluster path; null when not clustered (ineligible)
        ("rank", pa.int64()),  # position in the balanced order; -1 when ineligible
        ("balanced", pa.bool_()),  # in the balanced pretraining selection
        ("weight", pa.float64()),  # sampling probability; 0 when not selected
        ("reason", pa.string()),  # selected | over_budget | source_cap | domain_cap | split:<s> | duplicate | ...
    ]
)


@dataclass(frozen=True)
class BalanceConfig:
    """Parameters of a balance run (stored with its outputs so that reruns reproduce it)."""

    levels: tuple[int, ...] | None = None  # k per level, bottom-up; None: (~sqrt(n), ~n**0.25)
    seed: int = 0
    temperature: float = 0.5
    fraction: float = 1.0  # budget as a fraction of the eligible clips (ignored when budget is set)
    budget: int | None = None
    source_cap: float | None = None  # max share of the budget (and of the sampling mass) per source
    domain_cap: float | None = None
    splits: tuple[str, ...] = ("train",)
    niter: int = 20
    encoder: str | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        for name in ("source_cap", "domain_cap"):
            cap = getattr(self, name)
            if cap is not None and not 0 < cap <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {cap}")
        if self.levels is not None and (not self.levels or any(k < 1 for k in self.levels)):
            raise ValueError(f"levels must be positive cluster counts, got {self.levels}")


def auto_levels(n: int) -> tuple[int, ...]:
    k1 = max(2, round(math.sqrt(n)))
    return (k1, max(2, round(math.sqrt(k1)))) if k1 >= 16 else (k1,)


# --- clustering -------------------------------------------------------------------------------------------------


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeanspp_init(x: np.ndarray, k: int, rng: np.random.Generator, max_sample: int = 50_000) -> np.ndarray:
    """k-means++ seeds (D² sampling) from a random sample of unit vectors; faiss's own init is uniform random,
    which leaves small, well-separated groups without a centroid when one group dominates."""
    n = len(x)
    sample = x if n <= max_sample else x[np.sort(rng.choice(n, max_sample, replace=False))]
    m = len(sample)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = sample[rng.integers(m)]
    d2 = np.maximum(2.0 - 2.0 * (sample @ centres[0]), 0.0)
    for i in range(1, k):
        total = float(d2.sum())
        j = int(rng.integers(m)) if total <= 0 else int(np.searchsorted(np.cumsum(d2), rng.random() * total))
        centres[i] = sample[min(j, m - 1)]
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (sample @ centres[i]), 0.0))
    return centres


def _kmeans(x: np.ndarray, k: int, seed: int, niter: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    k = min(k, len(x))
    init = kmeanspp_init(x, k, np.random.default_rng(seed))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False)
    km.cp.min_points_per_centroid = 1
    km.cp.max_points_per_centroid = 256
    km.train(x, init_centroids=init)
    _, labels = km.index.search(x, 1)
    return km.centroids.copy(), labels[:, 0].astype(np.int64)


@dataclass
class Hierarchy:
    """``labels[:, j]``: each point's cluster at level ``j + 1``; ``centroids[j]``: that level's centroids."""

    labels: np.ndarray
    centroids: list[np.ndarray]


def hierarchical_kmeans(x: np.ndarray, levels: tuple[int, ...], seed: int = 0, niter: int = 20) -> Hierarchy:
    """Bottom-up hierarchical k-means of ``x`` (rows L2-normalised here); see the module docstring."""
    x = l2_normalise(x)
    centroids, labels = _kmeans(x, levels[0], seed, niter)
    cols, cents = [labels], [centroids]
    for j, k in enumerate(levels[1:], start=1):
        centroids, parent = _kmeans(l2_normalise(cents[-1]), min(k, len(cents[-1])), seed + j, niter)
        cols.append(parent[cols[-1]])
        cents.append(centroids)
    return Hierarchy(np.stack(cols, axis=1), cents)


# --- balanced order, selection, weights -------------------------------------------------------------------------


def _rank_within(group: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Each item's 0-based rank inside its group, ordered by ``keys`` (first key most significant)."""
    order = np.lexsort(tuple(reversed(keys)) + (group,))
    g = group[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(g)])
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = np.arange(len(g)) - np.repeat(starts, lengths)
    return rank


def balanced_order(labels: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Each item's position in the balanced order (0 first). ``labels``: (n, L) cluster ids, finest level first.

    A node interleaves its children by "virtual time" ``(rank in child + 1) / n_child ** temperature``: any prefix
    of the order gives each child its water-filled share of that prefix.
    """
    n, n_levels = labels.shape
    rng = np.random.default_rng(seed)
    rank = _rank_within(labels[:, 0], rng.random(n))
    for j in range(1, n_levels + 1):
        child = labels[:, j - 1]
        parent = labels[:, j] if j < n_levels else np.zeros(n, dtype=np.int64)
        size = np.bincount(child)
        w = np.power(size.astype(np.float64), temperature)
        tiebreak = rng.random(len(size))
        rank = _rank_within(parent, (rank + 1) / w[child], tiebreak[child])
    return rank


def select(
    rank: np.ndarray,
    sources: np.ndarray,
    domains: np.ndarray,
    budget: int,
    source_cap: float | None,
    domain_cap: float | None,
) -> np.ndarray:
    """Per item: 0 selected, 1 over budget, 2 skipped by the source cap, 3 skipped by the domain cap."""
    n = len(rank)
    status = np.ones(n, dtype=np.int8)
    if source_cap is None and domain_cap is None:
        status[rank < budget] = 0
        return status
    order = np.argsort(rank, kind="stable")
    s_max = max(1, math.floor(source_cap * budget)) if source_cap is not None else budget
    d_max = max(1, math.floor(domain_cap * budget)) if domain_cap is not None else budget
    s_count = [0] * (int(sources.max()) + 1)
    d_count = [0] * (int(domains.max()) + 1)
    codes = bytearray(b"\x01" * n)
    taken = 0
    for i, s, d in zip(order.tolist(), sources[order].tolist(), domains[order].tolist(), strict=True):
        if taken >= budget:
            break
        if s_count[s] >= s_max:
            codes[i] = 2
        elif d_count[d] >= d_max:
            codes[i] = 3
        else:
            codes[i] = 0
            s_count[s] += 1
            d_count[d] += 1
            taken += 1
    status = np.frombuffer(bytes(codes), dtype=np.int8).copy()
    return status


def _cap_mass(p: np.ndarray, groups: np.ndarray, cap: float) -> np.ndarray:
    """Scale groups whose mass exceeds ``cap`` down to it, giving the excess to the others (water-filling)."""
    n_groups = int(groups.max()) + 1
    if n_groups * cap < 1 - 1e-9:
        return p  # infeasible: every group at the cap still leaves mass unassigned; reported by the caller
    for _ in range(n_groups + 1):
        mass = np.bincount(groups, weights=p, minlength=n_groups)
        over = mass > cap * (1 + 1e-9)
        if not over.any():
            break
        fixed = over | np.isclose(mass, cap)
        free_mass = mass[~fixed].sum()
        scale = np.ones(n_groups)
        scale[fixed] = np.where(mass[fixed] > 0, cap / np.maximum(mass[fixed], 1e-300), 0)
        if free_mass > 0:
            scale[~fixed] = (1 - cap * fixed.sum()) / free_mass
        p = p * scale[groups]
    return p / p.sum()


def sampling_weights(
    labels: np.ndarray,
    sources: np.ndarray,
    domains: np.ndarray,
    temperature: float,
    source_cap: float | None,
    domain_cap: float | None,
) -> np.ndarray:
    """Probability of each (selected) item: top-down shares ``n_child ** temperature``, uniform in a leaf, capped."""
    n, n_levels = labels.shape
    p = np.ones(n)
    for j in range(n_levels):
        child = labels[:, j]
        parent = labels[:, j + 1] if j + 1 < n_levels else np.zeros(n, dtype=np.int64)
        size = np.bincount(child)
        w = np.power(size.astype(np.float64), temperature)
        w[size == 0] = 0
        child_parent = np.zeros(len(size), dtype=np.int64)
        child_parent[child] = parent
        parent_total = np.bincount(child_parent, weights=w)
        p *= w[child] / parent_total[parent]
        if j == 0:
            p /= size[child]
    p /= p.sum()
    for _ in range(20):
        before = p
        if source_cap is not None:
            p = _cap_mass(p, sources, source_cap)
        if domain_cap is not None:
            p = _cap_mass(p, domains, domain_cap)
        if np.allclose(p, before, rtol=1e-9, atol=1e-15):
            break
    return p


STATUS_REASON = {0: "selected", 1: "over_budget", 2: "source_cap", 3: "domain_cap"}


@dataclass
class BalanceResult:
    """Per eligible item: labels (n, L), balanced-order rank, status code, weight; plus the hierarchy."""

    hierarchy: Hierarchy
    rank: np.ndarray
    status: np.ndarray
    weight: np.ndarray
    budget: int


def balance_arrays(
    vectors: np.ndarray, sources: np.ndarray, domains: np.ndarray, config: BalanceConfig
) -> BalanceResult:
    """Cluster, order, select and weight ``n`` eligible items given as arrays (sources/domains: int codes)."""
    n = len(vectors)
    if n == 0:
        raise MissingInput("no eligible clips to balance (check --split and the embeddings table)")
    levels = config.levels or auto_levels(n)
    hier = hierarchical_kmeans(vectors, levels, config.seed, config.niter)
    rank = balanced_order(hier.labels, config.temperature, config.seed)
    budget = min(n, config.budget if config.budget is not None else max(1, round(config.fraction * n)))
    status = select(rank, sources, domains, budget, config.source_cap, config.domain_cap)
    weight = np.zeros(n)
    sel = status == 0
    if sel.any():
        sub_labels = np.stack([np.unique(col, return_inverse=True)[1] for col in hier.labels[sel].T], axis=1)
        s_codes = np.unique(sources[sel], return_inverse=True)[1]
        d_codes = np.unique(domains[sel], return_inverse=True)[1]
        weight[sel] = sampling_weights(
            sub_labels, s_codes, d_codes, config.temperature, config.source_cap, config.domain_cap
        )
    return BalanceResult(hier, rank, status, weight, budget)


# --- build-dir driver -------------------------------------------------------------------------------------------


@dataclass
class BalanceSummary:
    n_clips: int
    n_eligible: int
    n_selected: int
    budget: int
    levels: tuple[int, ...]
    encoder: str
    reasons: dict[str, int]
    before: dict[str, dict[str, int]]  # {"source": {name: eligible clips}, "domain": {...}}
    after: dict[str, dict[str, int]]  # selected clips
    mass: dict[str, dict[str, float]]  # sampling mass
    config: dict = field(default_factory=dict)
    report: str = ""


def _paths(labels: np.ndarray) -> list[np.ndarray]:
    """Cluster path strings per level (index j: level j + 1), top level first in each path."""
    n_levels = labels.shape[1]
    widths = [len(str(max(int(labels[:, j].max()), 1))) for j in range(n_levels)]
    out: list[np.ndarray] = [np.empty(0)] * n_levels
    prefix = None
    for j in reversed(range(n_levels)):
        part = np.char.zfill(labels[:, j].astype(str), widths[j])
        prefix = part if prefix is None else np.char.add(np.char.add(prefix, "/"), part)
        out[j] = prefix
    return out


def load_leakage_ids(build_dir: str | Path) -> set[str]:
    path = table_path(build_dir, "leakage")
    return set(pq.read_table(path, columns=["clip_id"])["clip_id"].to_pylist()) if path.exists() else set()


@writes_build_dir("balance")
def balance_build(build_dir: str | Path, config: BalanceConfig = BalanceConfig()) -> BalanceSummary:
    """Balance a build dir's clips; writes the tables and report named in the module docstring."""
    build_dir = Path(build_dir)
    clips_path = table_path(build_dir, "clips")
    if not clips_path.exists():
        raise MissingInput(f"{clips_path}: no clips table; build the corpus first")
    clips = pq.read_table(clips_path, columns=["clip_id", "source", "domain", "split", "dup_of"]).sort_by("clip_id")
    emb_ids, vectors, encoder = read_embeddings(build_dir, config.encoder)
    ids = np.asarray(clips["clip_id"].to_pylist(), dtype=object)
    n = len(ids)
    split = np.asarray(clips["split"].fill_null("").to_pylist(), dtype=object)
    idx = pc.index_in(clips["clip_id"], value_set=pa.array(emb_ids, type=pa.string()))
    no_emb = idx.is_null().to_numpy(zero_copy_only=False)
    emb_index = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    leaked = load_leakage_ids(build_dir)
    reason = np.full(n, "", dtype=object)
    in_split = np.isin(split, list(config.splits))
    reason[~in_split] = np.char.add("split:", split[~in_split].astype(str)).astype(object)
    is_dup = clips["dup_of"].is_valid().to_numpy(zero_copy_only=False)
    reason[(reason == "") & is_dup] = "duplicate"
    reason[(reason == "") & no_emb] = "no_embedding"
    if leaked:
        reason[(reason == "") & np.isin(ids, list(leaked))] = "leakage"
    eligible = reason == ""
    src_all = np.asarray(clips["source"].to_pylist(), dtype=object)
    dom_all = np.asarray(clips["domain"].fill_null("").to_pylist(), dtype=object)
    src_names, src_codes = np.unique(src_all[eligible].astype(str), return_inverse=True)
    dom_names, dom_codes = np.unique(dom_all[eligible].astype(str), return_inverse=True)
    _check_caps(config, len(src_names), len(dom_names))
    take = emb_index[eligible]
    if len(take) != len(vectors) or not np.array_equal(take, np.arange(len(vectors))):
        vectors = vectors[take]  # only copy when some embedded clips are not eligible
    res = balance_arrays(vectors, src_codes, dom_codes, config)
    del vectors
    levels = tuple(len(c) for c in res.hierarchy.centroids)

    paths = _paths(res.hierarchy.labels)
    cluster = np.full(n, None, dtype=object)
    cluster[eligible] = paths[0]
    rank = np.full(n, -1, dtype=np.int64)
    rank[eligible] = res.rank
    weight = np.zeros(n)
    weight[eligible] = res.weight
    balanced = np.zeros(n, dtype=bool)
    balanced[eligible] = res.status == 0
    reason[eligible] = [STATUS_REASON[int(s)] for s in res.status]
    cfg = {**asdict(config), "levels": list(levels), "encoder": encoder}
    table = pa.table(
        {
            "clip_id": pa.array(ids.tolist(), pa.string()),
            "cluster": pa.array(cluster.tolist(), pa.string()),
            "rank": pa.array(rank),
            "balanced": pa.array(balanced),
            "weight": pa.array(weight),
            "reason": pa.array(reason.tolist(), pa.string()),
        },
        schema=CLIP_BALANCE.with_metadata({"surgcorpus.balance": json.dumps(cfg, sort_keys=True)}),
    )
    write_table(table, table_path(build_dir, "clip_balance"))
    write_table(_clusters_table(res, paths), table_path(build_dir, "clusters"))

    sel = balanced
    summary = BalanceSummary(
        n_clips=n,
        n_eligible=int(eligible.sum()),
        n_selected=int(sel.sum()),
        budget=res.budget,
        levels=levels,
        encoder=encoder,
        reasons=dict(sorted(Counter(reason.tolist()).items())),
        before={"source": _count(src_all[eligible]), "domain": _count(dom_all[eligible])},
        after={"source": _count(src_all[sel]), "domain": _count(dom_all[sel])},
        mass={"source": _mass(src_all, weight), "domain": _mass(dom_all, weight)},
        config=cfg,
    )
    from corpus.balance_report import write_balance_report

    summary.report = str(write_balance_report(build_dir, summary, res, paths))
    return summary


def unbalanced_clips(build_dir: str | Path) -> list[str]:
    """Clips of the build that the last balance run never saw (added after it ran): they have no weight yet.
    Empty when the build was never balanced."""
    bal_path, clips_path = table_path(build_dir, "clip_balance"), table_path(build_dir, "clips")
    if not bal_path.exists() or not clips_path.exists():
        return []
    seen = pq.read_table(bal_path, columns=["clip_id"])["clip_id"]
    clips = pq.read_table(clips_path, columns=["clip_id", "dup_of"]).filter(pc.field("dup_of").is_null())
    new = clips.filter(pc.invert(pc.is_in(clips["clip_id"], value_set=seen)))
    return sorted(new["clip_id"].to_pylist())


def read_balance_config(build_dir: str | Path) -> BalanceConfig | None:
    """The config of the last balance run (from ``clip_balance.parquet``'s metadata), or None."""
    path = table_path(build_dir, "clip_balance")
    if not path.exists():
        return None
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"surgcorpus.balance")
    if raw is None:
        return None
    cfg = json.loads(raw)
    cfg["levels"] = tuple(cfg["levels"]) if cfg.get("levels") else None
    cfg["splits"] = tuple(cfg["splits"])
    return BalanceConfig(**cfg)


def _check_caps(config: BalanceConfig, n_sources: int, n_domains: int) -> None:
    for cap, n, what in ((config.source_cap, n_sources, "sources"), (config.domain_cap, n_domains, "domains")):
        if cap is not None and cap * n < 1 - 1e-9:
            raise ValueError(f"cap {cap} over {n} {what} cannot hold the whole budget (needs cap >= {1 / n:.3f})")


def _count(values: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(v) for v in values).items()))


def _mass(groups: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for g, w in zip(groups.tolist(), weight.tolist(), strict=True):
        if w > 0:
            out[str(g)] = out.get(str(g), 0.0) + w
    return dict(sorted(out.items()))


def _clusters_table(res: BalanceResult, paths: list[np.ndarray]) -> pa.Table:
    labels, n_levels = res.hierarchy.labels, res.hierarchy.labels.shape[1]
    sel = res.status == 0
    rows: dict[str, list] = {f.name: [] for f in CLUSTERS}
    for j in range(n_levels):
        k = len(res.hierarchy.centroids[j])
        n_clips = np.bincount(labels[:, j], minlength=k)
        n_sel = np.bincount(labels[:, j], weights=sel, minlength=k)
        mass = np.bincount(labels[:, j], weights=res.weight, minlength=k)
        first = np.full(k, -1, dtype=np.int64)
        order = np.arange(len(labels))[::-1]
        first[labels[order, j]] = order
        for c in range(k):
            i = first[c]
            path = paths[j][i] if i >= 0 else None
            rows["level"].append(j + 1)
            rows["cluster"].append(str(path) if path is not None else f"unassigned-{j + 1}-{c}")
            rows["parent"].append(str(paths[j + 1][i]) if (j + 1 < n_levels and i >= 0) else None)
            rows["n_clips"].append(int(n_clips[c]))
            rows["n_selected"].append(int(n_sel[c]))
            rows["weight"].append(float(mass[c]))
            rows["centroid"].append(res.hierarchy.centroids[j][c].tolist())
    return pa.table(rows, schema=CLUSTERS).sort_by([("level", "descending"), ("cluster", "ascending")])
