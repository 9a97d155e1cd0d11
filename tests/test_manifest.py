"""Manifest validation: good manifests load; every error names the file, the field path and the bad value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from corpus.cli import app
from corpus.errors import ManifestError
from corpus.manifest import load_manifest
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
