"""``benchmark fix`` on the real published SurgRec splits and the real Cholec80 annotations (videos 41-60)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from corpus.benchmark.audit import audit, read_splits, video_key
from corpus.benchmark.fix import fix, fixable_defects
from corpus.benchmark.plan import plan
from corpus.benchmark.spec import default_benchmark, load_benchmark

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPLITS = SHARED / "data" / "surgrec-splits"
CHOLEC80_GT = (
    SHARED / "data" / "real" / "YuemingJin__TMRNet_cholec80_eval" / "code" / "eval" / "matlab-phase" / "gt-phase"
)

pytestmark = pytest.mark.skipif(
    not (SPLITS.is_dir() and CHOLEC80_GT.is_dir()), reason=f"SurgRec splits or Cholec80 annotations not in {SHARED}"
)


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(default_benchmark())


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.csv"))}


def test_cholec80_fix_carves_val_relabels_and_keeps_test(bench):
    spec = bench.get("cholec80")
    published = read_splits(SPLITS / "cholec80")
    planned = plan(spec, CHOLEC80_GT)
    before = audit(spec, published, planned)
    wrong = {m["clip"]: m["annotated"] for m in before["label_mismatches"]}
    assert len(wrong) == 7  # the known mislabelled rows (videos 41, 50, 57, 60)

    rows, report = fix(spec, published, planned)
    vids = {s: {video_key("cholec80", p) for p, _ in r} for s, r in rows.items()}
    assert rows["val"] and sorted(rows["val"]) != sorted(rows["test"])
    assert not (vids["train"] & vids["val"] or vids["train"] & vids["test"] or vids["val"] & vids["test"])
    assert vids["val"] <= {video_key("cholec80", p) for p, _ in published["train"]}  # carved from train
    assert len(rows["train"]) + len(rows["val"]) == len(published["train"])
    fixed_test = dict(rows["test"])
    assert set(fixed_test) == {p for p, _ in published["test"]}
    assert {p: fixed_test[p] for p in wrong} == wrong
    assert fixed_test["cholec80/split_video/cholec80_41_5.mp4"] == 5
    assert report["counts"] == {"relabelled": 7, "moved": len(rows["val"])}
    assert not fixable_defects(audit(spec, rows, planned))


def test_fix_all_then_audit_reports_no_fixable_defect(tmp_path):
    runner = CliRunner()
    published = _digests(SPLITS)
    out = tmp_path / "fixed"
    res = runner.invoke(
        app,
        [
            "benchmark",
            "fix",
            "all",
            "--splits",
            str(SPLITS),
            "--out",
            str(out),
            "--root-for",
            f"cholec80={CHOLEC80_GT}",
        ],
    )
    assert res.exit_code == 0, res.output
    assert _digests(SPLITS) == published  # the published files are untouched
    res = runner.invoke(
        app,
        ["benchmark", "audit", "all", "--splits", str(out), "--root-for", f"cholec80={CHOLEC80_GT}", "-f", "json"],
    )
    assert res.exit_code == 0, res.output
    reports = json.loads(res.output)
    assert len(reports) == 16
    bench = load_benchmark(default_benchmark())
    assert {r["dataset"]: fixable_defects(r, bench.get(r["dataset"])) for r in reports} == {
        r["dataset"]: [] for r in reports
    }
    res = runner.invoke(app, ["benchmark", "audit", "all", "--splits", str(SPLITS), "-f", "json"])
    before = json.loads(res.output)
    m2_before = fixable_defects(
        next(r for r in before if r["dataset"] == "m2cai16-workflow"), bench.get("m2cai16-workflow")
    )
    assert "rows of artefact classes ['Phase']" in m2_before
    assert sum(bool(fixable_defects(r)) for r in before) == 10  # val = test in 9, shared videos in 5 (4 of them)

    # M2CAI16: the header-row class 'Phase' (id 6) is gone from every split and from the label map
    m2 = out / "M2CAI16-Workflow"
    assert all(lab != 6 for rows in read_splits(m2).values() for _, lab in rows)
    assert "Phase" not in json.loads((m2 / "label_map.json").read_text())["label_to_index"]
    diff = json.loads((m2 / "fix_report.json").read_text())
    dropped = [c for c in diff["changes"] if c["action"] == "dropped"]
    assert len(dropped) == 27 + 14 and all("header row" in c["reason"] for c in dropped)
    assert "| dropped |" in (m2 / "fix_report.md").read_text()
    # kvasir-capsule paths with spaces keep SurgRec's quoting
    assert (out / "kvasir-capsule" / "test.csv").read_text().startswith('"__DATA_ROOT__/kvasir-capsule/videos/')
    assert "| hyper-kvasir |" in (out / "fix_report.md").read_text()


def test_leaking_drop_keeps_the_published_test_set(bench):
    spec = bench.get("hyper-kvasir")
    published = read_splits(SPLITS / "hyper-kvasir")
    rows, report = fix(spec, published, leaking="drop")
    assert sorted(rows["test"]) == sorted(published["test"])
    train = {video_key("hyper-kvasir", p) for p, _ in rows["train"]}
    assert not train & {video_key("hyper-kvasir", p) for p, _ in rows["test"]}
    assert report["videos_in_several_splits"] == 93 and report["counts"]["dropped"] > 0
    assert not fixable_defects(audit(spec, rows))


def test_fix_refuses_to_write_into_the_published_folder(tmp_path):
    res = CliRunner().invoke(
        app, ["benchmark", "fix", "cholec80", "--splits", str(SPLITS), "--out", str(SPLITS / "x")]
    )
    assert res.exit_code == 2 and "never overwritten" in res.output
