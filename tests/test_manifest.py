"""Manifest validation: good manifests load; every error names the file, the field path and the bad value."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from corpus.errors import ManifestError
from corpus.manifest import load_manifest
from corpus.resolve import plan_videos
from tests.conftest import write_manifest

BASE = {"name": "c", "sources": [{"name": "s", "domain": "laparoscopy", "root": ".", "videos": {"glob": "*.mp4"}}]}


def test_inline_source_and_defaults(tmp_path):
    m = load_manifest(write_manifest(tmp_path / "m.yaml", BASE))
    assert m.sources[0].root == str(tmp_path.resolve())
    assert m.clips.length_frames == 32 and m.clips.stride_frames == 32
    assert m.split.val == 0.1 and m.shard.max_samples == 1000


def test_source_file_reference_resolves_root_against_its_file(tmp_path):
    (tmp_path / "sources").mkdir()
    write_manifest(
        tmp_path / "sources" / "s.yaml",
        {"name": "s", "domain": "cataract", "root": "../data", "videos": [{"uri": "a.mp4"}, "b.mp4"]},
    )
    m = load_manifest(write_manifest(tmp_path / "m.yaml", {"name": "c", "sources": ["sources/s.yaml"]}))
    src = m.sources[0]
    assert src.root == str((tmp_path / "data").resolve())
    assert [v.uri for v in src.videos] == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize(
    ("patch", "field", "value"),
    [
        ({"sources": [{**BASE["sources"][0], "domain": "lapro"}]}, "sources.0.domain", "lapro"),
        ({"clips": {"fps": -1}}, "clips.fps", "-1"),
        ({"split": {"val": 0.6, "test": 0.5}}, "split", "0.6"),
        ({"shard": {"max_samples": "many"}}, "shard.max_samples", "many"),
        (
            {"sources": [{**BASE["sources"][0], "videos": [{"uri": "a.mp4", "sha256": "xyz"}]}]},
            "sources.0.videos",
            "xyz",
        ),
        ({"clips": {"seconds": 2, "frames": 8}}, "clips", "seconds"),
    ],
)
def test_errors_name_file_field_and_value(tmp_path, patch, field, value):
    path = write_manifest(tmp_path / "bad.yaml", {**BASE, **patch})
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    text = str(err.value)
    assert str(path) in text and field in text and value in text


def test_unknown_field_and_missing_file(tmp_path):
    path = write_manifest(tmp_path / "bad.yaml", {**BASE, "shards": {}})
    with pytest.raises(ManifestError, match="shards"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope.yaml")


def test_validate_command(tmp_path, generated_manifest):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(generated_manifest)])
    assert ok.exit_code == 0, ok.output
    assert "2 source(s), 6 video(s)" in ok.output
    bad = write_manifest(tmp_path / "bad.yaml", {**BASE, "name": "has space"})
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2 and "name" in res.output


# ---- pretraining-side source fields: expected, use_splits, video lists ----

LEMON = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "visurg-ai__LEMON" / "labels.json"


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_use_splits_keeps_only_the_official_train_videos(tmp_path):
    _touch(tmp_path / "data", "v1.mp4", "v2.mp4", "v3.mp4", "v4.mp4")
    (tmp_path / "data" / "splits.csv").write_text("video,split\nv3,train\nv4,test\n")
    src = {"name": "s", "domain": "cataract", "root": "data", "videos": {"glob": "*.mp4"}, "use_splits": ["train"]}
    m = load_manifest(
        write_manifest(
            tmp_path / "m.yaml",
            {
                "name": "c",
                "sources": [
                    {**src, "splits": {"train": ["v1", "v2"], "test": ["v3"]}},
                    {**src, "name": "f", "splits": {"file": "splits.csv"}},
                ],
            },
        )
    )
    plan, errors = plan_videos(m)
    assert [r["video_id"] for r in plan] == ["f/v3", "s/v1", "s/v2"] and errors == []
    # the same source without use_splits takes everything
    m2 = load_manifest(write_manifest(tmp_path / "m2.yaml", {"name": "c", "sources": [{**src, "use_splits": None}]}))
    assert len(plan_videos(m2)[0]) == 4


def test_use_splits_with_a_missing_split_file_takes_nothing_and_says_why(tmp_path):
    _touch(tmp_path / "data", "v1.mp4")
    src = {"name": "s", "domain": "laparoscopy", "root": "data", "videos": {"glob": "*.mp4"}}
    m = load_manifest(
        write_manifest(
            tmp_path / "m.yaml",
            {"name": "c", "sources": [{**src, "use_splits": ["train"], "splits": {"file": "nope.csv"}}]},
        )
    )
    plan, errors = plan_videos(m)
    assert plan == [] and len(errors) == 1
    assert "nope.csv" in errors[0].message and errors[0].kind == "manifest"


def test_use_splits_without_splits_and_bad_expected_are_named(tmp_path):
    src = {"name": "s", "domain": "laparoscopy", "videos": {"glob": "*.mp4"}}
    bad = write_manifest(tmp_path / "a.yaml", {"name": "c", "sources": [{**src, "use_splits": ["train"]}]})
    with pytest.raises(ManifestError, match=r"sources\.0.*use_splits \['train'\] needs"):
        load_manifest(bad)
    bad = write_manifest(tmp_path / "b.yaml", {"name": "c", "sources": [{**src, "use_splits": ["holdout"]}]})
    with pytest.raises(ManifestError, match=r"sources\.0\.use_splits\.0.*holdout"):
        load_manifest(bad)
    bad = write_manifest(tmp_path / "c.yaml", {"name": "c", "sources": [{**src, "expected": {"videos": 80}}]})
    with pytest.raises(ManifestError, match=r"sources\.0\.expected\.reference"):
        load_manifest(bad)


def test_expected_figures_and_unchanged_fingerprint(tmp_path):
    src = {"name": "s", "domain": "laparoscopy", "videos": {"glob": "*.mp4"}}
    plain = load_manifest(write_manifest(tmp_path / "a.yaml", {"name": "c", "sources": [src]}))
    exp = {"videos": 80, "fps": 25, "reference": "Twinanda et al., IEEE TMI 2017"}
    with_exp = load_manifest(write_manifest(tmp_path / "b.yaml", {"name": "c", "sources": [{**src, "expected": exp}]}))
    assert with_exp.sources[0].expected.videos == 80 and with_exp.sources[0].expected.hours is None
    assert plain.sources[0].expected is None
    assert plain.fingerprint() != with_exp.fingerprint()
    # a manifest without the new fields hashes exactly as before they existed
    data = plain.model_dump(mode="json")
    for s in data["sources"]:
        del s["use_splits"], s["expected"], s["license_id"]
    del data["exclude_licenses"], data["clips"]["timing"]
    assert plain.fingerprint() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_video_list_source_resolves_relative_to_its_manifest_and_filters(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    rows = [
        {"youtubeId": "80czDESoMiQ", "title": "a", "procedureName": ["splenectomy"], "robotic": False},
        {"youtubeId": "AAAAAAAAAAA", "title": "b", "procedureName": ["prostatectomy"], "robotic": True},
        {"youtubeId": "bad id", "title": "c", "robotic": True},
    ]
    (lists / "labels.json").write_text(json.dumps(rows))
    (tmp_path / "sources").mkdir()
    write_manifest(
        tmp_path / "sources" / "web.yaml",
        {
            "name": "web-robotic",
            "domain": "robotic",
            "access": "youtube",
            "videos": {"list": "../lists/labels.json", "format": "lemon", "where": {"robotic": True}},
        },
    )
    m = load_manifest(write_manifest(tmp_path / "m.yaml", {"name": "c", "sources": ["sources/web.yaml"]}))
    assert m.sources[0].videos.list == str((lists / "labels.json").resolve())
    plan, errors = plan_videos(m)
    assert [(r["video_id"], r["uri"]) for r in plan] == [("web-robotic/AAAAAAAAAAA", "youtube://AAAAAAAAAAA")]
    assert len(errors) == 1 and "malformed YouTube id" in errors[0].message and "labels.json#2" in errors[0].message


def test_video_list_missing_or_in_the_wrong_format_is_a_plan_error(tmp_path):
    (tmp_path / "l.csv").write_text("youtube_id,title\n80czDESoMiQ,x\n")
    src = {"name": "w", "domain": "open", "access": "youtube"}
    m = load_manifest(
        write_manifest(
            tmp_path / "m.yaml",
            {
                "name": "c",
                "sources": [
                    {**src, "videos": {"list": "gone.json"}},
                    {**src, "name": "x", "videos": {"list": "l.csv", "format": "lemon"}},
                    {**src, "name": "y", "videos": {"list": "l.csv", "format": "csv"}},
                ],
            },
        )
    )
    plan, errors = plan_videos(m)
    assert [r["video_id"] for r in plan] == ["y/80czDESoMiQ"]
    messages = sorted(e.message for e in errors)
    assert "gone.json: video list not found" in messages[0]
    assert "l.csv: declared format 'lemon' expects a .json file" in messages[1]


def test_lemon_labels_json_as_two_domain_sources(tmp_path):
    if not LEMON.is_file():
        pytest.skip(f"real LEMON labels.json not present at {LEMON}")
    sources = [
        {
            "name": f"lemon-{d}",
            "domain": d,
            "access": "youtube",
            "videos": {"list": str(LEMON), "where": {"robotic": r}},
        }
        for d, r in (("robotic", True), ("laparoscopy", False))
    ]
    plan, errors = plan_videos(load_manifest(write_manifest(tmp_path / "m.yaml", {"name": "c", "sources": sources})))
    counts = Counter(r["source"] for r in plan)
    assert errors == [] and sum(counts.values()) == 4194
    assert counts == {"lemon-robotic": 1667, "lemon-laparoscopy": 2527}
    assert all(r["uri"] == f"youtube://{r['native_id']}" for r in plan)
