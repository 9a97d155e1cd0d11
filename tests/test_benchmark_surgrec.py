"""The SurgRec benchmark rebuilt from native annotations: clip names, labels and the audit, on real files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.benchmark import app
from corpus.benchmark.audit import audit, read_splits
from corpus.benchmark.plan import plan
from corpus.benchmark.spec import default_benchmark, load_benchmark

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "data" / "real"
SPLITS = SHARED / "data" / "surgrec-splits"
CATARACT101 = REAL / "matinmoqadas__Cataract-101"
JIGSAWS = REAL / "anidhi__homework3_JIGSAWS"
CHOLEC80_GT = REAL / "YuemingJin__TMRNet_cholec80_eval" / "code" / "eval" / "matlab-phase" / "gt-phase"

pytestmark = pytest.mark.skipif(not SPLITS.is_dir(), reason=f"SurgRec split CSVs not found at {SPLITS}")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(default_benchmark())


def published(dataset: str) -> dict[str, int]:
    return {p: lab for rows in read_splits(SPLITS / dataset).values() for p, lab in rows}


def test_cataract101_plan_reproduces_every_published_clip(bench):
    clips = plan(bench.get("cataract-101"), CATARACT101)
    pub = published("cataract-101")
    assert {c.path for c in clips} == set(pub)
    assert len(clips) == len(pub) == 1265
    assert all(pub[c.path] == c.label_id for c in clips)


def test_jigsaws_plan_reproduces_every_published_suturing_clip(bench):
    clips = plan(bench.get("jigsaws"), JIGSAWS)
    pub = {p: lab for p, lab in published("JIGSAWS").items() if "/Suturing_" in p}
    assert {c.path for c in clips} == set(pub)
    assert all(pub[c.path] == c.label_id for c in clips)
    assert not any(c.path.endswith("_G10.mp4") for c in clips)


def test_cholec80_audit_flags_exactly_the_videos_with_wrong_published_labels(bench):
    report = audit(bench.get("cholec80"), read_splits(SPLITS / "cholec80"), plan(bench.get("cholec80"), CHOLEC80_GT))
    # Independent oracle: the k-th published clip of a video carries label k-1, so it is wrong exactly where the
    # k-th contiguous phase run of the ground truth is not phase k-1.
    expected = set()
    for f in sorted(CHOLEC80_GT.glob("video*-phase.txt")):
        phases = [line.split()[1] for line in f.read_text().splitlines() if line.strip()]
        run_phases = [int(p) for p, _ in itertools.groupby(phases)]
        n = int(f.name[5:7])
        pub = {
            p: lab for p, lab in published("cholec80").items() if p.startswith(f"cholec80/split_video/cholec80_{n}_")
        }
        if any(pub.get(f"cholec80/split_video/cholec80_{n}_{k}.mp4") != ph for k, ph in enumerate(run_phases, 1)):
            expected.add(f"cholec80/video{n}")
    assert expected  # the real data has such videos (41 and 50 among them)
    assert set(report["videos_with_label_mismatches"]) == expected
    assert {"cholec80/video41", "cholec80/video50"} <= expected
    m = next(m for m in report["label_mismatches"] if m["clip"].endswith("cholec80_41_5.mp4"))
    assert (m["published"], m["annotated"], m["annotated_label"]) == (4, 5, "CleaningCoagulation")
    assert report["val_equals_test"] and not report["clip_count_differences"]


def test_cli_clips_writes_surgrec_rows_and_audit_json(tmp_path):
    runner = CliRunner()
    out = tmp_path / "c101.csv"
    res = runner.invoke(app, ["clips", "cataract-101", "--root", str(CATARACT101), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = out.read_text().splitlines()
    assert rows[0] == "cataract-101/split_clip/phase_01_incision/case_269_phase01_001_000068_001043.mp4 0"
    assert len(rows) == 1265
    res = runner.invoke(app, ["audit", "cholec80", "--root", str(CHOLEC80_GT), "--splits", str(SPLITS), "-f", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["sha256_matches_pin"] == {"train": True, "val": True, "test": True}
    assert report["label_mismatches"]
    assert all(m["published"] != m["annotated"] for m in report["label_mismatches"])


def test_audit_all_writes_a_report_page(tmp_path):
    page = tmp_path / "audit.md"
    res = CliRunner().invoke(
        app,
        ["audit", "all", "--splits", str(SPLITS), "--root-for", f"cataract-101={CATARACT101}", "--report", str(page)],
    )
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert text.count("\n| ") >= 16 + 1  # header row + one row per dataset
    assert "| m2cai16-workflow |" in text and "val.csv equals test.csv" in text


def test_cat21_plan_reproduces_every_published_clip(bench, tmp_path):
    """Annotations shaped as the release (per-frame case_NN.csv in training/ and validation/) with each video's
    phase runs in the order the published indices give; the plan must name exactly the published clips."""
    pub = published("cat-21")
    runs: dict[str, dict[int, str]] = {}
    for p in pub:
        phase, name = p.split("/")[-2:]
        case, subset, k = name.removesuffix(".mp4").rsplit("_", 2)
        runs.setdefault(f"{subset}/{case}", {})[int(k)] = phase
    for key, by_k in runs.items():
        assert sorted(by_k) == list(range(len(by_k)))  # indices are contiguous from 0: every run is published
        order = [by_k[k] for k in sorted(by_k)]
        rows = [f"{i * 7 + j},{phase}" for i, phase in enumerate(order) for j in range(7)]
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{key}.csv").write_text("Frame,Phase\n" + "\n".join(rows) + "\n")
    clips = plan(bench.get("cat-21"), tmp_path)
    assert {c.path for c in clips} == set(pub) and len(clips) == len(pub) == 264
    assert all(pub[c.path] == c.label_id for c in clips)
    assert {c.video_file for c in clips if "case_18" in c.path} == {"validation/case_18.mp4"}


def test_ldpolypvideo_has_no_naming_scheme_and_audits_splits_only(tmp_path):
    raw = tmp_path / "raw"
    (raw / "Videos").mkdir(parents=True)
    (raw / "Videos" / "0_43.avi").write_bytes(b"")
    runner = CliRunner()
    res = runner.invoke(app, ["clips", "ldpolypvideo", "--root", str(raw), "--out", str(tmp_path / "c.csv")])
    assert res.exit_code == 2 and "cannot be derived from the annotations" in res.output
    res = runner.invoke(app, ["audit", "ldpolypvideo", "--root", str(raw), "--splits", str(SPLITS), "-f", "json"])
    report = json.loads(res.output)
    assert res.exit_code == 0 and report["annotation_checked"] is False and report["val_equals_test"] is True
    assert "random" in report["annotation_not_checked_because"]

    # the same raw video in train and test: oracle from the names, parsed from the right
    def vids(split: str) -> set[str]:
        stems = (p.rsplit("/", 1)[1].removesuffix(".mp4") for p, _ in read_splits(SPLITS / "LDPolyVideo")[split])
        return {st.removesuffix("_no_polyps").removesuffix("_polyps").rsplit("_", 2)[0] for st in stems}

    shared = vids("train") & vids("test")
    assert sorted(report["shared_videos"]["train/test"]) == sorted(shared) and len(shared) > 50


KC_COLUMNS = "filename;video_id;frame_number;finding_category;finding_class;x1;y1;x2;y2;x3;y3;x4;y4"
KC_CLASSES = {  # published folder -> Kvasir-Capsule finding_class
    "Ileocecal valve": "Ileocecal valve",
    "blood-fresh": "Blood - fresh",
    "foreign-body": "Foreign body",
    "lymphangiectasia": "Lymphangiectasia",
    "normal-clean-mucosa": "Normal clean mucosa",
    "pylorus": "Pylorus",
    "reduced-mucosal-view": "Reduced mucosal view",
}


def _kvasir_capsule_metadata(folder: Path, segments: list[tuple[str, str, int, int]]) -> Path:
    """``metadata.csv`` as released: one ``;``-separated row per labelled frame (boxes empty)."""
    rows = [
        f"{vid}_{f}.jpg;{vid};{f};{'Anatomy' if cls in ('Pylorus', 'Ileocecal valve') else 'Luminal'};{cls}" + ";" * 8
        for vid, cls, a, b in segments
        for f in range(a, b)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.csv").write_text(KC_COLUMNS + "\n" + "\n".join(rows) + "\n")
    return folder


def test_kvasir_capsule_window_rule_is_consistent_with_every_published_row(bench, tmp_path):
    """A consistency check of the naming rule, not a check against the real metadata.csv (we have none): segments
    are derived from the published names alone, written as per-frame metadata.csv rows, and planned."""
    pub = published("kvasir-capsule")
    windows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for p in pub:
        folder, name = p.split("/")[-2:]
        vid, span = name.removesuffix(".mp4").split("_")
        a, b = map(int, span.split("-"))
        assert 0 < b - a <= 80
        windows.setdefault((vid, KC_CLASSES[folder]), []).append((a, b))
    # 1. each maximal run of adjacent published windows as one segment: the plan names exactly the published rows,
    #    so a window shorter than 80 frames only ever ends a run and no run leaves a window out
    runs = []
    for (vid, cls), ws in windows.items():
        for a, b in sorted(ws):
            if runs and runs[-1][:2] == (vid, cls) and runs[-1][3] == a and (a - runs[-1][2]) % 80 == 0:
                runs[-1] = (vid, cls, runs[-1][2], b)
            else:
                runs.append((vid, cls, a, b))
    clips = plan(bench.get("kvasir-capsule"), _kvasir_capsule_metadata(tmp_path / "runs", runs))
    assert sorted(c.path for c in clips) == sorted(pub) and len(clips) == len(pub) == 411
    assert all(pub[c.path] == c.label_id for c in clips)
    assert all(c.path.endswith(f"_{c.start_frame}-{c.end_frame}.mp4") for c in clips)  # cut = named frames
    # 2. one segment per video, class and 80-frame grid, first to last published frame: every published row is
    #    planned with its label, and the published rows are a subset of those windows (which ones is not derivable)
    spans = {}
    for (vid, cls), ws in windows.items():
        for a, b in sorted(ws):
            key = (vid, cls, a % 80)
            spans[key] = (min(spans.get(key, (a, b))[0], a), max(spans.get(key, (a, b))[1], b))
    segs = [(vid, cls, a, b) for (vid, cls, _), (a, b) in spans.items()]
    clips = plan(bench.get("kvasir-capsule"), _kvasir_capsule_metadata(tmp_path / "spans", segs))
    planned = {c.path: c.label_id for c in clips}
    assert all(planned.get(p) == lab for p, lab in pub.items())
    assert len(planned) > 3 * len(pub)  # published: under a third of the windows these spans hold


def test_hyper_kvasir_has_no_naming_scheme(tmp_path):
    """SurgRec's <uuid>_<k>.avi pieces depend on each video's length and an unpublished piece length."""
    raw = tmp_path / "raw" / "labeled-videos" / "lower-gi-tract" / "polyps"
    raw.mkdir(parents=True)
    (raw / "0c35ad30-14c3-4ab9-b60b-b421e568a921.avi").write_bytes(b"")
    res = CliRunner().invoke(
        app, ["clips", "hyper-kvasir", "--root", str(raw.parents[2]), "--out", str(tmp_path / "c")]
    )
    assert res.exit_code == 2 and "cannot be derived from the annotations" in res.output
