"""`surgcorpus publish`: the real huggingface_hub client against a loopback Hub (tests/hub_fake.py) uploads a real
build's shards and tables to two repos, each with its own card; retries, resumes, revisions; the token stays secret;
no test connects anywhere but loopback."""

from __future__ import annotations

import fnmatch
import io
import logging
import socket
import tarfile

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from builders.publish import PublishError, hub_license, plan_publish, publish
from cli.main import app
from corpus.splits import SPLITS
from tests.conftest import generated_corpus, write_manifest
from tests.hub_fake import HubFake, LoopbackGuard

TOKEN = "hf_SENTINELtoken0123456789abcdef"  # a sentinel: it must never appear in any output


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every test here may reach 127.0.0.1 only; an attempt to go elsewhere is refused and fails the test."""
    guard = LoopbackGuard()
    guard.install(monkeypatch)
    yield guard
    assert guard.attempts == [], f"a test tried to leave loopback: {guard.attempts}"


@pytest.fixture(scope="module")
def built(tmp_path_factory, generated):
    """A real build of the generated corpus (two sources, shards in train and test, a bad video in errors)."""
    from builders.pipeline import build
    from corpus.manifest import load_manifest

    root = tmp_path_factory.mktemp("pub")
    data = generated_corpus(generated)
    data["sources"][0].update(
        license="CC BY-NC-SA 4.0", expected={"videos": 3, "reference": "Doe et al., Site A, 2024"}
    )
    manifest = write_manifest(root / "gen.yaml", data)
    out = root / "build"
    build(load_manifest(manifest), out, workers=2, show_progress=False, manifest_path=manifest)
    return out


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake Hub, with the client pointed at it: Xet and telemetry off, HF_HOME in tmp, token from HF_TOKEN."""
    from huggingface_hub import constants

    with HubFake(token=TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # a fake can serve only the plain LFS path
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield fake


def _card_meta(card: bytes) -> dict:
    text = card.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _members(tar_bytes: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return tar.getnames()


def test_publish_uploads_shards_and_tables_to_two_repos_with_their_cards(built, hub, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(app, ["publish", str(built), "--repo-id", "surg/gen", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert hub.unauthorized == 0  # every API call carried the token
    assert TOKEN not in result.output + caplog.text + "".join(capsys.readouterr())

    # shards: byte-identical to the build, every split's glob in the card matches exactly its shard files
    shards = hub.files("surg/gen")
    local = {p.relative_to(built).as_posix(): p.read_bytes() for p in sorted(built.glob("shards/*/*.tar"))}
    assert {p: b for p, b in shards.items() if p.endswith(".tar")} == local
    meta = _card_meta(shards["README.md"])
    (config,) = meta["configs"]
    assert config["config_name"] == "default"
    index = pq.read_table(built / "tables" / "shards.parquet").to_pylist()
    for entry in config["data_files"]:
        matched = sorted(p for p in shards if fnmatch.fnmatch(p, entry["path"]))
        assert matched == sorted({r["shard"] for r in index if r["split"] == entry["split"]})
        keys = {m.split(".")[0] for p in matched for m in _members(shards[p])}
        assert keys == {r["key"] for r in index if r["split"] == entry["split"]}
    assert sorted(meta["license"]) == ["cc-by-nc-sa-4.0", "unknown"]
    card = shards["README.md"].decode()
    assert "Doe et al., Site A, 2024" in card  # the citation from the manifest
    clips = pq.read_table(built / "tables" / "clips.parquet").to_pylist()
    videos = pq.read_table(built / "tables" / "videos.parquet").to_pylist()
    row = next(line for line in card.splitlines() if line.startswith("| site-a |"))
    hours = sum(v["duration_s"] for v in videos if v["source"] == "site-a") / 3600
    sharded = [
        sum(c["source"] == "site-a" and c["split"] == s and c["shard"] is not None for c in clips) for s in SPLITS
    ]
    expected = ["site-a", "laparoscopy", "CC BY-NC-SA 4.0", "3", f"{hours:.3f}"] + [str(n) for n in sharded]
    assert [cell.strip() for cell in row.strip("|").split("|")] == expected

    # tables: one config per table, one Parquet file per split holding exactly that split's rows
    tables = hub.files("surg/gen-tables")
    assert not any(p.endswith(".tar") for p in tables) and not any(p.endswith(".parquet") for p in shards)
    configs = {c["config_name"]: c["data_files"] for c in _card_meta(tables["README.md"])["configs"]}
    assert {"videos", "clips", "shards", "errors", "sources"} <= set(configs)
    for entry in configs["clips"]:
        got = pq.read_table(io.BytesIO(tables[entry["path"]])).column("clip_id").to_pylist()
        assert got == [c["clip_id"] for c in clips if c["split"] == entry["split"]]
    (errors_file,) = configs["errors"]
    assert errors_file["split"] == "full"
    assert (
        pq.read_table(io.BytesIO(tables[errors_file["path"]])).num_rows
        == pq.read_metadata(built / "tables" / "errors.parquet").num_rows
    )


def test_republish_sends_nothing_and_makes_no_commit(built, hub):
    first = publish(plan_publish(built, "surg/gen"), show_progress=False)
    puts, commits = hub.count("PUT", "/_lfs/"), {r: len(hub.repos[r].commits) for r in hub.repos}
    assert puts == sum(p.endswith((".tar", ".parquet")) for r in hub.repos for p in hub.files(r))
    again = publish(plan_publish(built, "surg/gen"), show_progress=False)
    assert hub.count("PUT", "/_lfs/") == puts  # no object uploaded twice
    assert {r: len(hub.repos[r].commits) for r in hub.repos} == commits
    assert all(first.commits[r] for r in first.commits) and not any(again.commits.values())


def test_dropped_connections_are_retried(built, hub):
    hub.drop["lfs-put"] = 1  # the client's own back-off retries the PUT
    hub.drop["commit"] = 1  # publish retries the batch: the objects already stored are not sent again
    publish(plan_publish(built, "surg/gen"), batch_files=2, backoff_s=0.1, show_progress=False)
    n_objects = len(hub.lfs)
    assert hub.count("PUT", "/_lfs/") == n_objects + 1
    assert hub.drop["lfs-put"] == hub.drop["commit"] == 0
    local = {p.relative_to(built).as_posix(): p.read_bytes() for p in built.glob("shards/*/*.tar")}
    assert {p: b for p, b in hub.files("surg/gen").items() if p.endswith(".tar")} == local


def test_revision_goes_to_its_own_branch_and_stale_shards_are_deleted(built, hub, tmp_path):
    publish(plan_publish(built, "surg/gen", revision="v1"), show_progress=False)
    assert hub.files("surg/gen") == {} and hub.files("surg/gen-tables") == {}  # main untouched
    assert "README.md" in hub.files("surg/gen", "v1") and "README.md" in hub.files("surg/gen-tables", "v1")

    # a file a previous publish left that the build no longer has: deleted in the card commit
    from huggingface_hub import HfApi

    stale = "shards/train/gen-train-999999.tar"
    HfApi(token=TOKEN).upload_file(
        path_or_fileobj=b"\0old shard", path_in_repo=stale, repo_id="surg/gen", repo_type="dataset", revision="v1"
    )
    result = publish(plan_publish(built, "surg/gen", revision="v1"), show_progress=False)
    assert result.deleted["surg/gen"] == [stale] and stale not in hub.files("surg/gen", "v1")


def test_private_flag_and_errors(built, hub, tmp_path):
    publish(plan_publish(built, "surg/priv", private=True), show_progress=False)
    assert hub.repos["surg/priv"].private and hub.repos["surg/priv-tables"].private
    with pytest.raises(PublishError, match="ORG/NAME"):
        plan_publish(built, "no-slash")
    with pytest.raises(PublishError, match="no build.lock"):
        plan_publish(tmp_path, "surg/x")
    runner = CliRunner()
    bad = runner.invoke(app, ["publish", str(tmp_path), "--repo-id", "surg/x"])
    assert bad.exit_code == 2 and "not a finished build" in bad.output
    hub.token = "hf_another_token"  # the Hub refuses ours: a clear error, exit 1, and still no token in the output
    refused = runner.invoke(app, ["publish", str(built), "--repo-id", "surg/gen", "--no-progress"])
    assert refused.exit_code == 1 and "401" in refused.output and TOKEN not in refused.output


def test_dry_run_prints_the_plan_and_sends_nothing(built, hub):
    before = (built / "_publish").exists()
    result = CliRunner().invoke(app, ["publish", str(built), "--repo-id", "surg/gen", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert hub.requests == [] and hub.repos == {}
    assert (built / "_publish").exists() == before  # staged in a temporary folder
    for p in built.glob("shards/*/*.tar"):
        assert f"{p.stat().st_size:,d}  {p.relative_to(built).as_posix()}" in result.output
    assert "data/clips/train.parquet" in result.output and "config_name: default" in result.output
    assert "nothing uploaded" in result.output


def test_hub_license_ids():
    assert hub_license("CC BY-NC-SA 4.0") == "cc-by-nc-sa-4.0"
    assert hub_license("CC-BY-4.0") == "cc-by-4.0" and hub_license("Apache-2.0") == "apache-2.0"
    assert hub_license("youtube-uploader-terms") == "other" and hub_license(None) == "unknown"


def test_guard_refuses_non_loopback(loopback_only):
    with pytest.raises(OSError, match="loopback only"):
        socket.create_connection(("203.0.113.7", 443), timeout=1)
    assert loopback_only.attempts
    loopback_only.attempts.clear()  # this test's own attempt was expected
