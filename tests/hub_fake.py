"""A Hugging Face Hub double for tests: a real HTTP server on 127.0.0.1 that the real ``huggingface_hub`` client
talks to (plain LFS path: the client must run with Xet off), plus a guard that refuses any non-loopback connection.

Endpoints (dataset repos only; see ``../shared/notes/hf-hub-loopback.md``): create repo, create branch,
validate-yaml, preupload, LFS batch, LFS PUT (no auth, like a presigned URL) and verify, NDJSON commit, revision
info, recursive tree and ``resolve``. State lives in memory: ``files(repo_id, revision)`` returns what was committed.
``drop`` makes the server close the connection without an answer, to test the client's retries. The server never
stores or prints request headers; it only checks that the Authorization header carries the expected token.

>>> with HubFake(token="hf_test") as hub:  # doctest: +SKIP
...     HfApi(endpoint=hub.url, token="hf_test").create_repo("org/x", repo_type="dataset")
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_EXTENSIONS = (".tar", ".parquet", ".mp4", ".bin")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def git_blob_sha1(data: bytes) -> str:
    """The oid the client computes for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    private: bool
    branches: dict[str, dict[str, dict]] = field(default_factory=lambda: {"main": {}})  # branch -> path -> entry
    heads: dict[str, str] = field(default_factory=lambda: {"main": hashlib.sha1(b"init").hexdigest()})
    commits: list[dict] = field(default_factory=list)  # {"branch", "oid", "summary", "paths", "deleted"}
    snapshots: dict[str, dict[str, dict]] = field(default_factory=dict)  # commit oid -> tree

    def tree(self, rev: str) -> dict[str, dict] | None:
        """The tree of a branch or of a commit (readers such as ``datasets`` resolve by commit sha)."""
        return self.branches.get(rev) if rev in self.branches else self.snapshots.get(rev)


class HubFake:
    """The Hub's upload API on ``http://127.0.0.1:<port>``; start it with ``with HubFake(token) as hub``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.drop: Counter = Counter()  # route name ("lfs-put", "commit", ...) -> connections to drop
        self.unauthorized = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubFake:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Committed contents of a branch: path -> bytes (LFS files resolved from the object store)."""
        tree = self.repos[repo_id].branches[revision]
        return {p: self.lfs[e["sha256"]] if e.get("sha256") else e["content"] for p, e in sorted(tree.items())}

    def count(self, method: str, pattern: str) -> int:
        return sum(m == method and re.search(pattern, p) is not None for m, p in self.requests)


def _handler(hub: HubFake) -> type[BaseHTTPRequestHandler]:
    repo_part = r"/(?P<repo>[^/]+/[^/.]+)"

    routes = [
        ("GET", "harnesses", r"/api/agent-harnesses"),
        ("POST", "create", r"/api/repos/create"),
        ("POST", "validate", r"/api/validate-yaml"),
        ("POST", "branch", r"/api/datasets" + repo_part + r"/branch/(?P<rev>[^/]+)"),
        ("POST", "preupload", r"/api/datasets" + repo_part + r"/preupload/(?P<rev>[^/]+)"),
        ("POST", "commit", r"/api/datasets" + repo_part + r"/commit/(?P<rev>[^/]+)"),
        ("GET", "revision", r"/api/datasets" + repo_part + r"/revision/(?P<rev>[^/]+)"),
        ("GET", "revision", r"/api/datasets" + repo_part),
        ("POST", "paths-info", r"/api/datasets" + repo_part + r"/paths-info/(?P<rev>[^/]+)"),
        ("GET", "tree", r"/api/datasets" + repo_part + r"/tree/(?P<rev>[^/]+)(?P<sub>/.*)?"),
        ("POST", "lfs-batch", r"/datasets" + repo_part + r"\.git/info/lfs/objects/batch"),
        ("PUT", "lfs-put", r"/_lfs/(?P<oid>[0-9a-f]{64})"),
        ("POST", "lfs-verify", r"/_lfs/verify"),
        ("GET", "resolve", r"/datasets" + repo_part + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
        ("HEAD", "resolve", r"/datasets" + repo_part + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
    ]
    no_auth = {"harnesses", "lfs-put", "resolve"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # the request line only reaches hub.requests, headers never
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: object = None, headers: dict | None = None) -> None:
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _route(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            with hub._lock:
                hub.requests.append((self.command, path))
            for method, route, pattern in routes:
                m = re.fullmatch(pattern, path)
                if method == self.command and m:
                    name = route
                    break
            else:
                self._body()
                self._send(404, {"error": f"fake hub: no route for {self.command} {path}"})
                return
            body = self._body()
            with hub._lock:
                dropping = hub.drop[name] > 0
                hub.drop[name] -= dropping
            if dropping:  # a dropped connection: the request was read, no answer comes back
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if name not in no_auth and self.headers.get("Authorization") != f"Bearer {hub.token}":
                hub.unauthorized += 1
                self._send(401, {"error": "Invalid credentials"})
                return
            args = {k: v for k, v in m.groupdict().items()}
            with hub._lock:
                status, answer, headers = getattr(self, "_" + name.replace("-", "_"))(
                    body, parse_qs(url.query), **args
                )
            self._send(status, answer, headers)

        do_GET = do_POST = do_PUT = do_HEAD = _route

        # ---- routes: (status, body, headers) ----
        def _harnesses(self, body, query):
            return 200, {"standardEnvVars": [], "harnesses": {}}, None

        def _create(self, body, query):
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            url = {"url": f"{hub.url}/datasets/{repo_id}"}
            if repo_id in hub.repos:
                return 409, {**url, "error": "You already created this dataset repo"}, None
            hub.repos[repo_id] = FakeRepo(private=req.get("visibility") == "private" or bool(req.get("private")))
            return 200, url, None

        def _validate(self, body, query):
            return 200, {"errors": [], "warnings": []}, None

        def _repo(self, repo: str) -> FakeRepo | None:
            return hub.repos.get(repo)

        def _missing(self):
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}

        def _branch(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is None:
                return self._missing()
            if rev in r.branches:
                return 409, {"error": "Reference already exists"}, None
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            r.branches[rev] = dict(r.branches[start])
            r.heads[rev] = r.heads[start]
            return 200, {}, None

        def _preupload(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is None:
                return self._missing()
            tree = r.branches.get(rev, {})
            files = []
            for f in json.loads(body)["files"]:
                sample = base64.b64decode(f["sample"])
                lfs = f["size"] > 0 and (
                    f["path"].endswith(LFS_EXTENSIONS) or f["size"] >= 10_000_000 or b"\0" in sample
                )
                old = tree.get(f["path"])
                oid = None if old is None else old.get("sha256") or git_blob_sha1(old["content"])
                files.append(
                    {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            return 200, {"files": files}, None

        def _lfs_batch(self, body, query, repo):
            objects = []
            for o in json.loads(body)["objects"]:
                entry = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in hub.lfs:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/_lfs/{o['oid']}"},
                        "verify": {"href": f"{hub.url}/_lfs/verify"},
                    }
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}, None

        def _lfs_put(self, body, query, oid):
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "content does not match its oid"}, None
            hub.lfs[oid] = body
            return 200, {}, None

        def _lfs_verify(self, body, query):
            req = json.loads(body)
            ok = req["oid"] in hub.lfs and len(hub.lfs[req["oid"]]) == req["size"]
            return (200, {}, None) if ok else (404, {"error": "object not stored"}, None)

        def _commit(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is None:
                return self._missing()
            if rev not in r.branches:
                return 404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}
            tree = dict(r.branches[rev])
            summary, paths, deleted = "", [], []
            for line in body.splitlines():
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary = value["summary"]
                elif key == "file":
                    tree[value["path"]] = {"content": base64.b64decode(value["content"])}
                    paths.append(value["path"])
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs:
                        return 400, {"error": f"LFS object {value['oid']} was never uploaded"}, None
                    tree[value["path"]] = {"sha256": value["oid"], "size": value["size"]}
                    paths.append(value["path"])
                elif key == "deletedFile":
                    tree.pop(value["path"], None)
                    deleted.append(value["path"])
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    deleted += [p for p in tree if p.startswith(prefix)]
                    tree = {p: e for p, e in tree.items() if not p.startswith(prefix)}
            oid = hashlib.sha1(r.heads[rev].encode() + body).hexdigest()
            r.branches[rev], r.heads[rev] = tree, oid
            r.snapshots[oid] = dict(tree)
            r.commits.append({"branch": rev, "oid": oid, "summary": summary, "paths": paths, "deleted": deleted})
            return 200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}", "commitOid": oid}, None

        def _revision(self, body, query, repo, rev="main"):
            r = self._repo(repo)
            if r is None or r.tree(rev) is None:
                return self._missing()
            siblings = [{"rfilename": p} for p in sorted(r.tree(rev))]
            sha = r.heads.get(rev, rev)
            return 200, {"id": repo, "sha": sha, "private": r.private, "siblings": siblings}, None

        def _paths_info(self, body, query, repo, rev):
            r = self._repo(repo)
            if r is None or r.tree(rev) is None:
                return self._missing()
            tree, out = r.tree(rev), []
            for path in parse_qs(body.decode()).get("paths", []):
                path = path.strip("/")
                if path in tree:
                    out.append(self._entry(path, tree[path]))
                elif any(p.startswith(path + "/") for p in tree):
                    out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
            return 200, out, None

        def _entry(self, path: str, e: dict) -> dict:
            data = hub.lfs[e["sha256"]] if e.get("sha256") else e["content"]
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
            if e.get("sha256"):
                entry["lfs"] = {"oid": e["sha256"], "size": len(data), "pointerSize": 134}
            return entry

        def _tree(self, body, query, repo, rev, sub=None):
            r = self._repo(repo)
            if r is None or r.tree(rev) is None:
                return self._missing()
            prefix = (sub or "").strip("/")
            under = {p: e for p, e in r.tree(rev).items() if not prefix or p.startswith(prefix + "/")}
            if query.get("recursive", ["false"])[0].lower() == "true":
                return 200, [self._entry(p, e) for p, e in sorted(under.items())], None
            out, dirs = [], set()  # not recursive: direct children, sub-folders as directory entries
            for p, e in sorted(under.items()):
                rest = p[len(prefix) + 1 :] if prefix else p
                if "/" in rest:
                    dirs.add((f"{prefix}/" if prefix else "") + rest.split("/")[0])
                else:
                    out.append(self._entry(p, e))
            oid = lambda d: hashlib.sha1(d.encode()).hexdigest()  # noqa: E731
            return 200, [{"type": "directory", "path": d, "oid": oid(d)} for d in sorted(dirs)] + out, None

        def _resolve(self, body, query, repo, rev, path):
            r = self._repo(repo)
            tree = None if r is None else r.tree(rev)
            if tree is None:
                return self._missing()
            if path not in tree:
                return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
            e = tree[path]
            data = hub.lfs[e["sha256"]] if e.get("sha256") else e["content"]
            headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": r.heads.get(rev, rev)}
            return 200, data, headers

    return Handler


class LoopbackGuard:
    """Refuse (and record) every connection or name lookup that is not loopback, for the duration of a test."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def install(self, monkeypatch) -> None:
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
                self.attempts.append(f"connect {address[0]}:{address[1]}")
                raise ConnectionRefusedError(f"test guard: connection to {address[0]} refused (loopback only)")
            return real_connect(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if host is not None and str(host) not in LOOPBACK:
                self.attempts.append(f"getaddrinfo {host}")
                raise socket.gaierror(f"test guard: lookup of {host} refused (loopback only)")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
