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
        app, ["eval", "opensurgery", "-c", "default", "--build", str(demo), "-o", str(out), "--no-progress"]
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
