"""`surgcorpus query` latency on a build's ``frame_labels`` against raw DuckDB on the same Parquet file, same run.

Two queries: a group-by over every frame label (rows per label per source) and one video's frames (a video in the
middle of the table). Each is run four ways (in-process pair and fresh-process pair each alternating run by run):

- ``cli``: ``surgcorpus query --build B -f csv SQL``, a fresh process end to end;
- ``raw_cli``: a fresh ``python -c`` process that imports duckdb and runs the same SQL on ``read_parquet(file)``;
- ``catalog``: ``corpus.catalog.query`` in this process (what the command calls: a connection with the build's
  views, the query, the rows), best of ``--reps`` after one warm-up;
- ``raw``: ``duckdb.connect()`` and the same SQL on ``read_parquet(file)`` in this process, best of ``--reps``
  after one warm-up.

Goals: the group-by within 1.2x raw DuckDB; one video's frames under 0.1 s in-process. The build is the one
``bench/corpus_scale.py`` left (default: its largest under ``/tmp/corpus_scale``), or ``--build`` a folder whose
``tables/frame_labels.parquet`` is the corpus-size table ``corpus_scale.py --frame-labels 10535`` writes.
Shared, noisy machine: the load average is written beside the figures.
Results: ``bench/results/query_latency.{json,md}``.

    .venv/bin/python bench/query_latency.py [--build /tmp/corpus_scale/fl10535] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from corpus.catalog import query as catalog_query

REPO = Path(__file__).resolve().parents[1]
SURGCORPUS = Path(sys.executable).with_name("surgcorpus")
GROUP_BY = "SELECT source, label, count(*) AS n FROM {t} GROUP BY source, label ORDER BY source, label"
ONE_VIDEO = "SELECT frame, time_s, label FROM {t} WHERE video_id = '{v}' ORDER BY frame"
RAW_PROCESS = (
    "import sys, duckdb; con = duckdb.connect(); rows = con.execute(sys.argv[1]).fetchall(); "
    "sys.stdout.write(''.join(','.join(map(str, r)) + '\\n' for r in rows))"
)


def _default_build() -> Path | None:
    builds = sorted(Path("/tmp/corpus_scale").glob("n*/build/tables/frame_labels.parquet"))
    builds.sort(key=lambda p: int(p.parts[-4][1:]))
    return builds[-1].parents[1] if builds else None


def _middle_video(path: Path) -> str:
    """The video id of the row in the middle of the file (read from that row group only)."""
    f = pq.ParquetFile(path)
    mid = f.metadata.num_row_groups // 2
    return f.read_row_group(mid, columns=["video_id"]).column(0)[0].as_py()


def _cpu_s(children: bool) -> float:
    """CPU seconds (user + system) used so far by this process (all its threads) or by its waited-for children."""
    if children:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime
    return time.process_time()


def _interleaved(fns: dict[str, object], reps: int, warm: bool, children: bool) -> dict[str, dict]:
    """Run each of ``fns`` ``reps`` times, alternating between them (so a change of load hits all alike), after one
    warm-up round when ``warm``; returns per name the best and every wall time, the CPU time of each run (of this
    process, or of the child process with ``children``: steadier than wall time on a shared machine), and the last
    output."""
    out: dict[str, dict] = {name: {"times_s": [], "cpu_s": []} for name in fns}
    if warm:
        for name, fn in fns.items():
            out[name]["output"] = fn()
    for _ in range(reps):
        for name, fn in fns.items():
            t, c = time.perf_counter(), _cpu_s(children)
            out[name]["output"] = fn()
            out[name]["times_s"].append(time.perf_counter() - t)
            out[name]["cpu_s"].append(_cpu_s(children) - c)
    for r in out.values():
        r["best_s"] = min(r["times_s"])
        r["best_cpu_s"] = min(r["cpu_s"])
    return out


def _process(cmd: list[str]):
    return lambda: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def measure(build: Path, reps: int) -> dict:
    path = (build / "tables" / "frame_labels.parquet").resolve()
    meta = pq.ParquetFile(path).metadata
    video = _middle_video(path)
    raw_table = f"read_parquet('{path}')"
    queries = {
        "group_by": (GROUP_BY.format(t="frame_labels"), GROUP_BY.format(t=raw_table)),
        "one_video": (ONE_VIDEO.format(t="frame_labels", v=video), ONE_VIDEO.format(t=raw_table, v=video)),
    }
    results: dict[str, dict] = {}
    for name, (ours, raw) in queries.items():

        def run_raw(sql: str = raw) -> list[tuple]:
            con = duckdb.connect()
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()

        load = os.getloadavg()[0]
        r: dict = {"sql": ours, "raw_sql": raw, "load_average_before": round(load, 2)}
        inproc = _interleaved(
            {"raw": run_raw, "catalog": lambda sql=ours: catalog_query(build, sql)[1]}, reps, True, False
        )
        fresh = _interleaved(
            {
                "raw_cli": _process([sys.executable, "-c", RAW_PROCESS, raw]),
                "cli": _process([str(SURGCORPUS), "query", "--build", str(build), "-f", "csv", ours]),
            },
            reps,
            False,
            True,
        )
        rows_raw, rows_ours = inproc["raw"].pop("output"), inproc["catalog"].pop("output")
        r["same_rows"] = [tuple(x) for x in rows_ours] == [tuple(x) for x in rows_raw]
        r["result_rows"] = len(rows_raw)
        r["cli_rows"] = len(fresh["cli"].pop("output").splitlines()) - 1  # minus the header
        fresh["raw_cli"].pop("output")
        r.update(inproc)
        r.update(fresh)
        r["load_average_after"] = round(os.getloadavg()[0], 2)
        r["ratio_in_process"] = r["catalog"]["best_s"] / r["raw"]["best_s"]
        r["ratio_fresh_process"] = r["cli"]["best_s"] / r["raw_cli"]["best_s"]
        r["cpu_ratio_in_process"] = r["catalog"]["best_cpu_s"] / r["raw"]["best_cpu_s"]
        r["cpu_ratio_fresh_process"] = r["cli"]["best_cpu_s"] / r["raw_cli"]["best_cpu_s"]
        results[name] = r
        print(
            f"{name}: catalog {r['catalog']['best_s']:.3f} s, raw {r['raw']['best_s']:.3f} s; "
            f"cli {r['cli']['best_s']:.3f} s, raw process {r['raw_cli']['best_s']:.3f} s (load {load:.1f})",
            flush=True,
        )
    return {
        "build": str(build),
        "file": str(path),
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "rows": meta.num_rows,
        "row_groups": meta.num_row_groups,
        "video": video,
        "queries": results,
    }


def write_results(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "query_latency.json").write_text(json.dumps(report, indent=1))
    q = report["queries"]
    g, v = q["group_by"], q["one_video"]
    lines = [
        "# `surgcorpus query` against raw DuckDB on `frame_labels`",
        "",
        f"{report['date']}, {report['machine']}, DuckDB {report['duckdb']}. `{report['file']}`: "
        f"{report['rows']:,} rows, {report['row_groups']} row groups, {report['file_mib']} MiB "
        "(`bench/query_latency.py`; fresh processes: best of the runs, in-process: best of the runs after a warm-up).",
        "",
        "| query | in-process: ours / raw (s) | ratio | CPU s, ratio | fresh process: `surgcorpus query` / "
        "`python -c` duckdb (s) | ratio | CPU s, ratio | same rows | load avg before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in q.items():
        lines.append(
            f"| {name} ({r['result_rows']} rows) | {r['catalog']['best_s']:.3f} / {r['raw']['best_s']:.3f} | "
            f"{r['ratio_in_process']:.2f} | {r['catalog']['best_cpu_s']:.2f} / {r['raw']['best_cpu_s']:.2f}, "
            f"{r['cpu_ratio_in_process']:.2f} | {r['cli']['best_s']:.3f} / {r['raw_cli']['best_s']:.3f} | "
            f"{r['ratio_fresh_process']:.2f} | {r['cli']['best_cpu_s']:.2f} / {r['raw_cli']['best_cpu_s']:.2f}, "
            f"{r['cpu_ratio_fresh_process']:.2f} | {r['same_rows']} | {r['load_average_before']:.1f} / "
            f"{r['load_average_after']:.1f} |"
        )
    met_g = g["ratio_in_process"] <= 1.2
    met_v = v["catalog"]["best_s"] < 0.1
    lines += [
        "",
        f"Goal, group-by within 1.2x raw DuckDB: in-process {g['ratio_in_process']:.2f}x "
        f"({'met' if met_g else 'MISSED'}), fresh process {g['ratio_fresh_process']:.2f}x "
        f"({'met' if g['ratio_fresh_process'] <= 1.2 else 'missed'}).",
        f"Goal, one video's frames under 0.1 s in-process: {v['catalog']['best_s']:.3f} s "
        f"({'met' if met_v else 'MISSED'}).",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    (out / "query_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", type=Path, default=None, help="a build dir (default: corpus_scale's largest)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--note", default="", help="a paragraph written into the results")
    args = ap.parse_args()
    build = args.build or _default_build()
    if build is None or not (build / "tables" / "frame_labels.parquet").exists():
        ap.error("no build with tables/frame_labels.parquet: run bench/corpus_scale.py first or pass --build")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "duckdb": duckdb.__version__,
        "reps": args.reps,
        "note": args.note,
        "goals": "group-by within 1.2x raw DuckDB on the same file; one video's frames under 0.1 s in-process",
        **measure(build, args.reps),
    }
    write_results(report, args.out)


if __name__ == "__main__":
    main()
