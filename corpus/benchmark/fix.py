"""Corrected benchmark splits: the published SurgRec splits with the defects the audit finds repaired.

Per dataset, in this order (every change is a row of the diff report, with its reason):

1. rows of an artefact class (M2CAI16's ``Phase``: the annotation files' header row read as a label) are dropped,
   and so are rows whose label id is outside the label map and repeated rows of one split;
2. a published label that disagrees with the native annotation is replaced by the annotated one (``relabelled``);
3. a source video in more than one split goes wholly to the split holding most of its clips (ties: test, then
   val), or with ``leaking="drop"`` its clips leave train (``moved`` / ``dropped``);
4. where ``val.csv`` equals ``test.csv`` (or there is no val split), a validation split is carved from train by
   source video: videos in a seeded hash order until ``val_fraction`` of the train clips (at least one video, and
   at least one video left in train).

Nothing here touches the published files. :func:`write_fixed` writes ``OUT/<dataset>/{train,val,test}.csv`` in
SurgRec's own format (so ``benchmark audit --splits OUT`` reads them), ``label_map.json`` and the diff report
``fix_report.{json,md}``; :func:`fixable_defects` lists what an audit report still holds that :func:`fix` repairs.

Example::

    fixed, report = fix(spec, read_splits(split_dir(spec, "splits")), plan(spec, root))
    write_fixed(spec, fixed, report, "build/splits-fixed")
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from corpus.atomic import write_text_atomic
from corpus.benchmark.audit import DATA_ROOT, video_key
from corpus.benchmark.plan import PlannedClip
from corpus.benchmark.spec import SPLITS, BenchmarkSource

Rows = dict[str, list[tuple[str, int]]]
Leaking = Literal["move", "drop"]

# Classes that are artefacts of how the published splits were made, by benchmark source name: label -> reason.
ARTEFACT_CLASSES: dict[str, dict[str, str]] = {
    "m2cai16-workflow": {"Phase": "artefact class: the header row of each annotation file read as a phase"},
}
# Where a video's clips go when its splits hold equally many (the earlier wins).
_TIE_ORDER = ("test", "val", "train")


def _key_of(spec: BenchmarkSource, rows: Rows, planned: list[PlannedClip] | None) -> dict[str, str]:
    """Source video of each published path: the annotated video where planned, else the audit's name pattern."""
    by_path = {c.path: c.video_id for c in planned or []}
    named = {video_key(spec.dataset, c.path): c.video_id for c in planned or []}
    out = {}
    for r in rows.values():
        for p, _ in r:
            k = video_key(spec.dataset, p)
            out[p] = by_path.get(p) or named.get(k, k)
    return out


def _rank(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def fix(
    spec: BenchmarkSource,
    published: Rows,
    planned: list[PlannedClip] | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    leaking: Leaking = "move",
) -> tuple[Rows, dict]:
    """Corrected splits of one dataset and the diff report (a JSON-able dict); see the module docstring."""
    rows: Rows = {s: list(published.get(s, [])) for s in SPLITS}
    changes: list[dict] = []
    val_equals_test = bool(rows["val"]) and sorted(rows["val"]) == sorted(rows["test"])
    carve = val_equals_test or not rows["val"]
    if val_equals_test:
        rows["val"] = []  # a copy of test is no validation split: a new one is carved from train below
    key = _key_of(spec, {s: list(published.get(s, [])) for s in SPLITS}, planned)

    artefacts = ARTEFACT_CLASSES.get(spec.name, {})
    artefact_ids = {spec.label_map[name]: reason for name, reason in artefacts.items() if name in spec.label_map}
    known = set(spec.label_map.values())
    for s in SPLITS:
        seen, kept = set(), []
        for p, lab in rows[s]:
            reason = (
                artefact_ids.get(lab)
                or (f"label id {lab} is outside the label map" if known and lab not in known else None)
                or ("repeated row" if p in seen else None)
            )
            if reason:
                changes.append({"action": "dropped", "clip": p, "split": s, "label": lab, "reason": reason})
            else:
                kept.append((p, lab))
            seen.add(p)
        rows[s] = kept

    by_path = {c.path: c for c in planned or []}
    not_relabelled = 0
    for s in SPLITS:
        kept = []
        for p, lab in rows[s]:
            c = by_path.get(p)
            if c is None or c.label_id == lab:
                kept.append((p, lab))
            elif c.label_id is None:
                not_relabelled += 1
                kept.append((p, lab))
            elif c.label_id in artefact_ids:
                changes.append(
                    {"action": "dropped", "clip": p, "split": s, "label": lab, "reason": artefact_ids[c.label_id]}
                )
            else:
                changes.append(
                    {
                        "action": "relabelled",
                        "clip": p,
                        "split": s,
                        "from": lab,
                        "to": c.label_id,
                        "reason": f"the native annotation says {c.label!r}",
                    }
                )
                kept.append((p, c.label_id))
        rows[s] = kept

    per_video: dict[str, Counter] = defaultdict(Counter)
    for s in SPLITS:
        for p, _ in rows[s]:
            per_video[key[p]][s] += 1
    moved_videos = 0
    for vid, counts in sorted(per_video.items()):
        if len(counts) < 2:
            continue
        moved_videos += 1
        if leaking == "drop":
            target = None
            sources = ["train"] if "train" in counts else []
            reason = f"video {vid} is also in {', '.join(s for s in counts if s != 'train')}: dropped from train"
        else:
            target = max(counts, key=lambda s: (counts[s], -_TIE_ORDER.index(s)))
            sources = [s for s in counts if s != target]
            held = ", ".join(f"{counts[s]} {s}" for s in SPLITS if counts[s])
            reason = f"video {vid} is in several splits ({held} clips): moved to {target}, where most of it is"
        for s in sources:
            keep, move = [], []
            for r in rows[s]:
                (move if key[r[0]] == vid else keep).append(r)
            rows[s] = keep
            if target:
                rows[target] += move
            for p, lab in move:
                action = {"action": "moved", "to": target} if target else {"action": "dropped"}
                changes.append({**action, "clip": p, "split": s, "label": lab, "reason": reason})

    carved: list[str] = []
    if carve:
        videos = defaultdict(list)
        for r in rows["train"]:
            videos[key[r[0]]].append(r)
        want = max(1, round(val_fraction * len(rows["train"])))
        n = 0
        for vid in sorted(videos, key=lambda v: _rank(seed, v))[: max(len(videos) - 1, 0)]:
            if n >= want:
                break
            carved.append(vid)
            n += len(videos[vid])
        chosen = set(carved)
        rows["val"] = [r for r in rows["train"] if key[r[0]] in chosen]
        rows["train"] = [r for r in rows["train"] if key[r[0]] not in chosen]
        why = "val.csv equals test.csv" if val_equals_test else "no validation split"
        for p, lab in rows["val"]:
            changes.append(
                {
                    "action": "moved",
                    "clip": p,
                    "split": "train",
                    "to": "val",
                    "label": lab,
                    "reason": f"{why}: validation carved from train by source video ({key[p]})",
                }
            )
    for s in SPLITS:
        rows[s].sort()

    report = {
        "dataset": spec.name,
        "folder": spec.dataset,
        "rows_published": {s: len(published.get(s, [])) for s in SPLITS},
        "rows_fixed": {s: len(rows[s]) for s in SPLITS},
        "val_equals_test_published": val_equals_test,
        "val_carved_from_train": {"videos": len(carved), "clips": len(rows["val"])} if carve else None,
        "annotation_checked": planned is not None,
        "videos_in_several_splits": moved_videos,
        "leaking_policy": leaking,
        "counts": dict(Counter(c["action"] for c in changes)),
        "labels_not_checked_unmapped": not_relabelled,
        "artefact_classes_removed": sorted(a for a in artefacts if a in spec.label_map),
        "changes": changes,
        "seed": seed,
        "val_fraction": val_fraction,
    }
    return rows, report


def fixable_defects(audit_report: dict, spec: BenchmarkSource | None = None) -> list[str]:
    """What an audit report (``corpus.benchmark.audit.audit``) still holds that :func:`fix` repairs (artefact
    classes are checked when ``spec`` is given)."""
    r = audit_report
    out = []
    if spec is not None:
        ids = {str(spec.label_map[a]) for a in ARTEFACT_CLASSES.get(spec.name, {}) if a in spec.label_map}
        if any(ids & set(r["class_balance"][s]["classes"]) for s in SPLITS):
            out.append(f"rows of artefact classes {sorted(ARTEFACT_CLASSES[spec.name])}")
    if r.get("val_equals_test"):
        out.append("val equals test")
    if r.get("identical_splits"):
        out.append(f"identical splits {r['identical_splits']}")
    if r.get("labels_outside_map"):
        out.append(f"labels outside the label map {r['labels_outside_map']}")
    if r.get("label_mismatches"):
        out.append(f"{len(r['label_mismatches'])} labels disagree with the annotation")
    if r.get("shared_videos"):
        out.append(f"videos in two splits {sorted(r['shared_videos'])}")
    if r.get("overlapping_clips"):
        out.append(f"{r['overlapping_clips']} clip pairs overlap across splits")
    if any(r["rows"][s] == 0 for s in ("train", "val", "test")):
        out.append("an empty split")
    return out


def _row(path: str, label: int) -> str:
    full = DATA_ROOT + path
    return f'"{full}" {label}' if " " in full else f"{full} {label}"


def report_markdown(report: dict) -> str:
    pub, fixed = report["rows_published"], report["rows_fixed"]
    lines = [
        f"# {report['dataset']}: corrected splits",
        "",
        "| split | published | fixed |",
        "|---|---|---|",
        *(f"| {s} | {pub[s]} | {fixed[s]} |" for s in SPLITS),
        "",
        f"- annotation checked: {'yes' if report['annotation_checked'] else 'no (labels kept as published)'}",
        f"- published val.csv equal to test.csv: {'yes' if report['val_equals_test_published'] else 'no'}",
    ]
    if report["val_carved_from_train"]:
        v = report["val_carved_from_train"]
        lines.append(f"- validation carved from train: {v['videos']} source videos, {v['clips']} clips")
    lines.append(
        f"- source videos in several splits: {report['videos_in_several_splits']} ({report['leaking_policy']})"
    )
    if report["artefact_classes_removed"]:
        lines.append(f"- artefact classes removed: {', '.join(report['artefact_classes_removed'])}")
    lines.append(f"- changes: {', '.join(f'{n} {a}' for a, n in sorted(report['counts'].items())) or 'none'}")
    if report["changes"]:
        lines += ["", "| action | clip | split | to | label | reason |", "|---|---|---|---|---|---|"]
        for c in report["changes"]:
            label = f"{c['from']} → {c['to']}" if c["action"] == "relabelled" else str(c.get("label", ""))
            to = c.get("to", "") if c["action"] == "moved" else ""
            lines.append(f"| {c['action']} | {c['clip']} | {c['split']} | {to} | {label} | {c['reason']} |")
    return "\n".join(lines) + "\n"


def write_fixed(spec: BenchmarkSource, rows: Rows, report: dict, out: str | Path) -> Path:
    """Write ``out/<dataset>/{train,val,test}.csv``, ``label_map.json`` and ``fix_report.{json,md}``."""
    folder = Path(out) / spec.dataset
    folder.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        write_text_atomic(folder / f"{s}.csv", "".join(_row(p, lab) + "\n" for p, lab in rows[s]))
    artefacts = ARTEFACT_CLASSES.get(spec.name, {})
    to_index = {k: v for k, v in spec.label_map.items() if k not in artefacts}
    write_text_atomic(
        folder / "label_map.json",
        json.dumps({"label_to_index": to_index, "index_to_label": {str(v): k for k, v in to_index.items()}}, indent=2),
    )
    write_text_atomic(folder / "fix_report.json", json.dumps(report, indent=2))
    write_text_atomic(folder / "fix_report.md", report_markdown(report))
    return folder
