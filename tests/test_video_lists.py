"""Pretrain sources from public video lists: the importer (CSV/JSONL/JSON, LEMON's real labels.json), the source
manifest it writes, and a real build where local copies are used and YouTube videos without yt-dlp are error rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from builders.pipeline import build
from builders.stages import youtube
from builders.stages.fetch import fetch_uri
from cli.hierarchy import app as hierarchy_app
from corpus.errors import AnnotationError, FetchError
from corpus.manifest import load_manifest, load_source
from corpus.testing import make_video
from corpus.video_lists import read_video_list, to_records, to_source, write_source_manifest, youtube_id_of

LEMON = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "visurg-ai__LEMON" / "labels.json"
NO_YTDLP = not youtube.available()


def _table(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / "tables" / f"{name}.parquet").to_pylist()


def test_youtube_ids_from_uris():
    for uri in (
        "youtube://80czDESoMiQ",
        "https://www.youtube.com/watch?v=80czDESoMiQ&t=30s",
        "https://youtu.be/80czDESoMiQ?si=x",
        "https://m.youtube.com/shorts/80czDESoMiQ",
        "https://www.youtube.com/embed/80czDESoMiQ",
    ):
        assert youtube_id_of(uri) == "80czDESoMiQ", uri
    assert youtube_id_of("https://example.org/watch?v=80czDESoMiQ") is None
    assert youtube_id_of("/data/80czDESoMiQ.mp4") is None


def test_csv_list_rows_and_bad_rows(tmp_path):
    (tmp_path / "l.csv").write_text(
        "youtube_id,url,title,path,surgery_type\n"
        "80czDESoMiQ,,Distal pancreatectomy,,pancreatectomy\n"
        ",https://youtu.be/SOam94xJXF0,Spleen preserving,,\n"
        ",,Local copy,videos/a.mp4,thyroidectomy\n"
        ",https://example.org/v/b.mp4,Plain URL,,\n"
        ",,No source at all,,\n"
        "too-short,,Bad id,,\n"
        "80czDESoMiQ,,Repeated,,\n"
    )
    vl = read_video_list(tmp_path / "l.csv")
    assert [(v.native_id, v.uri) for v in vl.videos] == [
        ("80czDESoMiQ", "youtube://80czDESoMiQ"),
        ("SOam94xJXF0", "youtube://SOam94xJXF0"),
        ("a", str(tmp_path / "videos" / "a.mp4")),
        ("b", "https://example.org/v/b.mp4"),
    ]
    assert vl.videos[0].url == "https://www.youtube.com/watch?v=80czDESoMiQ"
    assert [e.message.split(": ", 1)[0] for e in vl.errors] == [f"{tmp_path / 'l.csv'}:{n}" for n in (6, 7, 8)]
    assert "needs a youtube_id, url or path" in vl.errors[0].message and "already listed" in vl.errors[2].message


def test_lemon_labels_json_imports(real):
    if not LEMON.is_file():
        pytest.skip(f"{LEMON} not found")
    raw = json.loads(LEMON.read_text())
    vl = read_video_list(LEMON)
    assert len(vl.videos) == len(raw) == 4194 and vl.errors == []
    assert [v.native_id for v in vl.videos] == [r["youtubeId"] for r in raw]
    assert [v.title for v in vl.videos] == [r["title"].strip() for r in raw]
    first = vl.videos[0]
    assert first.uri == f"youtube://{raw[0]['youtubeId']}" and first.path is None
    assert first.surgery_type == "+".join(raw[0]["procedureName"])
    assert first.extra["robotic"] == raw[0]["robotic"] and first.extra["md5"] == raw[0]["md5"]
    src = to_source(vl, "lemon", domain="laparoscopy", license="CC BY 4.0 (metadata)")
    assert src.access == "youtube" and len(src.videos) == 4194


@pytest.fixture
def mixed_list(tmp_path) -> Path:
    make_video(tmp_path / "videos" / "local-a.mp4", 3, size="96x64", rate=10, source="testsrc2")
    make_video(tmp_path / "videos" / "local-b.mp4", 3, size="96x64", rate=10, source="smptebars")
    lines = [
        {"youtube_id": "80czDESoMiQ", "title": "Downloaded only", "surgery_type": "pancreatectomy"},
        {"youtube_id": "SOam94xJXF0", "title": "Has a local copy", "path": "videos/local-a.mp4"},
        {"url": "https://www.youtube.com/watch?v=MgVlmVMdxe8", "title": "By URL"},
        {"title": "Local only", "path": "videos/local-b.mp4", "id": "local-b"},
    ]
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.skipif(not NO_YTDLP, reason="yt-dlp is installed here: the 'not installed' route cannot be shown")
def test_build_uses_local_copies_and_records_missing_ytdlp(mixed_list, tmp_path):
    res = CliRunner().invoke(
        hierarchy_app,
        ["video-list", str(mixed_list), "--source", "pretrain", "--manifest", str(tmp_path / "m" / "pretrain.yaml")]
        + ["--records", str(tmp_path / "m" / "pretrain.jsonl")],
    )
    assert res.exit_code == 0, res.output
    assert "4 videos (2 local, 2 to fetch; access youtube), 0 bad rows" in res.output
    src = load_source(tmp_path / "m" / "pretrain.yaml")
    assert src.access == "youtube"
    assert [e.uri for e in src.videos][0::2] == ["youtube://80czDESoMiQ", "youtube://MgVlmVMdxe8"]
    corpus = {
        "name": "pretrain",
        "sources": ["pretrain.yaml"],
        "clips": {"fps": 5, "size": 32, "seconds": 1},
        "split": {"val": 0.0, "test": 0.0},
    }
    (tmp_path / "m" / "corpus.yaml").write_text(yaml.safe_dump(corpus))
    out = tmp_path / "build"
    summary = build(load_manifest(tmp_path / "m" / "corpus.yaml"), out, workers=1, show_progress=False)
    assert sorted(v["video_id"] for v in _table(out, "videos")) == ["pretrain/SOam94xJXF0", "pretrain/local-b"]
    assert summary.clips > 0
    errors = sorted(_table(out, "errors"), key=lambda e: e["video_id"])
    assert [(e["stage"], e["video_id"], e["kind"]) for e in errors] == [
        ("fetch", "pretrain/80czDESoMiQ", "fetch"),
        ("fetch", "pretrain/MgVlmVMdxe8", "fetch"),
    ]
    assert all("yt-dlp not installed: pip install yt-dlp" in e["message"] for e in errors)
    # the hierarchy records carry ids, titles and URLs for `hierarchy import`
    records = [json.loads(line) for line in (tmp_path / "m" / "pretrain.jsonl").read_text().splitlines()]
    assert records[0] == {
        "video_id": "pretrain/80czDESoMiQ",
        "source": "pretrain",
        "title": "Downloaded only",
        "surgery_type": "pancreatectomy",
        "url": "https://www.youtube.com/watch?v=80czDESoMiQ",
    }
    from corpus.hierarchy.build import import_hierarchy

    assert import_hierarchy(tmp_path / "hier", tmp_path / "m" / "pretrain.jsonl").videos == 4


@pytest.mark.skipif(not NO_YTDLP, reason="yt-dlp is installed here")
def test_fetch_uri_routes_youtube_urls_to_ytdlp(tmp_path):
    for uri in ("youtube://80czDESoMiQ", "https://www.youtube.com/watch?v=80czDESoMiQ"):
        with pytest.raises(FetchError, match="yt-dlp not installed: pip install yt-dlp") as info:
            fetch_uri(uri, root=None, cache_dir=tmp_path)
        assert info.value.kind == "fetch" and info.value.retryable
    assert not (tmp_path / "tmp").exists()  # no HTTP request was started


def test_source_manifest_round_trip(mixed_list, tmp_path):
    vl = read_video_list(mixed_list)
    path = write_source_manifest(to_source(vl, "pretrain"), tmp_path / "src.yaml")
    src = load_source(path)
    assert [(e.id, e.uri) for e in src.videos] == [(v.native_id, v.uri) for v in vl.videos]
    assert [r["video_id"] for r in to_records(vl, "pretrain")] == [f"pretrain/{v.native_id}" for v in vl.videos]


def _stand_in_ytdlp(monkeypatch, tmp_path, behaviour):
    """A stand-in for yt-dlp's public API (``YoutubeDL`` context manager, ``extract_info``, ``utils.DownloadError``):
    yt-dlp is not installed here and there is no network; this checks our side of that API, not yt-dlp."""
    import sys
    import types

    calls = []

    class DownloadError(Exception):
        pass

    class YoutubeDL:
        def __init__(self, opts):
            self.opts = opts

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def extract_info(self, url, download):
            calls.append(url)
            return behaviour(self.opts, url, DownloadError)

    mod = types.ModuleType("yt_dlp")
    mod.YoutubeDL = YoutubeDL
    mod.utils = types.SimpleNamespace(DownloadError=DownloadError)
    monkeypatch.setitem(sys.modules, "yt_dlp", mod)
    monkeypatch.setattr(youtube, "available", lambda: True)
    return calls


def test_ytdlp_network_error_is_a_fetch_error_and_a_download_is_cached(monkeypatch, tmp_path):
    def offline(opts, url, error):
        raise error("ERROR: [youtube] 80czDESoMiQ: Unable to download webpage: <urlopen error [Errno -3]>")

    _stand_in_ytdlp(monkeypatch, tmp_path, offline)
    with pytest.raises(FetchError, match="yt-dlp: ERROR: .*Unable to download webpage") as info:
        fetch_uri("youtube://80czDESoMiQ", root=None, cache_dir=tmp_path / "cache")
    assert info.value.kind == "fetch" and info.value.retryable
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the temporary folder is gone

    video = make_video(tmp_path / "src.mp4", 1, size="64x48", rate=5)

    def download(opts, url, error):
        Path(opts["outtmpl"].replace("%(id)s", "80czDESoMiQ").replace("%(ext)s", "mp4")).write_bytes(
            video.read_bytes()
        )
        return {"id": "80czDESoMiQ", "ext": "mp4"}

    calls = _stand_in_ytdlp(monkeypatch, tmp_path, download)
    got = fetch_uri("https://youtu.be/80czDESoMiQ", root=None, cache_dir=tmp_path / "cache")
    assert calls == ["https://www.youtube.com/watch?v=80czDESoMiQ"]
    assert Path(got.path).read_bytes() == video.read_bytes() and got.path.endswith(f"{got.sha256}.mp4")
    again = fetch_uri("youtube://80czDESoMiQ", root=None, cache_dir=tmp_path / "cache")
    assert again == got and len(calls) == 1  # the id's content address is remembered: no second download


REPO = Path(__file__).resolve().parents[1]
OPHNET = REPO / "manifests" / "pretrain" / "lists" / "ophnet" / "OphNet2024_surgery.csv"
SURGATLAS = Path(__file__).resolve().parent / "data" / "surgatlas_procedures.json"


def test_ophnet_real_list_places_ids_under_the_root(tmp_path):
    """OphNet's published OphNet2024_surgery.csv (MIT, copied in the repo): 1,969 ids, videos at <root>/<id>.mp4."""
    from corpus.listed_source import listed_videos
    from corpus.manifest import VideoListSpec

    spec = VideoListSpec(list=str(OPHNET), format="ophnet", uri="{id}.mp4")
    vl = listed_videos(spec, root=str(tmp_path))
    assert vl.errors == [] and len(vl.videos) == 1969
    first = vl.videos[0]
    assert (first.native_id, first.uri, first.youtube_id) == ("case_0358", str(tmp_path / "case_0358.mp4"), None)
    assert first.extra == {"surgery": "28"} and first.where == f"{OPHNET}:2"
    assert next(v for v in vl.videos if v.native_id == "case_0814").extra["surgery"] == "1,13,14"
    with pytest.raises(AnnotationError, match="needs 'uri'"):
        listed_videos(VideoListSpec(list=str(OPHNET), format="ophnet"))


def test_ophnet_malformed_rows_and_header_name_file_and_line(tmp_path):
    bad = tmp_path / "surgery.csv"
    bad.write_text('video_id,surgery\ncase_0001,2\n"case 0002",2\n,3\ncase_0001,"1,2"\ncase_0003,0\n')
    vl = read_video_list(bad, "ophnet", str(tmp_path / "{id}.mp4"))
    assert [v.native_id for v in vl.videos] == ["case_0001", "case_0003"]
    assert [e.message.split(": ", 1)[0] for e in vl.errors] == [f"{bad}:3", f"{bad}:4", f"{bad}:5"]
    assert "'case 0002'" in vl.errors[0].message and "already listed" in vl.errors[2].message
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("id,surgery\ncase_0001,2\n")
    with pytest.raises(AnnotationError, match=rf"{nohead}:1: a video list needs a video_id column"):
        read_video_list(nohead, "ophnet", "{id}.mp4")


def test_surgatlas_list_keyed_by_youtube_id(tmp_path):
    """An excerpt generated from SurgAtlas' documented procedure-metadata format (github.com/fil-mp/surgatlas)."""
    from corpus.listed_source import listed_videos
    from corpus.manifest import VideoListSpec

    vl = read_video_list(SURGATLAS, "surgatlas")
    assert [(v.native_id, v.uri) for v in vl.videos] == [
        (f"Sa0000000A{i}", f"youtube://Sa0000000A{i}") for i in (1, 2, 3, 4)
    ]
    assert vl.videos[1].extra == {"surgery": "robotic", "specialty": "Urology", "procedure": "Robotic prostatectomy"}
    assert [e.message for e in vl.errors] == [
        f"{SURGATLAS}:6: malformed YouTube id 'not-an-id' (11 characters of A-Z a-z 0-9 _ -)",
        f"{SURGATLAS}:7: 'Sa0000000A5': expected an object",
    ]
    opened = listed_videos(VideoListSpec(list=str(SURGATLAS), format="surgatlas", where={"surgery": "open"}))
    assert [v.native_id for v in opened.videos] == ["Sa0000000A1", "Sa0000000A4"]
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "Sa0000000A1": {"surgery": "open"},\n "Sa0000000A2": {"surgery": }\n}\n')
    with pytest.raises(AnnotationError, match=rf"{broken}:3: not valid JSON"):
        read_video_list(broken, "surgatlas")
    with pytest.raises(AnnotationError, match="JSON object keyed by YouTube id"):
        read_video_list(LEMON if LEMON.is_file() else _write(tmp_path / "l.json", "[]"), "surgatlas")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_pinned_list_checksum(tmp_path):
    from corpus.listed_source import listed_videos
    from corpus.manifest import VideoListSpec

    pinned = "d8a876f0bb7d59b36e8067f814458ae435e7c432c96ae6e8777879490dcfaf40"
    ok = listed_videos(VideoListSpec(list=str(OPHNET), format="ophnet", uri="{id}.mp4", sha256=pinned))
    assert ok.errors == []
    changed = tmp_path / "OphNet2024_surgery.csv"
    changed.write_bytes(OPHNET.read_bytes().replace(b"case_0358,28", b"case_0358,29"))
    vl = listed_videos(VideoListSpec(list=str(changed), format="ophnet", uri="{id}.mp4", sha256=pinned))
    [err] = vl.errors
    assert err.kind == "checksum_mismatch" and str(changed) in err.message and len(vl.videos) == 1969
