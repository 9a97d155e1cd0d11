"""Evaluation metrics as plain functions of arrays (numpy in, floats or dicts out; fractions in [0, 1]).

- phase / clip classification: :func:`accuracy`, :func:`macro_prf` (macro precision, recall, F1 over the classes
  present in the ground truth or the predictions, as scikit-learn's ``average="macro"``), :func:`video_jaccard`
  (Cholec80 practice: per video, the Jaccard index of each phase present in its ground truth, averaged over those
  phases, then over videos);
- tool presence: :func:`average_precision` (scikit-learn's step-wise AP) and :func:`mean_average_precision`;
- temporal action localization: :func:`detection_map` (ActivityNet: all-point interpolated AP per class, each
  ground truth matched at most once per tIoU threshold, mAP per threshold and ``average_mAP`` over them);
- retrieval: :func:`retrieval_metrics` (R@1/5/10, median and mean rank in both directions; ties ranked
  pessimistically, so a constant similarity matrix scores the chance level, not 100 %).

Example::

    >>> accuracy([0, 1, 1], [0, 1, 0])
    0.6666666666666666
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

TIOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
RECALL_AT: tuple[int, ...] = (1, 5, 10)


def _labels(y_true: Sequence, y_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"labels must be two 1-D arrays of one length (got {t.shape} and {p.shape})")
    if t.size == 0:
        raise ValueError("no samples to score")
    return t, p


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p))


def macro_prf(y_true: Sequence, y_pred: Sequence, labels: Iterable | None = None) -> dict[str, float]:
    """Macro-averaged precision, recall and F1 (a class with no prediction or no sample scores 0 there).

    ``labels`` default: every class in ``y_true`` or ``y_pred``. F1 is the mean of per-class F1, not the F1 of the
    macro precision and recall.
    """
    t, p = _labels(y_true, y_pred)
    classes = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(list(labels))
    prec, rec, f1 = [], [], []
    for c in classes:
        tp = float(np.sum((t == c) & (p == c)))
        n_pred, n_true = float(np.sum(p == c)), float(np.sum(t == c))
        pc = tp / n_pred if n_pred else 0.0
        rc = tp / n_true if n_true else 0.0
        prec.append(pc)
        rec.append(rc)
        f1.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
    return {"precision": float(np.mean(prec)), "recall": float(np.mean(rec)), "f1": float(np.mean(f1))}


def video_jaccard(y_true: Sequence, y_pred: Sequence, video_ids: Sequence) -> float:
    """Mean over videos of the mean over each video's ground-truth phases of |GT ∩ P| / |GT ∪ P| (frames or clips)."""
    t, p = _labels(y_true, y_pred)
    v = np.asarray(video_ids)
    if v.shape != t.shape:
        raise ValueError(f"video_ids has shape {v.shape}, labels {t.shape}")
    per_video = []
    for vid in np.unique(v):
        m = v == vid
        tv, pv = t[m], p[m]
        per_video.append(
            np.mean([np.sum((tv == c) & (pv == c)) / np.sum((tv == c) | (pv == c)) for c in np.unique(tv)])
        )
    return float(np.mean(per_video))


def average_precision(y_true: Sequence, scores: Sequence) -> float:
    """Step-wise AP, sum over score thresholds of (R_n - R_{n-1}) P_n, as scikit-learn's ``average_precision_score``.

    Tied scores form one threshold. NaN when there is no positive.
    """
    t = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} entries, scores {s.size}")
    n_pos = int(t.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """Multi-label mAP (tool presence): AP per column of ``(N, C)`` arrays, mean over the columns with a positive."""
    t, s = np.asarray(y_true), np.asarray(scores)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"y_true and scores must be (N, C) arrays of one shape (got {t.shape} and {s.shape})")
    per_class = [average_precision(t[:, c], s[:, c]) for c in range(t.shape[1])]
    valid = [a for a in per_class if not np.isnan(a)]
    if not valid:
        raise ValueError("no class has a positive sample")
    return {"mAP": float(np.mean(valid)), "per_class": per_class}


# ---- temporal action localization (ActivityNet) ----


def segment_iou(segment: Sequence[float], candidates: np.ndarray) -> np.ndarray:
    """Temporal IoU of one ``[start, end]`` with each row of ``candidates`` ``(K, 2)``; 0 where the union is empty."""
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(segment[1], c[:, 1]) - np.maximum(segment[0], c[:, 0]), 0, None)
    union = (c[:, 1] - c[:, 0]) + (segment[1] - segment[0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC2011 all-point interpolation: precision made non-increasing from the right, summed over recall steps."""
    p = np.r_[0.0, precision, 0.0]
    r = np.r_[0.0, recall, 1.0]
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[idx] - r[idx - 1]) * p[idx]))


def _class_ap(gt: dict[str, np.ndarray], preds: list[tuple[str, float, float, float]], thresholds) -> np.ndarray:
    """AP per threshold of one class: ``gt`` video -> ``(K, 2)`` segments, ``preds`` (video, start, end, score)."""
    n_gt = sum(len(g) for g in gt.values())
    ap = np.zeros(len(thresholds))
    if not preds or n_gt == 0:
        return ap
    preds = [preds[i] for i in np.argsort([-p[3] for p in preds], kind="stable")]
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    locked = {v: np.zeros((len(thresholds), len(g)), dtype=bool) for v, g in gt.items()}
    for i, (vid, start, end, _) in enumerate(preds):
        if vid not in gt:
            fp[:, i] = 1
            continue
        ious = segment_iou((start, end), gt[vid])
        order = np.argsort(-ious, kind="stable")
        for k, thr in enumerate(thresholds):
            for j in order:
                if ious[j] < thr:
                    break
                if locked[vid][k, j]:
                    continue
                tp[k, i] = 1
                locked[vid][k, j] = True
                break
            fp[k, i] = 1 - tp[k, i]
    tp_c, fp_c = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    for k in range(len(thresholds)):
        ap[k] = interpolated_ap(tp_c[k] / (tp_c[k] + fp_c[k]), tp_c[k] / n_gt)
    return ap


def detection_map(
    ground_truth: Iterable[dict], predictions: Iterable[dict], thresholds: Sequence[float] = TIOU_THRESHOLDS
) -> dict:
    """ActivityNet detection mAP.

    ``ground_truth``: rows ``{"video", "start", "end", "label"}``; ``predictions``: the same plus ``"score"``.
    Only ground-truth classes are scored (a prediction of another class is ignored); a class with no prediction
    has AP 0; a prediction for a video without ground truth is a false positive. Returns ``{"mAP@0.3": ...,
    "average_mAP": ..., "per_class": {label: [AP per threshold]}}``.
    """
    gt: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for g in ground_truth:
        gt[g["label"]][g["video"]].append((g["start"], g["end"]))
    if not gt:
        raise ValueError("no ground-truth segments")
    preds: dict[str, list] = defaultdict(list)
    for p in predictions:
        if p["label"] in gt:
            preds[p["label"]].append((p["video"], float(p["start"]), float(p["end"]), float(p["score"])))
    per_class = {
        label: _class_ap({v: np.asarray(s, dtype=np.float64) for v, s in videos.items()}, preds[label], thresholds)
        for label, videos in sorted(gt.items(), key=lambda kv: str(kv[0]))
    }
    m = np.mean(np.stack(list(per_class.values())), axis=0)
    out: dict = {f"mAP@{thr:g}": float(v) for thr, v in zip(thresholds, m, strict=True)}
    out["average_mAP"] = float(np.mean(m))
    out["per_class"] = {str(k): [float(x) for x in v] for k, v in per_class.items()}
    return out


# ---- retrieval ----


def pessimistic_ranks(sim: np.ndarray) -> np.ndarray:
    """0-based rank of the diagonal entry in each row of a square matrix, counting every tie as ranked above it."""
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity matrix must be square (query i matches item i), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("similarity matrix holds NaN or infinite values")
    gt = np.diag(s)[:, None]
    return (s >= gt).sum(axis=1) - 1


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    r = np.asarray(ranks)
    out = {f"R@{k}": float(np.mean(r < k)) for k in ks}
    out["median_rank"] = float(np.median(r) + 1)
    out["mean_rank"] = float(np.mean(r) + 1)
    return out


def retrieval_metrics(sim: np.ndarray, ks: Sequence[int] = RECALL_AT) -> dict[str, dict[str, float]]:
    """``sim[i, j]``: similarity of query (text) i and item (video) j; pair i matches i. Both directions:
    ``text_to_video`` ranks each row, ``video_to_text`` each column. ``chance`` holds R@K = K/N, MdR = (N+1)/2."""
    s = np.asarray(sim, dtype=np.float64)
    n = pessimistic_ranks(s).size
    chance = {f"R@{k}": min(k, n) / n for k in ks}
    chance["median_rank"] = chance["mean_rank"] = (n + 1) / 2
    return {
        "text_to_video": rank_metrics(pessimistic_ranks(s), ks),
        "video_to_text": rank_metrics(pessimistic_ranks(s.T), ks),
        "chance": chance,
        "n": n,
    }
