"""Source adapters: each parses its real sample, a generated file in the documented format, and rejects bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.annotations import SEGMENTS
from corpus.errors import AnnotationError
from corpus.sources import ADAPTERS

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
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
}


def test_every_adapter_has_a_case():
    assert set(CASES) == set(ADAPTERS)


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
    got = sorted((s["label"], s["start_frame"], s["end_frame"]) for s in parsed.segments if s["level"] != "skill")
    assert got == sorted(expected)
    written = parsed.write(tmp_path / "out")
    assert all(p.is_file() for p in written)


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_rejects_a_malformed_file(name, tmp_path):
    _, _, bad_files, message = CASES[name]
    with pytest.raises(AnnotationError) as info:
        ADAPTERS[name].parse(write(tmp_path, bad_files))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)
