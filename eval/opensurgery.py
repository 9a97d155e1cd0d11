"""The OpenSurgery tasks on a hierarchy build dir (``surgcorpus hierarchy import/split/shard``), on frozen features.

- **operation recognition**: a linear probe (:mod:`eval.probe`, corrected protocol; OpenSurgery-EVAL has no
  validation split, so the last epoch is scored) on the operation clips of the ``operation`` shards, features
  cached per clip and view; and, for a checkpoint with a text encoder (HierSKP), zero-shot recognition from text
  prompts, once per phrasing in :data:`PROMPTS` (the spread across phrasings is the prompt sensitivity);
- **temporal action localization**: a light head on frozen features: windows of ``window_s`` seconds over each
  video, a linear probe over operation labels plus ``background`` (the label of the operation holding the window's
  centre), runs of consecutive windows with one predicted label become segments scored by their mean probability;
  ActivityNet mAP at tIoU 0.3..0.7 and ``average_mAP`` (:func:`eval.metrics.detection_map`);
- **zero-shot cross-modal retrieval** at each level (video: its sampled frames vs description; operation: clip vs
  text; frame: image vs caption) on the test split, both directions (:func:`eval.metrics.retrieval_metrics`).

Output ``OUT/<encoder id>/``: ``results.{md,csv,png}`` (one row per task and variant, with baselines),
``tal_predictions.json`` and ``tal_ground_truth.json`` (re-score with ``surgcorpus eval detection``),
``retrieval_<level>.npy`` (re-score with ``surgcorpus eval retrieval``), ``media/`` (the operation clips
extracted from the shards) and ``features/`` (the cache).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from builders.stages.embed import ClipEncoder
from corpus.atomic import write_bytes_atomic
from corpus.errors import MissingInput, SurgcorpusError
from corpus.hierarchy.build import load_hierarchy
from corpus.hierarchy.exports import recognition_rows, retrieval_pairs, tal_json
from corpus.hierarchy.models import humanize
from eval.activitynet import write_ground_truth, write_predictions
from eval.features import FeatureCache, TrainerEncoder, load_feature_encoder
from eval.metrics import accuracy, detection_map, macro_prf, retrieval_metrics
from eval.probe import FIXED, Split, run_probe
from eval.report import write_run
from eval.views import SURGREC_VIEWS, ViewSpec, spatial_crops

PROMPTS: tuple[str, ...] = (
    "{label}",
    "a surgical video of {label}",
    "the surgeon is performing {label}.",
    "operation step: {label}",
)
BACKGROUND = "background"
COLUMNS = [
    "encoder", "task", "variant", "n_train", "n_test", "accuracy", "macro_f1", "majority_accuracy", "chance_accuracy",
    "mAP@0.3", "mAP@0.5", "mAP@0.7", "average_mAP", "t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_median_rank",
    "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_median_rank", "chance_R@1", "score", "collapsed", "note",
]  # fmt: skip


class JointModel:
    """The shared video-text space of a video-text checkpoint (HierSKP: ``encode_clips``, ``encode_frames``,
    ``encode_texts`` of the recipe model, loaded by ``trainers.checkpoint.load_model``). ``clips`` is a
    :class:`~builders.stages.embed.ClipEncoder` over projected clip embeddings, so they are cached per clip and view
    like any feature."""

    def __init__(self, model, config: dict, path: Path) -> None:
        import torch

        self.model = model
        self.probe_encoder = TrainerEncoder(path, (model.eval_encoder.eval(), config))  # one model, loaded once
        encoder_id = self.probe_encoder.encoder_id
        size = int(config["image_size"])
        self.frame_size = (size, size)
        self._mean = torch.tensor(config["mean"], dtype=torch.float32).view(1, 3, 1, 1, 1)
        self._std = torch.tensor(config["std"], dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.clips = _ProjectedClips(self, int(config["num_frames"]), f"{encoder_id}-joint")

    def _pixels(self, frames: np.ndarray):
        """``(B, T, H, W, 3)`` uint8 -> normalised ``(B, 3, T, H, W)`` float."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0).permute(0, 4, 1, 2, 3)
        return (x - self._mean) / self._std

    def encode_frames(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 images (at ``frame_size``) -> ``(N, E)`` unit vectors."""
        import torch

        with torch.no_grad():
            return _norm(self.model.encode_frames(self._pixels(images[:, None])).float().numpy())

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return _norm(self.model.encode_texts(list(texts)).float().numpy())


class _ProjectedClips:
    def __init__(self, joint: JointModel, num_frames: int, encoder_id: str) -> None:
        self.joint, self.num_frames, self.encoder_id = joint, num_frames, encoder_id
        self.frame_size = joint.frame_size
        self.dim = 0

    def encode_batch(self, clips: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return _norm(self.joint.model.encode_clips(self.joint._pixels(clips)).float().numpy())


def load_joint_model(checkpoint: str) -> JointModel | None:
    """The checkpoint's video-text space, or None when it has no text tower (MAE, JEPA, the default encoder)."""
    if checkpoint in ("default", "stats"):
        return None
    from trainers.checkpoint import load_model, read_checkpoint

    if "recipe" not in read_checkpoint(checkpoint)["config"]:
        return None
    model, config = load_model(checkpoint)
    if not all(hasattr(model, m) for m in ("encode_clips", "encode_frames", "encode_texts")):
        return None
    return JointModel(model, config, Path(checkpoint))


def _norm(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _shard_samples(build: Path, level: str) -> dict[str, dict]:
    """Every sample of one level's shards (webdataset), by key."""
    import webdataset as wds

    table = build / "tables" / "hier_shards.parquet"
    if not table.exists():
        raise MissingInput(f"{table}: no hierarchy shards; run `surgcorpus hierarchy shard --build {build}` first")
    shards = sorted({r["shard"] for r in pq.read_table(table).to_pylist() if r["level"] == level})
    out = {}
    for shard in shards:
        for sample in wds.WebDataset(str(build / shard), shardshuffle=False, empty_check=False):
            out[sample["__key__"]] = sample
    return out


def _images(jpegs: list[bytes], size: tuple[int, int]) -> np.ndarray:
    """JPEG frames -> ``(N, h, w, 3)`` RGB, each resized to cover ``size`` and centre-cropped."""
    import cv2

    frames = [
        cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for b in jpegs
    ]
    return np.concatenate([spatial_crops(f[None], size, 1)[0] for f in frames])


def _window_features(
    path: Path, duration_s: float, enc: ClipEncoder, window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``window_s`` windows over a video: their ``(start, end)`` times and ``(n, D)`` features (centre crop)."""
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:
        raise MissingInput(f"{path}: decord cannot open the video: {e}") from e
    fps, n = float(vr.get_avg_fps()), len(vr)
    duration = min(duration_s or n / fps, n / fps)
    starts = np.arange(0.0, max(duration - 1e-6, 0.0), window_s)
    spans = np.stack([starts, np.minimum(starts + window_s, duration)], axis=1)
    clips = []
    for s, e in spans:
        idx = np.minimum(((s + (np.arange(enc.num_frames) + 0.5) * (e - s) / enc.num_frames) * fps).astype(int), n - 1)
        clips.append(spatial_crops(vr.get_batch(idx.tolist()).asnumpy(), enc.frame_size, 1)[0])
    feats = [enc.encode_batch(np.stack(clips[i : i + 32])) for i in range(0, len(clips), 32)]
    return spans, np.concatenate(feats)


def _runs(spans: np.ndarray, probs: np.ndarray, names: list[str], video: str) -> list[dict]:
    """Segments from window predictions: consecutive windows with one non-background argmax, scored by mean prob."""
    pred = probs.argmax(axis=1)
    out, i = [], 0
    while i < len(pred):
        j = i
        while j + 1 < len(pred) and pred[j + 1] == pred[i]:
            j += 1
        if names[pred[i]] != BACKGROUND:
            score = float(probs[i : j + 1, pred[i]].mean())
            out.append({"video": video, "start": float(spans[i, 0]), "end": float(spans[j, 1]),
                        "label": names[pred[i]], "score": score})  # fmt: skip
        i = j + 1
    return out


def _classification_row(task: str, variant: str, train_labels, labels, pred, n_classes: int) -> dict:
    from eval.baselines import baselines, collapse_reason

    b = baselines(list(train_labels), list(labels), n_classes)
    return {
        "task": task,
        "variant": variant,
        "n_train": len(train_labels),
        "n_test": len(labels),
        "accuracy": accuracy(labels, pred),
        "macro_f1": macro_prf(labels, pred)["f1"],
        "majority_accuracy": b["majority_accuracy"],
        "chance_accuracy": b["chance_accuracy"],
        "score": accuracy(labels, pred),
        "collapsed": collapse_reason(labels, pred) or "",
    }


def evaluate(
    checkpoint: str,
    build: str | Path,
    out: str | Path = "build/eval/opensurgery",
    *,
    window_s: float = 1.0,
    prompts: tuple[str, ...] = PROMPTS,
    views: ViewSpec = SURGREC_VIEWS,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[list[dict], Path]:
    """Run the three OpenSurgery tasks; returns the result rows and the run folder. ``views``: the views of each
    operation clip (SurgRec's 5 temporal x 3 spatial by default)."""
    build = Path(build)
    h = load_hierarchy(build)
    if not h.videos:
        raise MissingInput(f"{build}: no hierarchy (tables/hier_videos.parquet is empty or missing)")
    joint = load_joint_model(checkpoint)
    enc = joint.probe_encoder if joint is not None else load_feature_encoder(checkpoint)
    run_dir = Path(out) / enc.encoder_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = replace(FIXED, select="last", seed=seed)
    rows: list[dict] = []

    # ---- operation recognition: clips from the operation shards, cached features per clip and view ----
    ops = _shard_samples(build, "operation")
    media = run_dir / "media" / "operation"
    media.mkdir(parents=True, exist_ok=True)
    clips = []
    for key, sample in sorted(ops.items()):
        path = media / f"{key}.mp4"
        digest = hashlib.sha256(sample["mp4"]).hexdigest()
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            write_bytes_atomic(path, sample["mp4"])
        clips.append((key, path, digest))
    feats, failed = FeatureCache(run_dir / "features", enc, views).features(clips, show_progress=show_progress)
    rec = [r for r in recognition_rows(build) if r["key"] in feats]
    names = sorted({r["label"] for r in rec})
    label_id = {n: i for i, n in enumerate(names)}

    def split(s: str) -> Split:
        rs = [r for r in rec if r["split"] == s]
        return Split([r["key"] for r in rs], np.array([label_id[r["label"]] for r in rs], dtype=np.int64),
                     np.stack([feats[r["key"]] for r in rs]), [r["video_id"] for r in rs])  # fmt: skip

    train, test = split("train"), split("test")
    note = f"{len(failed)} clips failed to decode" if failed else ""
    if len(train.keys) and len(test.keys):
        res = run_probe(train, None, test, cfg)
        row = _classification_row(
            "operation recognition", "linear probe", train.labels, test.labels,
            [p["prediction"] for p in res.predictions], len(names),
        )  # fmt: skip
        rows.append({**row, "collapsed": res.collapsed or "", "note": note})
        if joint is not None:
            joint_feats, _ = FeatureCache(run_dir / "features", joint.clips, views).features(
                [c for c in clips if c[0] in set(test.keys)], show_progress=show_progress
            )
            video_emb = _norm(np.stack([joint_feats[k].mean(axis=0) for k in test.keys]))
            accs = []
            for template in prompts:
                class_emb = joint.encode_text([template.format(label=humanize(n)) for n in names])
                pred = (video_emb @ class_emb.T).argmax(axis=1)
                # the majority baseline is still the train split's most frequent operation
                r = _classification_row(
                    "operation recognition", f"zero-shot: {template!r}", train.labels, test.labels, pred, len(names)
                )
                accs.append(r["accuracy"])
                rows.append({**r, "n_train": 0})
            rows.append({"task": "operation recognition", "variant": "zero-shot prompt sensitivity",
                         "n_test": len(test.keys), "accuracy": float(np.mean(accs)), "score": float(np.mean(accs)),
                         "note": f"accuracy over {len(prompts)} phrasings: min {min(accs):.4f}, max {max(accs):.4f}, "
                                 f"std {float(np.std(accs)):.4f}"})  # fmt: skip
        else:
            rows.append({"task": "operation recognition", "variant": "zero-shot",
                         "note": "not run: the checkpoint has no text encoder"})  # fmt: skip
    else:
        rows.append({"task": "operation recognition", "variant": "linear probe", "note": "not run: empty split"})

    # ---- temporal action localization: window features, a linear head, runs of windows -> segments ----
    rows.append(_tal(build, h, enc, run_dir, window_s, cfg))

    # ---- retrieval at each level (test split) ----
    if joint is None:
        rows.append(
            {"task": "retrieval", "variant": "all levels", "note": "not run: the checkpoint has no text encoder"}
        )
    else:
        rows += _retrieval(build, joint, clips, run_dir, views, show_progress)
    rows = [{"encoder": enc.encoder_id, **r} for r in rows]
    title = f"OpenSurgery tasks: {enc.encoder_id} on {build.name} (seed {seed})"
    write_run(run_dir, rows, COLUMNS, title, "score", label="variant")
    return rows, run_dir


def _tal(build: Path, h, enc: ClipEncoder, run_dir: Path, window_s: float, cfg) -> dict:
    gt = tal_json(build)["database"]
    names = [BACKGROUND] + sorted({a["label"] for v in gt.values() for a in v["annotations"]})
    per_split: dict[str, list] = defaultdict(list)
    errors = []
    for v in sorted(h.videos, key=lambda v: v["video_id"]):
        if v.get("split") not in ("train", "test") or not v.get("path"):
            continue
        try:
            spans, feats = _window_features(Path(v["path"]), v.get("duration_s") or 0.0, enc, window_s)
        except SurgcorpusError as exc:
            errors.append(str(exc))
            continue
        anns = gt[v["video_id"]]["annotations"]
        centre = spans.mean(axis=1)
        labels = [
            next((names.index(a["label"]) for a in anns if a["segment"][0] <= c < a["segment"][1]), 0) for c in centre
        ]
        per_split[v["split"]].append((v["video_id"], spans, feats, labels))
    base = {"task": "temporal action localization", "variant": f"linear head on {window_s:g} s windows"}
    if not per_split["train"] or not per_split["test"]:
        return {**base, "note": f"not run: no decodable train or test video ({'; '.join(errors)})"}

    def split(s: str) -> Split:
        items = per_split[s]
        keys = [f"{vid}@{i}" for vid, spans, _, _ in items for i in range(len(spans))]
        feats = np.concatenate([f for _, _, f, _ in items])[:, None, :]
        return Split(keys, np.concatenate([np.array(lab, dtype=np.int64) for *_, lab in items]), feats)

    train, test = split("train"), split("test")
    res = run_probe(train, None, test, replace(cfg, select="last"), head_size=len(names))
    probs, preds, at = res.probabilities, [], 0
    for vid, spans, _, _ in per_split["test"]:
        preds += _runs(spans, probs[at : at + len(spans)], names, vid)
        at += len(spans)
    truth = [
        {"video": vid, "start": a["segment"][0], "end": a["segment"][1], "label": a["label"]}
        for vid, *_ in per_split["test"]
        for a in gt[vid]["annotations"]
    ]
    write_ground_truth(run_dir / "tal_ground_truth.json", truth)
    write_predictions(run_dir / "tal_predictions.json", preds)
    m = detection_map(truth, preds)
    return {
        **base,
        "n_train": len(train.keys),
        "n_test": len(test.keys),
        **{k: m[k] for k in ("mAP@0.3", "mAP@0.5", "mAP@0.7", "average_mAP")},
        "accuracy": res.metrics["accuracy"],
        "majority_accuracy": res.baselines["majority_accuracy"],
        "chance_accuracy": res.baselines["chance_accuracy"],
        "score": m["average_mAP"],
        "collapsed": res.collapsed or "",
        "note": f"window accuracy in 'accuracy'; {len(preds)} predicted segments"
        + (f"; skipped: {'; '.join(errors)}" if errors else ""),
    }


def _retrieval(
    build: Path, joint: JointModel, clips: list, run_dir: Path, views: ViewSpec, show_progress: bool
) -> list[dict]:
    """Test-split retrieval per level in the joint space: video = mean of its frames' embeddings (as HierSKP trains
    it), operation = mean over the clip's views, frame = the image."""
    pairs = [p for p in retrieval_pairs(build) if p["split"] == "test"]
    rows = []
    samples = {"video": _shard_samples(build, "video"), "frame": _shard_samples(build, "frame")}
    wanted = {p["key"] for p in pairs if p["level"] == "operation"}
    op_emb, _ = FeatureCache(run_dir / "features", joint.clips, views).features(
        [c for c in clips if c[0] in wanted], show_progress=show_progress
    )
    for level in ("video", "operation", "frame"):
        vecs, texts = [], []
        for p in (p for p in pairs if p["level"] == level):
            if level == "operation":
                if p["key"] not in op_emb:
                    continue
                vecs.append(op_emb[p["key"]].mean(axis=0))
            else:
                s = samples[level].get(p["key"])
                if s is None:
                    continue
                frames = _images([s[k] for k in sorted(s) if k.endswith("jpg")], joint.frame_size)
                vecs.append(joint.encode_frames(frames).mean(axis=0))
            texts.append(p["text"])
        if len(vecs) < 2:
            rows.append({"task": "retrieval", "variant": level, "note": f"not run: {len(vecs)} test pair(s)"})
            continue
        sim = joint.encode_text(texts) @ _norm(np.stack(vecs)).T
        np.save(run_dir / f"retrieval_{level}.npy", sim)
        m = retrieval_metrics(sim)
        row = {"task": "retrieval", "variant": level, "n_test": m["n"], "chance_R@1": m["chance"]["R@1"]}
        for d, short in (("text_to_video", "t2v"), ("video_to_text", "v2t")):
            row.update({f"{short}_{k}": v for k, v in m[d].items() if k != "mean_rank"})
        row["score"] = row["t2v_R@1"]
        rows.append(row)
    return rows
