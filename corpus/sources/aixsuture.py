"""AIxSuture (Hoffmann et al., Zenodo 7940583): 314 open-suturing videos rated with OSATS by several raters.

Native files: ``OSATS.xlsx`` (first sheet; or the same table exported as ``OSATS.csv``), one row per video and
rater, columns ``STUDENT, GROUP, TIME, SUTURES, INVESTIGATOR, VIDEO, OSATS_RESPECT ... OSATS_FINAL_QUALITY,
GLOBA_RATING_SCORE`` (sic); videos ``<VIDEO>.mp4``. The skill class of a video comes from its global rating score
(8-40) averaged over raters and rounded: 8-15 beginner (0), 16-23 intermediate (1), 24-40 expert (2).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from corpus.annotations import ParsedAnnotations, segment
from corpus.errors import ToolMissing
from corpus.ids import video_id
from corpus.sources._common import as_float, bad, find

SOURCE = "aixsuture"
REQUIRED = ("VIDEO", "STUDENT", "INVESTIGATOR", "GLOBA_RATING_SCORE")
CLASSES = ("beginner", "intermediate", "expert")


def skill_class(grs: float) -> int:
    """Class id of a mean global rating score: [8, 16) -> 0, [16, 24) -> 1, [24, 40] -> 2."""
    s = round(grs)
    return 0 if s < 16 else 1 if s < 24 else 2


def _rows_xlsx(path: Path) -> list[tuple[int, list]]:
    try:
        import openpyxl
    except ImportError:
        hint = "pip install openpyxl, or export the sheet as OSATS.csv"
        raise ToolMissing(f"{path}: reading .xlsx needs openpyxl ({hint})") from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/XML errors of many kinds for a broken workbook
        raise bad(path, None, f"not a readable .xlsx workbook: {exc}") from None
    try:
        sheet = book.worksheets[0]
        return [(n, list(r)) for n, r in enumerate(sheet.iter_rows(values_only=True), 1)]
    finally:
        book.close()


def _rows_csv(path: Path) -> list[tuple[int, list]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delim = ";" if sample.count(";") > sample.count(",") else ","
        return [(n, row) for n, row in enumerate(csv.reader(fh, delimiter=delim), 1)]


def parse_osats(path: Path) -> ParsedAnnotations:
    rows = _rows_xlsx(path) if path.suffix.lower() == ".xlsx" else _rows_csv(path)
    rows = [(n, r) for n, r in rows if any(c not in (None, "") for c in r)]
    if not rows:
        raise bad(path, 1, "empty table, expected a header row")
    n0, head = rows[0]
    cols = [str(c or "").strip().upper() for c in head]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise bad(path, n0, f"header lacks column(s) {missing} (have {[c for c in cols if c]})")
    at = {c: cols.index(c) for c in REQUIRED}
    scores: dict[str, list[float]] = defaultdict(list)
    student: dict[str, str] = {}
    for n, r in rows[1:]:
        cell = {c: (r[i] if i < len(r) else None) for c, i in at.items()}
        vid = str(cell["VIDEO"] or "").strip()
        if not vid:
            raise bad(path, n, "empty VIDEO")
        grs = as_float(path, n, str(cell["GLOBA_RATING_SCORE"]).strip(), "GLOBA_RATING_SCORE")
        if not 8 <= grs <= 40:
            raise bad(path, n, f"GLOBA_RATING_SCORE {grs:g} outside the OSATS range 8-40")
        stu = str(cell["STUDENT"] or "").strip()
        if vid in student and student[vid] != stu:
            raise bad(path, n, f"video {vid} belongs to student {student[vid]!r} on an earlier row, here {stu!r}")
        student[vid] = stu
        scores[vid].append(grs)
    out = ParsedAnnotations(SOURCE)
    for vid in sorted(scores):
        mean = sum(scores[vid]) / len(scores[vid])
        k = skill_class(mean)
        text = f"GRS {mean:.2f} ({len(scores[vid])} raters)"
        out.segments.append(segment(video_id(SOURCE, vid), "skill", CLASSES[k], k, None, None, None, text))
        out.videos.append(
            {
                "video_id": video_id(SOURCE, vid),
                "native_id": vid,
                "fps": None,
                "n_frames": None,
                "annotation_file": str(path),
                "student": student[vid],
                "video_file": f"video/{vid}.mp4",
            }
        )
    return out


def parse(root: Path) -> ParsedAnnotations:
    root = Path(root)
    path = find(root, "OSATS.xlsx", "**/OSATS.xlsx", "OSATS.csv", "**/OSATS.csv")[0]
    out = parse_osats(path)
    if root.is_dir():  # where the videos really are (video/, or beside the table)
        found = {p.stem: p.relative_to(root).as_posix() for p in root.glob("**/*.mp4")}
        for v in out.videos:
            v["video_file"] = found.get(v["native_id"], v["video_file"])
    return out
