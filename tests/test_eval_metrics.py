"""Metrics against hand-computed cases and scikit-learn; the metric commands on files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.activitynet import write_ground_truth, write_predictions
from eval.metrics import (
    accuracy,
    average_precision,
    detection_map,
    macro_prf,
    mean_average_precision,
    retrieval_metrics,
    video_jaccard,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_classification_metrics_by_hand():
    t = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 0, 0]
    assert accuracy(t, p) == pytest.approx(3 / 6)
    # class 0: P 1/3 R 1/2; class 1: P 2/3 R 1; class 2: P 0 R 0
    m = macro_prf(t, p)
    assert m["precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["f1"] == pytest.approx((2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2) + 2 * (2 / 3) / (5 / 3) + 0) / 3)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 7, 500)
    p = np.where(rng.random(500) < 0.4, t, rng.integers(0, 9, 500))  # some predicted classes never occur in t
    assert accuracy(t, p) == pytest.approx(sklearn_metrics.accuracy_score(t, p))
    ref = sklearn_metrics.precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    m = macro_prf(t, p)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx(ref[:3])


def test_video_jaccard_by_hand_and_against_sklearn():
    # video a: GT 0 0 1 1, pred 0 1 1 1 -> J0 = 1/2, J1 = 2/3; video b: GT 2 2, pred 2 0 -> J2 = 1/2 (0 not in GT)
    t = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 0]
    v = ["a", "a", "a", "a", "b", "b"]
    assert video_jaccard(t, p, v) == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2) / 2)
    rng = np.random.default_rng(1)
    t = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.5, t, rng.integers(0, 5, 300))
    v = np.repeat(np.arange(6), 50)
    ref = np.mean(
        [
            sklearn_metrics.jaccard_score(t[v == k], p[v == k], labels=np.unique(t[v == k]), average="macro")
            for k in range(6)
        ]
    )
    assert video_jaccard(t, p, v) == pytest.approx(ref)


def test_average_precision_with_ties_matches_sklearn():
    # hand case: scores .9 (pos) .8 (neg) .7 (pos) -> P@1 = 1, P@3 = 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    rng = np.random.default_rng(2)
    y = rng.random((200, 6)) < 0.3
    s = np.round(rng.random((200, 6)) + 0.5 * y, 1)  # rounding makes many ties
    m = mean_average_precision(y, s)
    for c in range(6):
        assert m["per_class"][c] == pytest.approx(sklearn_metrics.average_precision_score(y[:, c], s[:, c]))
    assert m["mAP"] == pytest.approx(sklearn_metrics.average_precision_score(y, s, average="macro"))


def _gt_and_preds():
    gt = [
        {"video": "a", "start": 0, "end": 10, "label": "A"},
        {"video": "a", "start": 20, "end": 30, "label": "A"},
        {"video": "b", "start": 0, "end": 10, "label": "B"},
    ]
    preds = [
        {"video": "a", "start": 0, "end": 10, "label": "A", "score": 0.9},  # TP
        {"video": "a", "start": 0, "end": 9, "label": "A", "score": 0.8},  # same GT again: FP
        {"video": "a", "start": 21, "end": 30, "label": "A", "score": 0.7},  # tIoU 0.9: TP
        {"video": "zz", "start": 0, "end": 5, "label": "A", "score": 0.6},  # no such video: FP
        {"video": "b", "start": 4, "end": 10, "label": "B", "score": 0.5},  # tIoU 0.6: TP below 0.7
        {"video": "b", "start": 0, "end": 10, "label": "Q", "score": 0.99},  # class not in GT: ignored
    ]
    return gt, preds


def test_detection_map_by_hand():
    gt, preds = _gt_and_preds()
    res = detection_map(gt, preds)
    # class A: precisions 1, 1/2, 2/3, 2/4 at recalls .5 .5 1 1 -> interpolated AP = .5*1 + .5*2/3
    ap_a = 0.5 + 0.5 * 2 / 3
    assert res["per_class"]["A"] == pytest.approx([ap_a] * 5)
    assert res["per_class"]["B"] == pytest.approx([1, 1, 1, 1, 0])
    for thr in (0.3, 0.4, 0.5, 0.6):
        assert res[f"mAP@{thr:g}"] == pytest.approx((ap_a + 1) / 2)
    assert res["mAP@0.7"] == pytest.approx(ap_a / 2)
    assert res["average_mAP"] == pytest.approx((4 * (ap_a + 1) / 2 + ap_a / 2) / 5)
    # a class with no prediction scores 0; perfect predictions score 1
    assert detection_map(gt, [p for p in preds if p["label"] == "B"])["per_class"]["A"] == [0.0] * 5
    perfect = [{**g, "score": 1.0} for g in gt]
    assert detection_map(gt, perfect)["average_mAP"] == pytest.approx(1.0)


def test_retrieval_ties_are_pessimistic_by_hand():
    const = retrieval_metrics(np.ones((20, 20)))
    assert const["text_to_video"]["R@1"] == 0.0 and const["video_to_text"]["R@10"] == 0.0
    assert const["text_to_video"]["median_rank"] == 20
    assert const["chance"]["R@1"] == pytest.approx(1 / 20) and const["chance"]["median_rank"] == 10.5
    assert retrieval_metrics(np.eye(12))["text_to_video"] == {
        "R@1": 1.0,
        "R@5": 1.0,
        "R@10": 1.0,
        "median_rank": 1.0,
        "mean_rank": 1.0,
    }
    # rows: query 0 ranks its item 1st, query 1 ties with one other (-> 2nd), query 2 has two above (-> 3rd)
    sim = np.array([[0.9, 0.1, 0.0], [0.5, 0.5, 0.2], [0.8, 0.7, 0.3]])
    r = retrieval_metrics(sim, ks=(1, 2))
    assert r["text_to_video"] == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "median_rank": 2, "mean_rank": 2})
    # columns: item 0 -> 1st; item 1 -> 0.5 below 0.7 -> 2nd; item 2 -> 0.3 highest -> 1st
    assert r["video_to_text"] == pytest.approx({"R@1": 2 / 3, "R@2": 1, "median_rank": 1, "mean_rank": 4 / 3})
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.ones((3, 4)))


def test_eval_detection_and_retrieval_commands(tmp_path):
    gt, preds = _gt_and_preds()
    write_ground_truth(tmp_path / "gt.json", gt)
    write_predictions(tmp_path / "pred.json", preds)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["eval", "detection", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"), "-f", "json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert list(out)[:6] == ["mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "average_mAP"]
    assert out["average_mAP"] == pytest.approx(detection_map(gt, preds)["average_mAP"])
    res = runner.invoke(
        app, ["eval", "detection", "--gt", str(tmp_path / "pred.json"), "--pred", str(tmp_path / "pred.json")]
    )
    assert res.exit_code == 2 and "pred.json" in res.output and "database" in res.output

    np.save(tmp_path / "sim.npy", np.eye(5) + 0.1)
    res = runner.invoke(app, ["eval", "retrieval", "--sim", str(tmp_path / "sim.npy"), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["video_to_text"]["R@1"] == 1.0
    res = runner.invoke(app, ["eval", "retrieval", "--sim", str(tmp_path / "sim.npy")])
    assert res.exit_code == 0 and "text_to_video" in res.output
    np.save(tmp_path / "bad.npy", np.ones((2, 3)))
    res = runner.invoke(app, ["eval", "retrieval", "--sim", str(tmp_path / "bad.npy")])
    assert res.exit_code == 2 and "bad.npy" in res.output


def test_eval_detection_subset_scores_only_that_subset(tmp_path):
    gt, preds = _gt_and_preds()
    db = {
        "a": {
            "subset": "testing",
            "annotations": [{"segment": [0, 10], "label": "A"}, {"segment": [20, 30], "label": "A"}],
        },
        "b": {"subset": "training", "annotations": [{"segment": [0, 10], "label": "B"}]},
    }
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    write_predictions(tmp_path / "pred.json", [p for p in preds if p["video"] == "a"])
    res = CliRunner().invoke(
        app,
        ["eval", "detection", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
         "--subset", "testing", "-f", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out["per_class"]) == {"A"}  # class B exists only in the training subset
    # without 'zz', class A has precisions 1, 1/2, 2/3 at recalls .5, .5, 1: AP = .5 + .5 * 2/3
    assert out["average_mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)
