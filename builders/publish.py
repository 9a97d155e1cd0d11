"""Publish a finished build to the Hugging Face Hub: WebDataset shards and Parquet tables, each in its own dataset
repo with its own generated card, through ``huggingface_hub``.

Why two repos: ``datasets.load_dataset`` picks one loader per repo, so a card declaring Parquet and WebDataset
configs side by side fails (huggingface/datasets#7101, #6447). The shards go to ``ORG/NAME`` (one ``default``
config, ``data_files`` per split: ``shards/<split>/*.tar``), the tables to ``ORG/NAME-tables`` (one config per
table; tables with a ``split`` column get one file per split, ``data/<table>/<split>.parquet``, the others one
``full`` split). Both cards list the sources' licenses, citations and a composition table.

Uploads are resumable: files go up in batches, one commit per batch, and the client skips every file whose content
the branch already holds (the preupload answer carries the remote oid, LFS objects already stored are not sent
again), so re-running after an interruption sends only what is missing; a batch that failed on a dropped connection
is retried. The card is committed last, with the deletion of files a previous publish left that this build no longer
has (e.g. a shard that disappeared). The token is never printed or logged; nothing here logs request headers
(``err.response.request.headers`` holds the token).

Files written: ``<staging>/data/<table>/<split>.parquet`` (per-split tables; staging is ``<build>/_publish``).

>>> plan = plan_publish("build/demo/corpus", "org/demo")  # doctest: +SKIP
>>> print(plan.describe()); publish(plan)                   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from corpus.schemas import write_table
from corpus.splits import SPLITS

log = logging.getLogger("surgcorpus.publish")

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
STAGING_DIR = "_publish"
FULL_SPLIT = "full"  # the split name of a table without a split column
CARD = "README.md"
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)

# Source license strings (as manifests write them) -> Hub license identifiers; anything else is "other".
HUB_LICENSES = {
    "apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0", "cc-by-nd-4.0", "cc-by-3.0", "cc-by-sa-3.0", "cc-by-nc-3.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-nd-3.0", "bsd-3-clause", "bsd-2-clause", "gpl-3.0", "odbl", "odc-by", "pddl", "unknown",
}  # fmt: skip


class PublishError(Exception):
    """A build that cannot be published as asked (not a finished build, a bad repo id)."""


class UploadError(PublishError):
    """The Hub refused an upload, or the connection kept failing."""


@dataclass(frozen=True)
class RepoFile:
    """One file to upload: where it lands in the repo and where it is on disk."""

    path_in_repo: str
    local: Path
    size: int


@dataclass
class RepoUpload:
    """One Hub dataset repo: its files and its card (README.md text)."""

    repo_id: str
    kind: str  # "shards" | "tables"
    files: list[RepoFile]
    card: str

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) + len(self.card.encode())


@dataclass
class PublishPlan:
    """Everything ``publish`` will send; ``describe()`` is what ``--dry-run`` prints."""

    build_dir: Path
    revision: str
    private: bool
    repos: list[RepoUpload] = field(default_factory=list)

    def describe(self, cards: bool = True) -> str:
        lines = [f"publish {self.build_dir} at revision {self.revision!r} ({'private' if self.private else 'public'})"]
        for repo in self.repos:
            lines.append(f"\n{repo.repo_id} ({repo.kind}): {len(repo.files) + 1} file(s), {_human(repo.size)}")
            lines += [f"  {f.size:>14,d}  {f.path_in_repo}" for f in repo.files]
            lines.append(f"  {len(repo.card.encode()):>14,d}  {CARD} (generated card)")
            if cards:
                lines += ["", f"----- {repo.repo_id}/{CARD} -----", repo.card.rstrip(), "-----"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plan


def plan_publish(
    build_dir: str | Path,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = False,
    tables_repo_id: str | None = None,
    staging: str | Path | None = None,
    manifest: str | Path | None = None,
) -> PublishPlan:
    """Plan the upload of a finished build: shard files, per-split tables (written to ``staging``) and both cards.

    ``manifest`` (default: the manifest recorded in ``build.lock``, when it still exists) supplies the citations
    (each source's ``expected.reference``).
    """
    build = Path(build_dir)
    tables_repo_id = tables_repo_id or f"{repo_id}-tables"
    for rid in (repo_id, tables_repo_id):
        if not REPO_ID.match(rid):
            raise PublishError(f"repo id {rid!r}: expected ORG/NAME (letters, digits, - _ .)")
    if repo_id == tables_repo_id:
        raise PublishError("shards and tables need two repos: --repo-id and the tables repo must differ")
    lock_path = build / "build.lock"
    if not lock_path.is_file():
        raise PublishError(f"{build}: not a finished build (no build.lock); run or resume `surgcorpus build` first")
    lock = json.loads(lock_path.read_text())
    name = lock.get("manifest_name") or build.name
    staging = Path(staging) if staging else build / STAGING_DIR

    shard_files = sorted((build / "shards").glob("*/*.tar"))
    if not shard_files:
        raise PublishError(f"{build}/shards: no shard (.tar) to publish")
    facts = _facts(build, _citations(manifest or lock.get("manifest_path"), build))
    shards = [RepoFile(p.relative_to(build).as_posix(), p, p.stat().st_size) for p in shard_files]
    splits = [s for s in SPLITS if (build / "shards" / s).is_dir() and any((build / "shards" / s).glob("*.tar"))]
    tables, table_configs = _stage_tables(build, staging)
    plan = PublishPlan(build.resolve(), revision, private)
    plan.repos.append(
        RepoUpload(repo_id, "shards", shards, _shards_card(repo_id, name, splits, facts, tables_repo_id, revision))
    )
    plan.repos.append(
        RepoUpload(
            tables_repo_id,
            "tables",
            tables,
            _tables_card(tables_repo_id, name, table_configs, facts, repo_id, revision),
        )
    )
    return plan


def _stage_tables(build: Path, staging: Path) -> tuple[list[RepoFile], dict[str, list[tuple[str, str]]]]:
    """Write each non-empty table as ``data/<table>/<split>.parquet`` under ``staging``; returns the files and
    ``{table: [(split, path_in_repo), ...]}`` for the card's configs."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files: list[RepoFile] = []
    configs: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((build / "tables").glob("*.parquet")):
        table = path.stem
        if pq.ParquetFile(path).metadata.num_rows == 0:
            continue
        data = ds.dataset(path)
        parts = (
            [(s, data.to_table(filter=ds.field("split") == s)) for s in SPLITS]
            if "split" in data.schema.names
            else [(FULL_SPLIT, data.to_table())]
        )
        for split, part in parts:
            if part.num_rows == 0:
                continue
            rel = f"data/{table}/{split}.parquet"
            out = write_table(part, staging / rel)
            files.append(RepoFile(rel, out, out.stat().st_size))
            configs.setdefault(table, []).append((split, rel))
    return files, configs


@dataclass
class _Facts:
    """What the cards say about the build: per-source composition rows, licenses and citations."""

    sources: list[dict]
    totals: dict
    citations: dict[str, str]


def _facts(build: Path, citations: dict[str, str]) -> _Facts:
    import duckdb
    import pyarrow.parquet as pq

    t = build / "tables"
    con = duckdb.connect()
    has_id = "license_id" in pq.read_schema(t / "sources.parquet").names  # sources carry SPDX-style ids since 0.1
    license_id = "s.license_id" if has_id else "NULL"
    split_cols = ", ".join(f"count(*) FILTER (WHERE v.split = '{s}') AS videos_{s}" for s in SPLITS)
    clip_cols = ", ".join(f"count(*) FILTER (WHERE c.split = '{s}') AS clips_{s}" for s in SPLITS)
    rows = con.execute(
        f"""
        WITH v AS (SELECT source, count(*) AS videos, sum(duration_s) / 3600 AS hours, {split_cols}
                   FROM read_parquet('{t / "videos.parquet"}') v GROUP BY source),
             c AS (SELECT source, {clip_cols}
                   FROM read_parquet('{t / "clips.parquet"}') c WHERE c.shard IS NOT NULL GROUP BY source)
        SELECT s.source, s.domain, s.license, {license_id} AS license_id, s.homepage, coalesce(v.videos, 0) AS videos,
               coalesce(v.hours, 0) AS hours, {", ".join(f"coalesce(videos_{x}, 0) AS videos_{x}" for x in SPLITS)},
               {", ".join(f"coalesce(clips_{x}, 0) AS clips_{x}" for x in SPLITS)}
        FROM read_parquet('{t / "sources.parquet"}') s LEFT JOIN v USING (source) LEFT JOIN c USING (source)
        ORDER BY s.source
        """
    ).fetchall()
    cols = [d[0] for d in con.description]
    sources = [dict(zip(cols, r, strict=True)) for r in rows]
    totals = {k: sum(s[k] for s in sources) for k in cols[5:]}
    return _Facts(sources, totals, citations)


def _citations(manifest: str | Path | None, build: Path) -> dict[str, str]:
    """source -> citation text, from the manifest's ``expected.reference`` (empty when the manifest is gone)."""
    if not manifest:
        return {}
    path = Path(manifest)
    if not path.is_file():
        log.warning("%s: manifest not found; the cards carry no citations", path)
        return {}
    from corpus.manifest import load_manifest

    m = load_manifest(path)
    return {s.name: s.expected.reference for s in m.sources if s.expected is not None}


def hub_license(text: str | None) -> str:
    """A source's license string as a Hub license id: ``CC BY-NC-SA 4.0`` -> ``cc-by-nc-sa-4.0``, else ``other``."""
    if not text:
        return "unknown"
    slug = re.sub(r"[\s_]+", "-", text.strip().lower()).replace("--", "-")
    return slug if slug in HUB_LICENSES else "other"


def _card_header(name: str, facts: _Facts, tags: list[str], configs: list[dict], pretty: str) -> str:
    licenses = sorted({hub_license(s["license_id"] or s["license"]) for s in facts.sources}) or ["unknown"]
    meta: dict = {"license": licenses[0] if len(licenses) == 1 else licenses}
    if "other" in licenses:
        meta["license_name"] = "per-source"
        meta["license_link"] = "README.md#sources-licenses-and-citations"
    meta.update({"pretty_name": pretty, "tags": tags, "configs": configs})
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _composition(facts: _Facts) -> str:
    head = ["source", "domain", "license", "videos", "hours"] + [f"{s} clips" for s in SPLITS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for s in facts.sources:
        cells = [s["source"], s["domain"], s["license"] or "unknown", str(s["videos"]), f"{s['hours']:.3f}"]
        lines.append("| " + " | ".join(cells + [str(s[f"clips_{x}"]) for x in SPLITS]) + " |")
    t = facts.totals
    total = ["**total**", "", "", str(t["videos"]), f"{t['hours']:.3f}"] + [str(t[f"clips_{x}"]) for x in SPLITS]
    lines.append("| " + " | ".join(total) + " |")
    return "\n".join(lines)


def _sources_section(facts: _Facts) -> str:
    lines = ["## Sources, licenses and citations", ""]
    lines.append("Each source keeps its own license; using a clip means accepting its source's terms.")
    lines.append("")
    for s in facts.sources:
        where = f" ({s['homepage']})" if s["homepage"] else ""
        cite = facts.citations.get(s["source"]) or "no citation recorded in the corpus manifest"
        lines.append(f"- **{s['source']}**{where}: license {s['license'] or 'unknown'}; cite: {cite}")
    return "\n".join(lines)


def _shards_card(repo_id: str, name: str, splits: list[str], facts: _Facts, tables_repo: str, revision: str) -> str:
    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": s, "path": f"shards/{s}/*.tar"} for s in splits],
        }
    ]
    rev = "" if revision == "main" else f', revision="{revision}"'
    body = f"""
# {name}: WebDataset shards

Built with surgcorpus: one sample per clip, `<key>.mp4` (or numbered
`<key>.NNN.jpg` frames) and `<key>.json` (all clip metadata); splits are fixed by the corpus manifest and never
share a video or a near-duplicate cluster. The tables (videos, clips, shard index, errors, ...) are in
[`{tables_repo}`](https://huggingface.co/datasets/{tables_repo}).

```python
from datasets import load_dataset
ds = load_dataset("{repo_id}"{rev}, split="train", streaming=True)
```

## Composition

{_composition(facts)}

{_sources_section(facts)}
"""
    return _card_header(name, facts, ["surgery", "video", "webdataset", "surgcorpus"], configs, name) + body


def _tables_card(
    repo_id: str,
    name: str,
    table_configs: dict[str, list[tuple[str, str]]],
    facts: _Facts,
    shards_repo: str,
    revision: str,
) -> str:
    order = sorted(table_configs, key=lambda t: (t not in ("videos", "clips"), t != "videos", t))
    configs = [{"config_name": t, "data_files": [{"split": s, "path": p} for s, p in table_configs[t]]} for t in order]
    rev = "" if revision == "main" else f', revision="{revision}"'
    listing = "\n".join(f"- `{t}`: splits {', '.join(s for s, _ in table_configs[t])}" for t in order)
    body = f"""
# {name}: tables

The Parquet tables of the surgcorpus build whose WebDataset shards are in
[`{shards_repo}`](https://huggingface.co/datasets/{shards_repo}). One config per table; tables with a `split`
column have one file per split, the others a single `{FULL_SPLIT}` split.

{listing}

```python
from datasets import load_dataset
clips = load_dataset("{repo_id}", "clips"{rev}, split="train")
```

## Composition

{_composition(facts)}

{_sources_section(facts)}
"""
    return _card_header(name, facts, ["surgery", "video", "tabular", "surgcorpus"], configs, f"{name} tables") + body


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------------------------------- upload


@dataclass
class PublishResult:
    """Per repo: the commits made (none when the branch already held everything) and the stale files deleted."""

    commits: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)


def publish(
    plan: PublishPlan,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    batch_files: int = 100,
    batch_bytes: int = 8 << 30,
    attempts: int = 3,
    backoff_s: float = 2.0,
    show_progress: bool = True,
) -> PublishResult:
    """Upload the plan: create each repo (and the branch ``plan.revision``), commit the files in batches, then the
    card with the removal of stale files; a dropped connection or a transient status is retried ``attempts``
    times, waiting ``backoff_s``, then twice that, and so on. ``token=None`` uses the client's own lookup
    (``HF_TOKEN``, ``hf auth login``); ``endpoint=None`` uses ``HF_ENDPOINT`` or the public Hub."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from corpus.progress import stage_progress

    api = HfApi(endpoint=endpoint, token=token)
    _call = functools.partial(_call_with_retries, backoff_s=backoff_s)
    result = PublishResult()
    for repo in plan.repos:
        log.info("publish %s (%s): %d file(s), %d bytes", repo.repo_id, repo.kind, len(repo.files), repo.size)
        _call(attempts, api.create_repo, repo.repo_id, repo_type="dataset", private=plan.private, exist_ok=True)
        if plan.revision != "main":
            _call(attempts, api.create_branch, repo.repo_id, branch=plan.revision, repo_type="dataset", exist_ok=True)
        commits = result.commits.setdefault(repo.repo_id, [])
        head = _call(attempts, api.repo_info, repo.repo_id, repo_type="dataset", revision=plan.revision).sha
        seen = {head}
        batches = list(_batches(repo.files, batch_files, batch_bytes))
        with stage_progress(f"publish {repo.kind}", total=len(repo.files), enabled=show_progress) as advance:
            for i, batch in enumerate(batches, 1):
                ops = lambda batch=batch: [CommitOperationAdd(f.path_in_repo, str(f.local)) for f in batch]  # noqa: E731
                msg = f"surgcorpus publish: {repo.kind} {i}/{len(batches)}"
                _commit(api, repo, plan.revision, ops, msg, attempts, commits, seen, _call)
                advance(len(batch))
        wanted = {f.path_in_repo for f in repo.files} | {CARD}
        remote = _call(attempts, api.list_repo_files, repo.repo_id, repo_type="dataset", revision=plan.revision)
        stale = sorted(p for p in remote if p.startswith(("shards/", "data/")) and p not in wanted)
        result.deleted[repo.repo_id] = stale

        def card_ops(repo=repo, stale=stale) -> list:
            return [CommitOperationAdd(CARD, repo.card.encode())] + [CommitOperationDelete(p) for p in stale]

        msg = f"surgcorpus publish: {repo.kind} card"
        _commit(api, repo, plan.revision, card_ops, msg, attempts, commits, seen, _call)
        log.info("published %s: %d commit(s), %d stale file(s) deleted", repo.repo_id, len(commits), len(stale))
    return result


def _batches(files: Sequence[RepoFile], max_files: int, max_bytes: int) -> Iterator[list[RepoFile]]:
    batch: list[RepoFile] = []
    size = 0
    for f in files:
        if batch and (len(batch) >= max_files or size + f.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield batch


def _commit(
    api, repo: RepoUpload, revision: str, ops, message: str, attempts: int, commits: list[str], seen: set[str], call
) -> None:
    """One commit; ``ops()`` builds fresh operations per attempt (the client mutates them). A commit whose branch
    already holds every file is skipped by the client (no empty commit), so a retry after a lost answer is safe."""
    info = call(
        attempts, lambda: api.create_commit(repo.repo_id, ops(), commit_message=message, repo_type="dataset",
                                            revision=revision)
    )  # fmt: skip
    if info.oid not in seen:  # a skipped (no-op) commit returns the head it found
        seen.add(info.oid)
        commits.append(info.oid)
        log.info("%s@%s: %s (%s)", repo.repo_id, revision, message, info.oid)


def _call_with_retries(attempts: int, fn, *args, backoff_s: float, **kwargs):
    """Call ``fn``, retrying (with back-off) a dropped connection or a transient HTTP status; other errors raise
    ``PublishError`` with the status and the server's message, never the request (its headers hold the token)."""
    from huggingface_hub.errors import HfHubHTTPError

    transport = _transport_errors()
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in TRANSIENT_STATUS or attempt == attempts:
                raise UploadError(f"Hub answered {status}: {exc.server_message or 'no message'}") from None
            log.warning("Hub answered %s; retrying (%d/%d)", status, attempt, attempts)
        except transport as exc:
            if attempt == attempts:
                raise UploadError(f"connection to the Hub failed {attempts} times: {type(exc).__name__}") from None
            log.warning("connection to the Hub failed (%s); retrying (%d/%d)", type(exc).__name__, attempt, attempts)
        time.sleep(min(backoff_s * 2 ** (attempt - 1), 60.0))
    raise AssertionError("unreachable")


def _transport_errors() -> tuple[type[Exception], ...]:
    """The connection-level exceptions of the HTTP library under huggingface_hub (httpx2 in 2.x, httpx before)."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return (http.TransportError,)
