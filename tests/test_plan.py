"""``surgcorpus plan``: expected (published) vs found (local, probed) figures; the SurgRec pretraining manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from builders.plan import REFERENCE_FRAMES, REFERENCE_VIDEOS, plan_corpus
from cli.main import app
from corpus.manifest import load_manifest, load_source
from corpus.resolve import plan_videos
from corpus.testing import make_video
from tests.conftest import write_manifest

REPO = Path(__file__).resolve().parents[1]
SURGREC = REPO / "manifests" / "surgrec.yaml"
LEMON = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "visurg-ai__LEMON" / "labels.json"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three sources: 2 local videos of 10 and 15 frames + a corrupt file; a YouTube list; a train-only source."""
    root = tmp_path_factory.mktemp("plan")
    make_video(root / "lap" / "a.mp4", 1.0, size="64x48", rate=10)
    make_video(root / "lap" / "b.mp4", 1.5, size="64x48", rate=10)
    (root / "lap" / "broken.mp4").write_bytes(b"not a video" * 50)
    make_video(root / "cat" / "c1.mp4", 1.0, size="64x48", rate=10)
    make_video(root / "cat" / "c2.mp4", 1.0, size="64x48", rate=10)
    (root / "web.csv").write_text("youtube_id,title\n80czDESoMiQ,one\nAAAAAAAAAAA,two\n")
    return write_manifest(
        root / "m.yaml",
        {
            "name": "p",
            "sources": [
                {
                    "name": "lap",
                    "domain": "laparoscopy",
                    "root": "lap",
                    "videos": {"glob": "*.mp4"},
                    "expected": {"videos": 3, "hours": 0.5, "fps": 10, "reference": "paper A"},
                },
                {
                    "name": "web",
                    "domain": "laparoscopy",
                    "access": "youtube",
                    "videos": {"list": "web.csv"},
                    "expected": {"videos": 2, "frames": 1000, "reference": "list B"},
                },
                {
                    "name": "cat",
                    "domain": "cataract",
                    "root": "cat",
                    "videos": {"glob": "*.mp4"},
                    "splits": {"train": ["c1"], "test": ["c2"]},
                    "use_splits": ["train"],
                },
            ],
        },
    )


def test_expected_found_and_probed_figures(corpus: Path) -> None:
    plan = plan_corpus(load_manifest(corpus), probe=True)
    by = {s.source: s.figures for s in plan.sources}
    lap, web, cat = by["lap"], by["web"], by["cat"]
    assert (lap.expected_videos, lap.expected_hours, lap.expected_frames, lap.frames_estimated) == (3, 0.5, 18000, 1)
    assert (lap.found_videos, lap.probed_videos, lap.found_frames) == (3, 2, 25)
    assert lap.found_hours == pytest.approx(2.5 / 3600, rel=0.05)
    assert (web.found_videos, web.found_remote, web.probed_videos, web.found_frames) == (2, 2, 0, None)
    assert (cat.found_videos, cat.found_frames, cat.unknown_videos) == (1, 10, 1)
    [err] = plan.errors
    assert err.stage == "plan-probe" and err.video_id == "lap/broken" and "broken.mp4" in err.message
    lapd = plan.domains["laparoscopy"]
    assert (lapd.expected_videos, lapd.expected_frames, lapd.unknown_hours, lapd.found_frames) == (5, 19000, 1, 25)
    t = plan.total
    assert (t.expected_videos, t.unknown_videos, t.expected_hours, t.unknown_hours) == (5, 1, 0.5, 2)
    assert (t.found_videos, t.found_remote, t.found_frames) == (6, 2, 35)
    vs = plan.to_dict()["versus_reference"]
    assert vs["expected_videos"] == round(5 / REFERENCE_VIDEOS, 4)
    assert vs["found_frames"] == round(35 / REFERENCE_FRAMES, 4)


def test_without_probe_nothing_is_decoded(corpus: Path) -> None:
    plan = plan_corpus(load_manifest(corpus))
    assert plan.total.found_videos == 6 and plan.total.found_frames is None and plan.errors == []


def test_cli_json_and_table(corpus: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["plan", str(corpus), "--format", "json", "--probe"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["total"]["found_frames"] == 35 and data["reference"]["videos"] == REFERENCE_VIDEOS
    assert [s["source"] for s in data["sources"]] == ["lap", "web", "cat"]
    res = runner.invoke(app, ["plan", str(corpus)])
    assert res.exit_code == 0, res.output
    assert "all sources" in res.stdout and "all cataract" in res.stdout and "10,535" in res.stdout
    assert runner.invoke(app, ["plan", str(corpus), "--format", "xml"]).exit_code == 2


def test_surgrec_manifest_validates_and_takes_benchmark_train_videos_only() -> None:
    res = CliRunner().invoke(app, ["validate", str(SURGREC)])
    assert res.exit_code == 0, res.output
    m = load_manifest(SURGREC)
    assert {s.domain for s in m.sources} == {"laparoscopy", "endoscopy", "cataract", "robotic", "open", "other"}
    benchmark_cards = {p.stem for p in (REPO / "manifests" / "sources").glob("*.yaml")}
    for src in m.sources:
        assert src.expected is not None and src.expected.reference, src.name
        if src.name in benchmark_cards:  # a benchmark dataset: its train videos only, none of val/test
            assert src.use_splits == ("train",) and src.splits is not None, src.name
            assert not set(src.splits.train) & set(src.splits.test), src.name
            assert src.expected.videos == len(src.splits.train), src.name


def test_pretrain_cholec80_takes_videos_1_to_40(tmp_path: Path) -> None:
    for i in range(1, 81):
        (tmp_path / f"video{i:02d}.mp4").write_bytes(b"")
    src = load_source(REPO / "manifests" / "pretrain" / "cholec80.yaml").model_copy(update={"root": str(tmp_path)})
    m = load_manifest(SURGREC).model_copy(update={"sources": (src,)})
    plan, errors = plan_videos(m)
    assert errors == [] and [r["native_id"] for r in plan] == [f"video{i:02d}" for i in range(1, 41)]


def test_surgrec_plan_counts_lemon(tmp_path: Path) -> None:
    if not LEMON.is_file():
        pytest.skip(f"real LEMON labels.json not present at {LEMON}")
    plan = plan_corpus(load_manifest(SURGREC))
    by = {s.source: s.figures for s in plan.sources}
    assert by["lemon-laparoscopy"].found_videos + by["lemon-robotic"].found_videos == 4194
    assert by["lemon-robotic"].found_remote == 1667


def test_full_manifest_expects_the_reference_scale_without_network(monkeypatch) -> None:
    """Figures come from the manifests' expected blocks and the lists present; absent lists are expected-not-found."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("plan tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    res = CliRunner().invoke(app, ["plan", str(SURGREC), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["total"]["expected_videos"] >= REFERENCE_VIDEOS
    by = {s["source"]: s for s in data["sources"]}
    assert by["surgatlas"]["figures"]["expected_videos"] == 15291 and by["surgatlas"]["figures"]["found_videos"] == 0
    assert by["ophnet"]["figures"]["found_videos"] == 1969  # the MIT-licensed list copied into the repository
    missing = [e for e in data["errors"] if e["uri"].endswith(("surgatlas/procedures.json", "avos.csv"))]
    assert len(missing) == 2 and all("video list not found" in e["message"] for e in missing)
    yt = ("lemon-laparoscopy", "lemon-robotic", "opensurgery-pretrain", "avos")
    distinct_at_least = data["total"]["expected_videos"] - sum(by[n]["figures"]["expected_videos"] for n in yt)
    assert distinct_at_least >= REFERENCE_VIDEOS  # even if SurgAtlas held every video of the other YouTube lists
    assert set(data["licenses"]) >= {"CC-BY-4.0", "CC-BY-NC-SA-4.0", "youtube-uploader-terms", "unknown"}


@pytest.fixture()
def shared_lists(tmp_path: Path) -> Path:
    """Three sources whose lists share videos: by YouTube id (CSV vs SurgAtlas JSON), by URL and by sha256; a
    benchmark source holding out one URL that a later list names again."""
    sha = "ab" * 32
    (tmp_path / "a.csv").write_text("youtube_id,title\n80czDESoMiQ,one\nSOam94xJXF0,two\nAAAAAAAAAAA,three\n")
    (tmp_path / "b.json").write_text(
        json.dumps({"SOam94xJXF0": {"surgery": "open"}, "80czDESoMiQ": {"surgery": "open"}, "BBBBBBBBBBB": {}})
    )
    (tmp_path / "c.csv").write_text(
        "url,title\nhttps://youtu.be/AAAAAAAAAAA,again\nHTTPS://Example.org/v/x.mp4#t=1,x\n"
        "https://example.org/v/test.mp4,held out\nhttps://example.org/v/y.mp4,y\n"
    )
    return write_manifest(
        tmp_path / "m.yaml",
        {
            "name": "o",
            "sources": [
                {
                    "name": "bench",
                    "domain": "laparoscopy",
                    "access": "http",
                    "license_id": "CC-BY-NC-SA-4.0",
                    "videos": [
                        {"uri": "https://example.org/v/train.mp4", "id": "train"},
                        {"uri": "https://example.org/v/test.mp4", "id": "test"},
                        {"uri": "https://mirror.org/z.mp4", "id": "z", "sha256": sha},
                    ],
                    "splits": {"train": ["train", "z"], "test": ["test"]},
                    "use_splits": ["train"],
                },
                {
                    "name": "a",
                    "domain": "open",
                    "access": "youtube",
                    "license_id": "youtube-uploader-terms",
                    "videos": {"list": "a.csv"},
                    "expected": {"videos": 3, "reference": "list A"},
                },
                {
                    "name": "b",
                    "domain": "other",
                    "access": "youtube",
                    "license_id": "youtube-uploader-terms",
                    "videos": {"list": "b.json", "format": "surgatlas"},
                    "expected": {"videos": 3, "reference": "B"},
                },
                {
                    "name": "c",
                    "domain": "open",
                    "access": "http",
                    "license_id": "CC-BY-4.0",
                    "videos": {"list": "c.csv"},
                },
                {
                    "name": "d",
                    "domain": "open",
                    "access": "http",
                    "license_id": "CC-BY-4.0",
                    "videos": [
                        {"uri": "https://example.org/v/x.mp4"},
                        {"uri": "https://other.org/q.mp4", "sha256": sha},
                    ],
                },
            ],
        },
    )


def test_videos_listed_by_several_sources_are_planned_once(shared_lists: Path) -> None:
    from corpus.resolve import resolve_plan

    m = load_manifest(shared_lists)
    resolved = resolve_plan(m)
    ids = [r["video_id"] for r in resolved.rows]
    assert sorted(ids) == [
        "a/80czDESoMiQ", "a/AAAAAAAAAAA", "a/SOam94xJXF0", "b/BBBBBBBBBBB",
        "bench/train", "bench/z", "c/x", "c/y",
    ]  # fmt: skip
    plan = plan_corpus(m)
    assert plan.overlap == [
        {"kept_in": "a", "source": "b", "reason": "overlap", "videos": 2, "by": {"youtube": 2}},
        {"kept_in": "a", "source": "c", "reason": "overlap", "videos": 1, "by": {"youtube": 1}},
        {"kept_in": "bench", "source": "c", "reason": "held_out", "videos": 1, "by": {"url": 1}},
        {"kept_in": "bench", "source": "d", "reason": "overlap", "videos": 1, "by": {"sha256": 1}},
        {"kept_in": "c", "source": "d", "reason": "overlap", "videos": 1, "by": {"url": 1}},
    ]
    by = {s.source: s.figures for s in plan.sources}
    assert (by["b"].found_videos, by["b"].overlap_videos) == (1, 2)
    assert (by["c"].found_videos, by["c"].overlap_videos, by["c"].held_out_videos) == (2, 1, 1)
    assert (by["d"].found_videos, by["d"].overlap_videos) == (0, 2)
    assert plan.total.found_videos == len(ids) == 8 and plan.total.overlap_videos == 5
    assert plan_videos(m)[0] == resolved.rows  # what a build fetches: each video once, held-out ones never
    res = CliRunner().invoke(app, ["plan", str(shared_lists)])
    assert res.exit_code == 0, res.output
    assert "overlap: videos listed by two sources" in res.stdout and "held out (val/test)" in res.stdout


def test_plan_by_license_and_excluded_licenses(shared_lists: Path, tmp_path: Path) -> None:
    plan = plan_corpus(load_manifest(shared_lists))
    lic = plan.licenses
    assert lic["youtube-uploader-terms"].sources == ["a", "b"] and lic["youtube-uploader-terms"].commercial_use is None
    assert lic["CC-BY-NC-SA-4.0"].commercial_use is False and lic["CC-BY-4.0"].commercial_use is True
    assert lic["youtube-uploader-terms"].figures.expected_videos == 6
    assert lic["CC-BY-4.0"].figures.found_videos == 2
    res = CliRunner().invoke(app, ["plan", str(shared_lists), "--by", "license"])
    assert res.exit_code == 0, res.output
    assert "youtube-uploader-terms" in res.stdout and "no (NC)" in res.stdout and "not cleared" in res.stdout
    assert CliRunner().invoke(app, ["plan", str(shared_lists), "--by", "domain"]).exit_code == 2

    data = yaml.safe_load(shared_lists.read_text()) | {"exclude_licenses": ["non-commercial", "unknown"]}
    commercial = load_manifest(write_manifest(shared_lists.parent / "commercial.yaml", data))
    plan = plan_corpus(commercial)
    assert plan.excluded == {"bench": "non-commercial", "a": "unknown", "b": "unknown"}
    assert set(plan.licenses) == {"CC-BY-4.0"}
    rows, _ = plan_videos(commercial)
    # c keeps the videos a and bench listed first, but the benchmark's test video stays out though bench is excluded
    assert sorted(r["video_id"] for r in rows) == ["c/AAAAAAAAAAA", "c/x", "c/y", "d/q"]
    assert plan.total.found_videos == 4 and plan.total.held_out_videos == 1 and plan.total.expected_videos is None


def test_cataract_1k_unannotated_leaves_the_56_benchmark_videos_out(tmp_path: Path) -> None:
    bench = load_source(REPO / "manifests" / "pretrain" / "cataract-1k.yaml")
    annotated = set(bench.splits.train) | set(bench.splits.test)
    for name in sorted(annotated) + ["case_0001", "case_0002"]:
        (tmp_path / f"{name}.mp4").write_bytes(b"")
    src = load_source(REPO / "manifests" / "pretrain" / "cataract-1k-unannotated.yaml")
    m = load_manifest(SURGREC).model_copy(update={"sources": (src.model_copy(update={"root": str(tmp_path)}),)})
    rows, errors = plan_videos(m)
    assert len(annotated) == 56 and errors == []
    assert [r["native_id"] for r in rows] == ["case_0001", "case_0002"]
