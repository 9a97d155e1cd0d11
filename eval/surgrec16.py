"""The SurgRec-16 linear-probe evaluation over ``benchmark build`` outputs, on published or corrected splits.

Input: a folder of dataset build dirs (``surgcorpus benchmark build ... --out DIR``: ``DIR/<dataset>/`` with
``tables/planned_clips.parquet`` and the cut clips). Published splits and labels come from that table (the rows the
published CSVs hold, as built); corrected splits are :func:`corpus.benchmark.fix.fix` of them with the table's
annotated labels, the same correction ``surgcorpus benchmark fix`` writes. Features are cached per clip and view
(:mod:`eval.features`); the probe is :mod:`eval.probe` with the protocol named by the splits (published splits:
SurgRec's protocol reproduced; fixed: the corrected protocol).

Output ``OUT/<encoder id>/<splits>/``: ``results.{md,csv,png}`` (one row per dataset, with baselines and the
collapse flag), ``predictions/<dataset>.csv``; ``OUT/<encoder id>/comparison.md`` once both splits were run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from corpus.benchmark.fix import fix
from corpus.benchmark.plan import PlannedClip
from corpus.benchmark.spec import SPLITS, Benchmark
from corpus.errors import MissingInput
from eval.features import FeatureCache, load_feature_encoder
from eval.probe import PUBLISHED_HEAD_SIZES, Split, config_for, run_probe
from eval.report import write_comparison, write_run

COLUMNS = [
    "dataset", "splits", "encoder", "n_train", "n_val", "n_test", "n_test_keys", "n_failed", "head_size", "steps",
    "best_epoch", "accuracy", "macro_precision", "macro_recall", "macro_f1", "top5_accuracy", "video_jaccard",
    "majority_accuracy", "majority_macro_f1", "test_majority_rate", "chance_accuracy", "collapsed",
]  # fmt: skip
_PLANNED_FIELDS = [f for f in PlannedClip.__dataclass_fields__]


def dataset_dirs(benchmark: Path) -> list[Path]:
    dirs = sorted(p.parent.parent for p in Path(benchmark).glob("*/tables/planned_clips.parquet"))
    if not dirs:
        raise MissingInput(f"{benchmark}: no benchmark build here (no */tables/planned_clips.parquet); "
                           "run `surgcorpus benchmark build` first")  # fmt: skip
    return dirs


def read_build(build: Path) -> tuple[dict[str, list[tuple[str, int]]], list[PlannedClip], dict[str, dict]]:
    """Published rows per split (built clips only), the planned clips, and path -> {file, sha256, video_id}."""
    rows = pq.read_table(build / "tables" / "planned_clips.parquet").to_pylist()
    published: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    planned: dict[str, PlannedClip] = {}
    files: dict[str, dict] = {}
    for r in rows:
        planned.setdefault(r["path"], PlannedClip(**{k: r[k] for k in _PLANNED_FIELDS}))
        if r["split"] and r["file"]:
            published[r["split"]].append((r["path"], r["published_label_id"]))
            files[r["path"]] = {"file": build / r["file"], "sha256": r["sha256"], "video_id": r["video_id"]}
    return published, list(planned.values()), files


def evaluate(
    checkpoint: str,
    benchmark: str | Path,
    bench: Benchmark,
    splits: str = "fixed",
    out: str | Path = "build/eval/surgrec16",
    cache: str | Path | None = None,
    datasets: list[str] | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[list[dict], Path]:
    """Probe every dataset of ``benchmark``; returns the result rows and the run folder."""
    cfg = config_for("published" if splits == "published" else "fixed", seed)
    if splits not in ("published", "fixed"):
        raise ValueError(f"--splits must be published or fixed (got {splits!r})")
    encoder = load_feature_encoder(checkpoint)
    features = FeatureCache(Path(cache or Path(out) / "features"), encoder)
    run_dir = Path(out) / encoder.encoder_id / splits
    results = []
    for build in dataset_dirs(Path(benchmark)):
        spec = bench.get(build.name)
        if datasets and not {spec.name, spec.dataset} & set(datasets):
            continue
        published, planned, files = read_build(build)
        # the corrected splits do not depend on the probe's seed: they are `benchmark fix`'s (seed 0)
        rows = published if splits == "published" else fix(spec, published, planned)[0]
        wanted = sorted({p for r in rows.values() for p, _ in r})
        feats, failed = features.features(
            [(p, files[p]["file"], files[p]["sha256"]) for p in wanted], show_progress=show_progress
        )

        def split_of(name: str, rows=rows, feats=feats, files=files) -> Split:
            kept = [(p, lab) for p, lab in rows[name] if p in feats]
            dim = encoder.dim
            return Split(
                [p for p, _ in kept],
                np.array([lab for _, lab in kept], dtype=np.int64),
                np.stack([feats[p] for p, _ in kept]) if kept else np.zeros((0, 1, dim), np.float32),
                [files[p]["video_id"] for p, _ in kept],
            )

        train, val, test = split_of("train"), split_of("val"), split_of("test")
        row = {"dataset": spec.name, "splits": splits, "encoder": encoder.encoder_id, "n_failed": len(failed)}
        if not len(train.keys) or not len(test.keys):
            results.append({**row, "collapsed": "not run: empty train or test split"})
            continue
        head = PUBLISHED_HEAD_SIZES.get(spec.dataset) if splits == "published" else None
        res = run_probe(train, val, test, cfg, head_size=head)
        results.append(
            {
                **row,
                **{f"n_{k}": v for k, v in res.n.items()},
                "head_size": res.head_size,
                "steps": res.steps,
                "best_epoch": res.best_epoch,
                **res.metrics,
                **res.baselines,
                "collapsed": res.collapsed or "",
            }
        )
        pred_dir = run_dir / "predictions"
        pred_dir.mkdir(parents=True, exist_ok=True)
        with open(pred_dir / f"{spec.name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["clip", "label", "prediction", "confidence"], lineterminator="\n")
            w.writeheader()
            w.writerows(res.predictions)
            for bad in failed:
                w.writerow(
                    {"clip": bad["clip"], "label": "", "prediction": "", "confidence": f"failed: {bad['error']}"}
                )
    title = f"SurgRec-16 linear probe: {encoder.encoder_id}, {splits} splits ({cfg.name} protocol, seed {seed})"
    write_run(run_dir, results, COLUMNS, title, "accuracy")
    write_comparison(run_dir.parent)
    return results, run_dir
