"""Source adapters: each parses its real sample, a generated file in the documented format, and rejects bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.annotations import SEGMENTS
from corpus.errors import AnnotationError
from corpus.sources import ADAPTERS

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests" / "sources"
SAMPLES = {
    "cholec80": REAL / "YuemingJin__TMRNet_cholec80_eval/code/eval/matlab-phase/gt-phase",
    "cholect50": REAL / "keellylu__cholect50-val",
    "multibypass140": REAL / "CAMMA-public__MultiBypass140",
    "cataract-101": REAL / "matinmoqadas__Cataract-101",
    "jigsaws": REAL / "anidhi__homework3_JIGSAWS",
    "psi-ava": REAL / "BCV-Uniandes__TAPIR_PSI-AVA",
}


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode())
    return root


CT50 = {
    "categories": {
        "phase": {"0": "preparation", "1": "carlot-triangle-dissection"},
        "triplet": {"0": "grasper,grasp,gallbladder"},
    },
    "fps": 1,
    "num_frames": 4,
    "annotations": {
        str(f): [[0, 0, 1, 0, 0, 0, 0, 0, 0, 1, -1, -1, -1, -1, p]] for f, p in ((0, 0), (1, 0), (2, 1), (3, 1))
    },
}
MBP = {"phases": [{"start": 0, "end": 2000, "label_name": "preparation", "label_id": 0}], "steps": []}
C1K_HEADER = "caseId,comment,frame,endFrame,sec,endSec\n"
KC_HEADER = "filename;video_id;frame_number;finding_category;finding_class\n"
OSATS_HEADER = "STUDENT,GROUP,TIME,SUTURES,INVESTIGATOR,VIDEO,OSATS_RESPECT,GLOBA_RATING_SCORE\n"
PSI_MAP = 'label {\n  name: "%s"\n  label_id: %d\n}\n'
PSI_MAPS = {
    f"ann/annotations/surgery_{k}_list.pbtxt": "".join(PSI_MAP % (f"{k}{i}", i) for i in range(0, 21))
    for k in ("PHASES", "STEPS", "TOOLS", "ACTIONS")
}

# adapter -> (generated files in the documented format, expected segments, files with one malformed line, message part)
CASES = {
    "cholec80": (
        {
            "phase_annotations/video01-phase.txt": "Frame\tPhase\n0\tPreparation\n"
            "1\tPreparation\n2\tCleaningCoagulation\n"
        },
        [("Preparation", 0, 2), ("CleaningCoagulation", 2, 3)],
        {"phase_annotations/video01-phase.txt": "Frame\tPhase\n0\tPreparation\n1\tLunch\n"},
        "video01-phase.txt:3: unknown phase 'Lunch'",
    ),
    "m2cai16-workflow": (
        {"train_dataset/workflow_video_01.txt": "Frame\tPhase\n0\tTrocarPlacement\n1\tPreparation\n"},
        [("TrocarPlacement", 0, 1), ("Preparation", 1, 2)],
        {"train_dataset/workflow_video_01.txt": "Frame\tPhase\n0\tTrocarPlacement\nx\tPreparation\n"},
        "workflow_video_01.txt:3: frame must be an integer",
    ),
    "cholect50": (
        {"labels/VID01.json": json.dumps(CT50)},
        [("preparation", 0, 2), ("carlot-triangle-dissection", 2, 4)],
        {"labels/VID01.json": json.dumps(CT50)[:-5]},
        "VID01.json:1: not valid JSON",
    ),
    "multibypass140": (
        {"labels/bern/labels_by70/BBP01.mp4.json": json.dumps(MBP)},
        [("preparation", 0, 50)],
        {"labels/bern/labels_by70/BBP01.mp4.json": json.dumps({"phases": [{"start": 5, "end": 1}]})},
        "phases[0]: needs start, end, label_name and label_id",
    ),
    "cataract-101": (
        {
            "annotations.csv": "VideoID;FrameNo;Phase\n1;10;1\n1;50;2\n",
            "videos.csv": "VideoID;Frames;FPS;Surgeon;Experience\n1;100;25;1;1\n",
            "phases.csv": "Phase;Meaning\n1;Incision\n2;Rhexis\n",
        },
        [("Incision", 10, 50), ("Rhexis", 50, 100)],
        {
            "annotations.csv": "VideoID;FrameNo;Phase\n1;10;1\n1;50;7\n",
            "videos.csv": "VideoID;Frames;FPS;Surgeon;Experience\n1;100;25;1;1\n",
            "phases.csv": "Phase;Meaning\n1;Incision\n2;Rhexis\n",
        },
        "annotations.csv:3: phase 7 is not in phases.csv",
    ),
    "jigsaws": (
        {"Suturing/transcriptions/Suturing_B001.txt": "80 219 G1 \r\n220 370 G5 \r\n"},
        [("G1", 80, 220), ("G5", 220, 371)],
        {"Suturing/transcriptions/Suturing_B001.txt": "80 219 G1 \r\n220 370 G77 \r\n"},
        "Suturing_B001.txt:2: gesture must be G1..G15",
    ),
    "psi-ava": (
        {
            **PSI_MAPS,
            "ann/annotations/train.csv": "CASE001,1,1,0,0,1,1,3,-1,-1,2,4,1\nCASE001,36,1,0,0,1,1,3,-1,-1,2,4,1\n",
        },
        [("PHASES1", 1, 71), ("STEPS4", 1, 71)],
        {**PSI_MAPS, "ann/annotations/train.csv": "CASE001,1,1,0,0,1,1,3,-1,-1,2,4\n"},
        "train.csv:1: 12 fields, expected 13",
    ),
    "cataract-1k": (
        {"case_0001/case_0001_annotations_phases.csv": C1K_HEADER + "1,Incision,30,90,1.0,3.0\n"},
        [("incision", 30, 90)],
        {"case_0001/case_0001_annotations_phases.csv": C1K_HEADER + "1,Incision,90,30,3.0,1.0\n"},
        "case_0001_annotations_phases.csv:2: interval ends before it starts",
    ),
    "autolaparo": (
        {"labels/label_01.txt": "Frame\tPhase\n0\t1\n1\t1\n2\t2\n"},
        [("1", 0, 2), ("2", 2, 3)],
        {"labels/label_01.txt": "Frame\tPhase\n0\t1\n1\t9\n"},
        "label_01.txt:3: label id 9 not one of",
    ),
    "sar-rarp50": (
        {"video_01/action_discrete.txt": "0,0\n6,0\n12,3\n"},
        [("0", 0, 12), ("3", 12, 18)],
        {"video_01/action_discrete.txt": "0,0\n6\n"},
        "action_discrete.txt:2: expected 'frame, label id'",
    ),
    "surgicalactions160": (
        {"01_abdominal_access/01_08.mp4": "", "02_injection/02_10.mp4": ""},
        [("abdominal_access", None, None), ("injection", None, None)],
        {"01_08.mp4": ""},
        "video is not inside a class folder",
    ),
    "lapgyn4": (
        {"Bleeding/Train/Rest/case_1_irrelevant_0.mp4": "", "Bleeding/Test/Bleeding/case_2_Bleeding_0.mp4": ""},
        [("Rest", None, None), ("Bleeding", None, None)],
        {"Bleeding/case_1.mp4": ""},
        "video is not inside a class folder",
    ),
    "colonoscopic": (
        {"Adenoma/WL(1).mp4": "", "Serrated/NBI(2).mp4": ""},
        [("Adenoma", None, None), ("Serrated", None, None)],
        {"WL(1).mp4": ""},
        "video is not inside a class folder",
    ),
    "hyper-kvasir": (
        {"labeled-videos/lower-gi-tract/colitis/a.avi": "", "videos/upper-z-line/b_1.avi": ""},
        [("lower-colitis", None, None), ("upper-z-line", None, None)],
        {"a.avi": ""},
        "video is not inside a class folder",
    ),
    "kvasir-capsule": (
        {
            "metadata.csv": "filename;video_id;frame_number;finding_category;finding_class\n"
            "a.jpg;v1;10;Anatomy;Pylorus\nb.jpg;v1;11;Anatomy;Pylorus\nc.jpg;v1;20;Anatomy;Pylorus\n"
        },
        [("Pylorus", 10, 12), ("Pylorus", 20, 21)],
        {"metadata.csv": KC_HEADER + "a.jpg;v1;ten;Anatomy;Pylorus\n"},
        "metadata.csv:2: frame_number must be an integer",
    ),
    "cat-21": (
        {
            "training/case_01.csv": "Frame,Phase\n0,not_initialized\n1,not_initialized\n2,Incision\n3,Incision\n",
            "validation/case_18.csv": "0,Incision\n1,Viscoelasticum\n",
        },
        [("not_initialized", 0, 2), ("Incision", 2, 4), ("Incision", 0, 1), ("Viscoelasticum", 1, 2)],
        {"training/case_01.csv": "0,not_initialized\n1,Phacoemulsification\n"},
        "case_01.csv:2: unknown phase 'Phacoemulsification'",
    ),
    "aixsuture": (
        {
            "OSATS.csv": OSATS_HEADER + "S1,TUTOR-LED,PRE,3,A,D94Z,2,14\nS1,TUTOR-LED,PRE,3,B,D94Z,2,15\n"
            "S1,TUTOR-LED,POST,3,A,Z49D,3,20\nS2,E-LEARNING,PRE,3,A,E04A,4,31\n",
            "video/D94Z.mp4": "",
        },
        [("beginner", None, None), ("intermediate", None, None), ("expert", None, None)],
        {"OSATS.csv": OSATS_HEADER + "S1,TUTOR-LED,PRE,3,A,D94Z,2,14\nS1,TUTOR-LED,PRE,3,B,D94Z,2,44\n"},
        "OSATS.csv:3: GLOBA_RATING_SCORE 44 outside the OSATS range 8-40",
    ),
    "ldpolypvideo": (
        {
            "Train/Annotations/7/1.txt": "0\n",
            "Train/Annotations/7/2.txt": "1\n10 20 110 120\n",
            "Train/Annotations/7/3.txt": "2\n10 20 110 120\n5 5 9 9\n",
            "Videos/0_3.avi": "",
            "Videos/1_4.avi": "",
        },
        [("no_polyps", 1, 2), ("polyps", 2, 4), ("no_polyps", None, None), ("polyps", None, None)],
        {"Test/Annotations/9/1.txt": "2\n10 20 110 120\n"},
        "1.txt:1: declares 2 polyp(s) but 1 box line(s) follow",
    ),
}


def test_every_manifest_adapter_exists_and_has_a_case():
    """Every adapter a benchmark source manifest names is registered and covered by a generated case here."""
    import yaml

    named = {yaml.safe_load(p.read_text()).get("adapter") for p in MANIFESTS.glob("*.yaml")} - {None}
    assert named <= set(ADAPTERS), sorted(named - set(ADAPTERS))
    assert named <= set(CASES), sorted(named - set(CASES))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_adapter_parses_its_real_sample(name):
    root = SAMPLES[name]
    if not root.exists():
        pytest.skip(f"real sample not found at {root}")
    parsed = ADAPTERS[name].parse(root)
    assert parsed.segments and parsed.videos
    assert all(s["video_id"].startswith(f"{name}/") for s in parsed.segments)
    assert all(s["end_frame"] is None or s["end_frame"] >= s["start_frame"] for s in parsed.segments)
    table = parsed.tables()["segments"]
    assert table.schema == SEGMENTS and table.num_rows == len(parsed.segments)


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_parses_a_generated_file(name, tmp_path):
    files, expected, _, _ = CASES[name]
    parsed = ADAPTERS[name].parse(write(tmp_path, files))
    got = sorted(
        (
            (s["label"], s["start_frame"], s["end_frame"])
            for s in parsed.segments
            if s["level"] != "skill" or name == "aixsuture"
        ),
        key=str,
    )
    assert got == sorted(expected, key=str)
    written = parsed.write(tmp_path / "out")
    assert all(p.is_file() for p in written)


def test_cat21_subset_and_video_file(tmp_path):
    parsed = ADAPTERS["cat-21"].parse(write(tmp_path, CASES["cat-21"][0]))
    got = {v["native_id"]: (v["subset"], v["video_file"], v["n_frames"]) for v in parsed.videos}
    assert got == {
        "case_01": ("training", "training/case_01.mp4", 4),
        "case_18": ("validation", "validation/case_18.mp4", 2),
    }
    assert len(parsed.frame_labels) == 6


def test_aixsuture_mean_over_raters_and_xlsx(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    for line in CASES["aixsuture"][0]["OSATS.csv"].splitlines():
        sheet.append([int(c) if c.isdigit() else c for c in line.split(",")])
    book.save(tmp_path / "OSATS.xlsx")
    parsed = ADAPTERS["aixsuture"].parse(tmp_path)
    # D94Z: raters 14 and 15 -> mean 14.5 -> 14 (round half to even) -> beginner
    got = {s["video_id"]: (s["label"], s["label_id"], s["text"]) for s in parsed.segments}
    assert got["aixsuture/D94Z"] == ("beginner", 0, "GRS 14.50 (2 raters)")
    assert got["aixsuture/E04A"][:2] == ("expert", 2)
    assert {v["native_id"]: v["student"] for v in parsed.videos} == {"D94Z": "S1", "Z49D": "S1", "E04A": "S2"}
    (tmp_path / "OSATS.xlsx").write_bytes(b"PK not a workbook")
    with pytest.raises(AnnotationError, match="OSATS.xlsx: not a readable .xlsx workbook"):
        ADAPTERS["aixsuture"].parse(tmp_path)


def test_ldpolypvideo_frames_and_whole_videos(tmp_path):
    parsed = ADAPTERS["ldpolypvideo"].parse(write(tmp_path, CASES["ldpolypvideo"][0]))
    whole = {s["video_id"]: (s["level"], s["label_id"], s["text"]) for s in parsed.segments if s["level"] == "video"}
    assert whole == {
        "ldpolypvideo/0_3": ("video", 0, "Videos/0_3.avi"),
        "ldpolypvideo/1_4": ("video", 1, "Videos/1_4.avi"),
    }
    assert [(f["frame"], f["label_id"]) for f in parsed.frame_labels.to_pylist()] == [(1, 0), (2, 1), (3, 1)]
    bad_box = write(tmp_path / "b", {"Train/Annotations/2/5.txt": "1\n10 20 5 120\n"})
    with pytest.raises(AnnotationError, match=r"5.txt:2: box '10 20 5 120' has max before min"):
        ADAPTERS["ldpolypvideo"].parse(bad_box)


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_rejects_a_malformed_file(name, tmp_path):
    _, _, bad_files, message = CASES[name]
    with pytest.raises(AnnotationError) as info:
        ADAPTERS[name].parse(write(tmp_path, bad_files))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_whole_column_reader_accepts_what_the_line_parser_did_and_names_the_right_line(tmp_path):
    """Messy but valid whitespace (BOM, CRLF, blank lines, runs of spaces, trailing tabs) parses like a clean file;
    an error after blank lines still names its physical line; empty trailing fields count as fields."""
    clean = write(tmp_path / "a", {"video01-phase.txt": "Frame\tPhase\n0\tPreparation\n1\t0\n2\tClippingCutting\n"})
    messy = write(
        tmp_path / "b",
        {
            "video01-phase.txt": "\ufeff\r\nFrame  Phase\r\n\r\n  0 \t Preparation\t\r\n1    0\r\n"
            "\r\n2\tClippingCutting \r\n"
        },
    )
    a, b = (ADAPTERS["cholec80"].parse(p) for p in (clean, messy))
    assert a.frame_labels.equals(b.frame_labels) and a.segments == b.segments
    bad_file = write(tmp_path / "c", {"video01-phase.txt": "Frame\tPhase\n\n0\tPreparation\n\n\n1\tLunch\n"})
    with pytest.raises(AnnotationError, match=r"video01-phase.txt:6: unknown phase 'Lunch'"):
        ADAPTERS["cholec80"].parse(bad_file)
    kc = write(tmp_path / "d", {"metadata.csv": KC_HEADER.strip() + ";x1;y1\na.jpg;v1;10;Anatomy;Pylorus;;\n"})
    assert ADAPTERS["kvasir-capsule"].parse(kc).frame_labels.column("frame").to_pylist() == [10]
