"""Audit of published benchmark splits against native annotations.

Checks, per dataset: rows whose published label disagrees with the annotated one (``label_mismatches``), published
rows with no annotated segment and annotated segments with no published row (per video counts), videos without
annotation, ``val.csv`` identical to ``test.csv``, the same video (or overlapping frames of it) in two splits, class
balance per split with the majority-class accuracy, and tiny test sets.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from corpus.benchmark.plan import PlannedClip
from corpus.benchmark.spec import SPLITS, BenchmarkSource, verify_splits
from corpus.errors import AnnotationError

DATA_ROOT = "__DATA_ROOT__/"
TINY_TEST = 100

# How a published path names its source video, for datasets audited without (or beyond) native annotations.
VIDEO_KEY: dict[str, str] = {
    "cholec80": r"cholec80_(\d+)_",
    "M2CAI16-Workflow": r"(m2cai16w_\w+?_video_\d+)_",
    "MultiBypass140": r"/phase/(\w+)/",
    "cataract-101": r"(case_\d+)_",
    "cataract-1k-phase": r"(case_\d+)/",
    "cat-21": r"(case_\d+_[a-z]+)_",
    "AutoLaparo": r"label_(\d+)_",
    "JIGSAWS": r"videos/(\w+?_[A-I]\d{3})_capture",
    "SAR-RARP50": r"(video_\d+)_",
    "PitVis": r"(video_\d+)_",
    "LapGyn_dataset": r"(case_\d+)_",
    "hyper-kvasir": r"/([0-9a-f-]{36})_",
    "kvasir-capsule": r"/([0-9a-f]{16})_",
    "Colonoscopic-web": r"/(\w+)/(?:NBI|WL)\((\d+)\)",
    "LDPolyVideo": r"videos/((?:[01]_)?\d+)_\d+_\d+_(?:no_)?polyps",
}


def read_split(path: Path) -> list[tuple[str, int]]:
    """Rows of a SurgRec split CSV: ``(path relative to __DATA_ROOT__, label id)``."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<path> <label id>', got {line!r}")
        rows.append((parts[0].strip('"').removeprefix(DATA_ROOT), int(parts[1])))
    return rows


def read_splits(folder: Path) -> dict[str, list[tuple[str, int]]]:
    return {s: read_split(folder / f"{s}.csv") for s in SPLITS if (folder / f"{s}.csv").is_file()}


def video_key(dataset: str, path: str) -> str:
    m = re.search(VIDEO_KEY[dataset], path) if dataset in VIDEO_KEY else None
    return "/".join(m.groups()) if m else path


def _balance(rows: list[tuple[str, int]]) -> dict:
    counts = Counter(label for _, label in rows)
    top, n_top = counts.most_common(1)[0] if counts else (None, 0)
    return {
        "n": len(rows),
        "classes": {str(k): counts[k] for k in sorted(counts)},
        "majority_class": top,
        "majority_class_accuracy": round(n_top / len(rows), 4) if rows else None,
    }


def audit(
    spec: BenchmarkSource,
    published: dict[str, list[tuple[str, int]]],
    planned: list[PlannedClip] | None = None,
    split_folder: Path | None = None,
) -> dict:
    """The audit report of one dataset as a JSON-able dict (``planned`` None: split-only checks)."""
    report: dict = {"dataset": spec.name, "folder": spec.dataset, "task": spec.task}
    if split_folder is not None:
        report["sha256_matches_pin"] = verify_splits(spec, split_folder)
    rows = {s: published.get(s, []) for s in SPLITS}
    report["rows"] = {s: len(r) for s, r in rows.items()}
    report["val_equals_test"] = bool(rows["val"]) and sorted(rows["val"]) == sorted(rows["test"])
    report["identical_splits"] = [
        f"{a}={b}"
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
        if rows[a] and set(rows[a]) == set(rows[b])
    ]
    report["class_balance"] = {s: _balance(r) for s, r in rows.items()}
    report["tiny_test_set"] = 0 < len(rows["test"]) < TINY_TEST
    known_ids = set(spec.label_map.values())
    report["labels_outside_map"] = sorted({lab for r in rows.values() for _, lab in r} - known_ids)

    by_path = {c.path: c for c in planned or []}
    # Unplanned rows of an annotated video get that video's id through the name pattern.
    named = {video_key(spec.dataset, c.path): c.video_id for c in planned or []}
    key = {}
    for r in rows.values():
        for p, _ in r:
            k = video_key(spec.dataset, p)
            key[p] = by_path[p].video_id if p in by_path else named.get(k, k)
    # The same video in two splits (val and test compared only when they differ).
    pairs = [("train", "val"), ("train", "test")] + ([] if report["val_equals_test"] else [("val", "test")])
    vids = {s: {key[p] for p, _ in r} for s, r in rows.items()}
    report["shared_videos"] = {f"{a}/{b}": sorted(vids[a] & vids[b]) for a, b in pairs if vids[a] & vids[b]}
    report["overlapping_clips"] = _overlaps(rows, by_path, pairs)

    if planned is None:
        report["annotation_checked"] = False
        return report
    report["annotation_checked"] = True
    annotated_videos = {c.video_id for c in planned}
    mismatches, unplanned, unannotated = [], [], set()
    pub_count: Counter = Counter()
    for split, r in rows.items():
        for path, label in r:
            clip = by_path.get(path)
            if clip is None:
                if key[path] in annotated_videos:
                    unplanned.append({"clip": path, "split": split, "published": label})
                else:
                    unannotated.add(key[path])
                continue
            if split == "val" and report["val_equals_test"]:
                continue
            pub_count[clip.video_id] += 1
            if clip.label_id != label:
                mismatches.append(
                    {
                        "clip": path,
                        "split": split,
                        "published": label,
                        "annotated": clip.label_id,
                        "annotated_label": clip.label,
                    }
                )
    published_paths = {p for r in rows.values() for p, _ in r}
    plan_count = Counter(c.video_id for c in planned if c.video_id in pub_count)
    unplanned, missing, ranges = _frame_range_differences(unplanned, planned, published_paths, pub_count)
    report["label_mismatches"] = mismatches
    report["videos_with_label_mismatches"] = sorted({by_path[m["clip"]].video_id for m in mismatches})
    report["published_not_annotated"] = unplanned
    report["annotated_not_published"] = missing
    report["frame_range_differences"] = ranges
    report["videos_not_published"] = sorted(annotated_videos - set(pub_count) - {key[p] for p in published_paths})
    report["videos_without_annotation"] = len(unannotated)
    report["clip_count_differences"] = {
        v: {"published": pub_count[v], "annotated": plan_count[v]}
        for v in sorted(pub_count)
        if pub_count[v] != plan_count[v]
    }
    report["unmapped_annotated_labels"] = sorted({c.label for c in planned if c.label_id is None})
    report["classes_never_annotated"] = sorted(set(spec.label_map) - {c.label for c in planned})
    return report


_RANGE = re.compile(r"_(\d+)-(\d+)\.mp4$")


def _frame_range_differences(unplanned, planned, published_paths, pub_count):
    """Pair published rows and planned clips that differ only in their ``_SSSSSS-EEEEEE.mp4`` frame range.

    Returns the unpaired published rows, the unpaired planned paths, and the pairs: each says whether the planned
    clip's end depends on the video's length (``at_video_end``) and, elsewhere, the frame rate the published start
    frame implies (``implied_fps``).
    """
    missing = [c for c in planned if c.path not in published_paths and c.video_id in pub_count]
    by_stem = {_RANGE.sub("", c.path): c for c in missing if _RANGE.search(c.path)}
    pairs, left = [], []
    for row in unplanned:
        m = _RANGE.search(row["clip"])
        c = by_stem.pop(_RANGE.sub("", row["clip"]), None) if m else None
        if c is None:
            left.append(row)
            continue
        start, end = int(m.group(1)), int(m.group(2))
        fps = c.fps * start / c.start_frame if c.fps and c.start_frame and start != c.start_frame else None
        pairs.append(
            {
                "clip": row["clip"],
                "split": row["split"],
                "planned": c.path,
                "published_frames": [start, end],
                "annotated_frames": [c.start_frame, c.end_frame],
                "at_video_end": c.depends_on_video is not None and start == c.start_frame,
                "implied_fps": round(fps, 3) if fps else None,
            }
        )
    paired = {p["planned"] for p in pairs}
    return left, [c.path for c in missing if c.path not in paired], pairs


def _overlaps(rows, by_path, pairs) -> int:
    """Clips of one video in two splits whose frame ranges overlap (e.g. the two camera views of one gesture)."""
    spans: dict[str, dict[str, list[tuple[int, int]]]] = {s: defaultdict(list) for s in rows}
    for s, r in rows.items():
        for p, _ in r:
            c = by_path.get(p)
            if c and c.start_frame is not None and c.end_frame is not None:
                spans[s][c.video_id].append((c.start_frame, c.end_frame))
    n = 0
    for a, b in pairs:
        for vid in spans[a].keys() & spans[b].keys():
            n += sum(1 for x in spans[a][vid] for y in spans[b][vid] if x[0] < y[1] and y[0] < x[1])
    return n


def findings(report: dict) -> list[str]:
    """Short human-readable lines for the problems a report holds."""
    out = []
    if report.get("val_equals_test"):
        out.append("val.csv equals test.csv")
    if any(s.startswith("train") for s in report.get("identical_splits", [])):
        out.append(f"identical splits: {', '.join(report['identical_splits'])}")
    if report.get("tiny_test_set"):
        out.append(f"tiny test set ({report['rows']['test']} clips)")
    if report.get("labels_outside_map"):
        out.append(f"published labels outside the label map: {report['labels_outside_map']}")
    if report.get("label_mismatches"):
        vids = report["videos_with_label_mismatches"]
        out.append(
            f"{len(report['label_mismatches'])} published labels disagree with the annotation ({len(vids)} videos)"
        )
    if report.get("published_not_annotated"):
        out.append(f"{len(report['published_not_annotated'])} published clips match no annotated segment")
    ranges = report.get("frame_range_differences") or []
    if ranges:
        at_end = [r for r in ranges if r["at_video_end"]]
        other = [r for r in ranges if not r["at_video_end"]]
        line = f"{len(ranges)} published clips differ from the annotation only in their frame range"
        if at_end:
            line += f": {len(at_end)} end at the video's last frame (needs the raw video's frame count)"
        if other:
            vids = sorted({r["clip"].rsplit("/", 2)[-2] for r in other})
            fps = sorted({r["implied_fps"] for r in other if r["implied_fps"]})
            line += f"; {len(other)} in {', '.join(vids)}" + (
                f" use another frame rate ({', '.join(f'{f:g}' for f in fps)} fps)" if fps else ""
            )
        out.append(line)
    if report.get("annotated_not_published"):
        out.append(f"{len(report['annotated_not_published'])} annotated segments have no published clip")
    if report.get("shared_videos"):
        out.append(
            "same video in two splits: " + ", ".join(f"{k} ({len(v)})" for k, v in report["shared_videos"].items())
        )
    if report.get("overlapping_clips"):
        out.append(f"{report['overlapping_clips']} clip pairs overlap in time across splits")
    if report.get("unmapped_annotated_labels"):
        out.append(f"annotated labels without a published id: {report['unmapped_annotated_labels']}")
    if report.get("classes_never_annotated"):
        out.append(f"label-map classes no annotated segment has: {report['classes_never_annotated']}")
    bad_sha = [s for s, ok in report.get("sha256_matches_pin", {}).items() if not ok]
    if bad_sha:
        out.append(f"split CSVs differ from the pinned commit: {bad_sha}")
    return out


def to_json(report: dict | list[dict]) -> str:
    return json.dumps(report, indent=2, sort_keys=False)


def report_page(reports: list[dict]) -> str:
    """A Markdown page summarising the audit of every dataset."""
    lines = [
        "# SurgRec benchmark audit",
        "",
        "| dataset | train | val | test | val = test | test majority acc. | annotation checked | findings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        acc = r["class_balance"]["test"]["majority_class_accuracy"]
        found = "; ".join(findings(r)) or "none"
        lines.append(
            f"| {r['dataset']} | {r['rows']['train']} | {r['rows']['val']} | {r['rows']['test']} | "
            f"{'yes' if r['val_equals_test'] else 'no'} | {acc} | "
            f"{'yes' if r['annotation_checked'] else 'no'} | {found} |"
        )
    for r in reports:
        if r.get("label_mismatches"):
            lines += [
                "",
                f"## {r['dataset']}: label mismatches",
                "",
                "| clip | split | published | annotated |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {m['clip']} | {m['split']} | {m['published']} | {m['annotated']} ({m['annotated_label']}) |"
                for m in r["label_mismatches"]
            ]
    return "\n".join(lines) + "\n"
