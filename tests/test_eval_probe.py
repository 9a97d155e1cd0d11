"""The linear-probe protocol on generated features, test-time views, the feature cache on real decoded clips,
and the per-run report."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eval.baselines import baselines, collapse_reason
from eval.features import FeatureCache, load_feature_encoder
from eval.probe import FIXED, PUBLISHED, Split, run_probe
from eval.report import read_csv, write_run
from eval.views import ViewSpec, spatial_crops, temporal_indices


def separable(n_per_class: int, n_classes: int = 4, views: int = 15, dim: int = 32, seed: int = 0, videos=None):
    """Class c: mean vector 3 * e_c plus unit noise, per view; labels 0..C-1."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    means = np.zeros((n_classes, dim))
    means[np.arange(n_classes), np.arange(n_classes)] = 3.0
    feats = means[labels][:, None, :] + rng.standard_normal((len(labels), views, dim))
    keys = [f"ds/clip_{seed}_{i}.mp4" for i in range(len(labels))]
    return Split(keys, labels, feats.astype(np.float32), videos)


def test_fixed_probe_learns_a_separable_task_and_beats_the_baselines():
    train, val, test = separable(40, seed=0), separable(10, seed=1), separable(25, seed=2)
    test.videos = [f"v{i % 5}" for i in range(len(test.keys))]
    res = run_probe(train, val, test, replace(FIXED, min_steps=300))
    assert res.metrics["accuracy"] >= 0.95 and res.metrics["macro_f1"] >= 0.95
    assert res.metrics["video_jaccard"] >= 0.9
    assert res.steps >= 300 and res.head_size == 4 and res.collapsed is None
    assert res.baselines["chance_accuracy"] == 0.25 and res.baselines["majority_accuracy"] == pytest.approx(0.25)
    assert len(res.predictions) == 100


def test_published_protocol_takes_no_step_on_a_small_set_with_drop_last():
    train, test = separable(10, seed=0), separable(10, seed=2)  # 40 clips < batch 64, drop_last: 0 steps per epoch
    res = run_probe(train, None, test, PUBLISHED, head_size=14)
    assert res.steps == 0 and res.head_size == 14
    big = run_probe(separable(40, seed=0), None, test, PUBLISHED)
    assert big.steps == 50 * (160 // 64)  # 2 optimiser steps per epoch


def test_published_keys_merge_clips_whose_basenames_agree_up_to_the_first_dot():
    test = separable(5, seed=2)
    test.keys = [f"JIGSAWS/videos/Suturing_B001_capture1_0.{i // 2}_G1.mp4" for i in range(len(test.keys))]
    res = run_probe(separable(40), None, test, PUBLISHED)
    assert res.n["test"] == 20 and res.n["test_keys"] == 1  # 'Suturing_B001_capture1_0' for every clip


def test_collapse_flag_fires_on_a_constant_predictor():
    y = np.array([0, 0, 0, 1, 2, 2])
    assert collapse_reason(y, np.zeros(6, dtype=int)).startswith("predicts one class")
    assert collapse_reason(y, np.array([0, 1, 1, 1, 2, 1])).startswith("accuracy equals the test majority")
    assert collapse_reason(y, y) is None
    b = baselines([2, 2, 1], y.tolist(), 3)
    assert b["majority_accuracy"] == pytest.approx(2 / 6) and b["test_majority_rate"] == pytest.approx(3 / 6)


def test_temporal_and_spatial_views_follow_surgrec_test_mode():
    views = temporal_indices(100, 16)  # every 4th frame: 25 frames; starts int(k * 9 / 4) = 0, 2, 4, 6, 9
    assert [int(v[0]) for v in views] == [0, 8, 16, 24, 36] and all(len(v) == 16 for v in views)
    assert list(views[0]) == list(range(0, 64, 4))
    short = temporal_indices(20, 16)  # 5 subsampled frames, padded with the last
    assert list(short[4]) == [0, 4, 8, 12, 16] + [16] * 11
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, :, 300:] = 255
    crops = spatial_crops(frames, (224, 224))  # short side 240 -> 224, long side 320 -> 299: offsets 0, 38, 75
    assert [c.shape for c in crops] == [(2, 224, 224, 3)] * 3
    assert crops[0].max() == 0 and crops[2][:, :, -1].min() == 255


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_feature_cache_per_clip_and_view(tmp_path):
    clips = []
    for i, src in enumerate(["testsrc2", "smptebars"]):
        path = tmp_path / f"clip{i}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{src}=size=96x72:rate=25:duration=2", str(path)],
            check=True,
        )
        clips.append((f"ds/clip{i}.mp4", path, None))
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    enc = load_feature_encoder("default")
    cache = FeatureCache(tmp_path / "cache", enc, ViewSpec(temporal=2, spatial=3))
    feats, failed = cache.features([*clips, ("ds/bad.mp4", tmp_path / "bad.mp4", "x")])
    assert feats["ds/clip0.mp4"].shape == (6, enc.dim) and set(feats) == {"ds/clip0.mp4", "ds/clip1.mp4"}
    assert [f["clip"] for f in failed] == ["ds/bad.mp4"] and "bad.mp4" in failed[0]["error"]
    assert not np.allclose(feats["ds/clip0.mp4"][0], feats["ds/clip1.mp4"][0])
    parts = sorted(cache.dir.glob("part-*.parquet"))
    again, failed = cache.features(clips)
    assert sorted(cache.dir.glob("part-*.parquet")) == parts and not failed  # served from the cache
    assert np.array_equal(again["ds/clip0.mp4"], feats["ds/clip0.mp4"])
    shutil.copy(clips[1][1], clips[0][1])  # the clip file changed: its fingerprint too, so it is re-encoded
    third, _ = cache.features(clips)
    assert len(list(cache.dir.glob("part-*.parquet"))) == len(parts) + 1
    assert np.allclose(third["ds/clip0.mp4"], feats["ds/clip1.mp4"], atol=1e-5)


def test_write_run_writes_markdown_csv_and_plot(tmp_path):
    rows = [
        {"dataset": "a", "accuracy": 0.8, "majority_accuracy": 0.3, "chance_accuracy": 0.25, "collapsed": ""},
        {"dataset": "b", "accuracy": 0.5, "majority_accuracy": 0.5, "chance_accuracy": 0.5, "collapsed": "one class"},
    ]
    cols = ["dataset", "accuracy", "majority_accuracy", "chance_accuracy", "collapsed"]
    paths = write_run(tmp_path / "run", rows, cols, "test run", "accuracy")
    md = paths["md"].read_text()
    assert "| a | 80.00 | 30.00 | 25.00 |  |" in md and "**Collapsed**" in md and "b." in md
    assert read_csv(paths["csv"])[1]["collapsed"] == "one class"
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_features_from_a_trainer_checkpoint(tmp_path):
    import torch

    from trainers.checkpoint import encoder_config
    from trainers.config import load_config
    from trainers.recipe import default_config, model_from_config

    cfg = load_config(default_config("mae"))
    model = model_from_config(cfg.model_dump(mode="json"))
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "config": encoder_config(cfg)}, ckpt)
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x72:rate=25:duration=1", str(clip)], check=True
    )
    enc = load_feature_encoder(str(ckpt))
    assert enc.encoder_id.startswith("ckpt-mae-last-") and enc.frame_size == (64, 64) and enc.num_frames == 8
    feats, failed = FeatureCache(tmp_path / "cache", enc).features([("c.mp4", clip, None)])
    assert not failed and feats["c.mp4"].shape == (15, enc.dim) and np.isfinite(feats["c.mp4"]).all()
    assert not np.allclose(feats["c.mp4"][0], feats["c.mp4"][14])  # first and last view differ
