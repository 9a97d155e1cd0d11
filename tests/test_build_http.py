"""A build whose source is served over HTTP on loopback: good files build, bad ones become error rows."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from builders.pipeline import build
from corpus.manifest import load_manifest
from tests.conftest import write_manifest


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(generated):
    handler = functools.partial(_Quiet, directory=str(generated))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/a/"
    httpd.shutdown()
    httpd.server_close()


def test_http_source_with_checksum_mismatch_and_404(tmp_path, generated, http_root):
    good = hashlib.sha256((generated / "a" / "v1.mp4").read_bytes()).hexdigest()
    manifest = write_manifest(
        tmp_path / "web.yaml",
        {
            "name": "web",
            "sources": [
                {
                    "name": "web",
                    "domain": "laparoscopy",
                    "access": "http",
                    "root": http_root,
                    "videos": [
                        {"uri": "v1.mp4", "sha256": good},
                        {"uri": "v2.mp4", "sha256": "0" * 64},
                        {"uri": "gone.mp4"},
                    ],
                }
            ],
            "clips": {"fps": 4, "size": 32, "seconds": 1},
        },
    )
    out = tmp_path / "out"
    summary = build(load_manifest(manifest), out, workers=1, show_progress=False, cache_dir=tmp_path / "cache")
    videos = pq.read_table(out / "tables" / "videos.parquet").to_pylist()
    assert [(v["video_id"], v["sha256"]) for v in videos] == [("web/v1", good)]
    assert videos[0]["path"].startswith(str(tmp_path / "cache" / "sha256"))
    errors = {e["video_id"]: e for e in pq.read_table(out / "tables" / "errors.parquet").to_pylist()}
    assert errors["web/v2"]["kind"] == "checksum_mismatch" and errors["web/v2"]["stage"] == "fetch"
    assert errors["web/gone"]["kind"] == "http_error" and "404" in errors["web/gone"]["message"]
    assert summary.clips == 6 and summary.n_errors == 2
