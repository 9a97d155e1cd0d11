"""Hierarchy importers and validation: CSV, JSON/JSONL records, ActivityNet, narration CSVs, real MultiBypass140."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus.catalog import query_dicts as query
from corpus.errors import AnnotationError
from corpus.hierarchy.build import import_hierarchy, load_hierarchy
from corpus.hierarchy.importers import (
    read_activitynet,
    read_csvs,
    read_multibypass,
    read_narrations,
    read_records,
    sniff_format,
)
from corpus.hierarchy.models import parse_time
from corpus.hierarchy.validate import Rules, validate
from corpus.schemas import read_rows

SHARED = Path(__file__).resolve().parents[2] / "shared"
MBP = SHARED / "data" / "real" / "CAMMA-public__MultiBypass140" / "labels" / "bern" / "labels_by70"

VIDEOS_CSV = """video_id,title,url,duration_s,surgery_type,description
os/a,Thyroid A,https://x/a,100,thyroidectomy,Left lobectomy
os/b,Hernia B,https://x/b,01:00,hernia repair,Lichtenstein repair
"""
OPS_CSV = """video_id,start_s,end_s,label,text
os/a,0,30,incision,skin incision
os/a,30,90,dissection,dissect the lobe
os/a,95,92,closure,end before start
os/b,0,20,incision,groin incision
os/b,20,45,mesh,mesh placement
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parse_time_accepts_seconds_and_clock_times():
    assert parse_time(12) == 12.0
    assert parse_time("7.5") == 7.5
    assert parse_time("01:02") == 62.0
    assert parse_time("1:00:01.5") == 3601.5
    with pytest.raises(ValueError):
        parse_time("soon")


def test_csv_bad_row_becomes_error_row_and_the_rest_imports(tmp_path):
    v = _write(tmp_path / "videos.csv", VIDEOS_CSV)
    o = _write(tmp_path / "operations.csv", OPS_CSV)
    report = import_hierarchy(tmp_path / "build", v, o)
    assert (report.videos, report.operations, report.frames, report.errors) == (2, 4, 0, 1)
    [err] = read_rows(tmp_path / "build", "errors")
    assert err["stage"] == "hierarchy" and err["kind"] == "end_before_start"
    assert err["video_id"] == "os/a" and err["uri"] == str(o)
    assert f"{o}:4" in err["message"] and "video os/a" in err["message"] and "95" in err["message"]
    h = load_hierarchy(tmp_path / "build")
    assert [(x["video_id"], x["index"], x["label"]) for x in h.operations] == [
        ("os/a", 0, "incision"),
        ("os/a", 1, "dissection"),
        ("os/b", 0, "incision"),
        ("os/b", 1, "mesh"),
    ]
    assert {x["video_id"]: x["duration_s"] for x in h.videos} == {"os/a": 100.0, "os/b": 60.0}
    assert [x["key"] for x in h.operations][:2] == ["os__a__op-000", "os__a__op-001"]


def test_validation_kinds_name_video_and_row(tmp_path):
    v = _write(tmp_path / "videos.csv", VIDEOS_CSV)
    o = _write(
        tmp_path / "operations.csv",
        OPS_CSV + "os/b,40,50,closure,overlaps mesh\nos/b,50,70,closure,past the "
        "end\nos/z,0,1,incision,no such video\nos/a,90,99,suturing,not in vocabulary\n",
    )
    f = _write(
        tmp_path / "frames.csv",
        "video_id,t_s,label,caption\nos/a,10,incision,knife\nos/a,500,,after end\n"
        "os/a,10,,same time again\nos/b,25,mesh,mesh\n",
    )
    h = validate(read_csvs(v, o, f), Rules(labels={"incision", "dissection", "closure", "mesh"}))
    kinds = sorted((e["kind"], e["message"].split(": ", 1)[0]) for e in h.errors)
    assert kinds == [
        ("duplicate_frame", f"{f}:4"),
        ("end_before_start", f"{o}:4"),
        ("outside_video", f"{f}:3"),
        ("outside_video", f"{o}:8"),
        ("overlap", f"{o}:7"),
        ("unknown_label", f"{o}:10"),
        ("unknown_video", f"{o}:9"),
    ]
    assert len(h.operations) == 4 and len(h.frames) == 2
    assert {(fr["video_id"], fr["op_index"]) for fr in h.frames.to_pylist()} == {("os/a", 0), ("os/b", 1)}


def test_missing_input_file_is_a_named_error(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.csv: file not found"):
        import_hierarchy(tmp_path / "b", tmp_path / "nope.csv")


def test_csv_missing_column_names_the_file(tmp_path):
    bad = _write(tmp_path / "ops.csv", "video_id,start_s,label\nos/a,0,x\n")
    with pytest.raises(AnnotationError, match=r"ops\.csv: missing column\(s\) end_s"):
        read_csvs(operations=bad)


def test_jsonl_records_bad_operation_and_bad_line(tmp_path):
    good = {
        "video_id": "os/v1",
        "surgery_type": "appendectomy",
        "duration_s": 30,
        "path": "media/v1.mp4",
        "operations": [
            {"start_s": 0, "end_s": 10, "label": "incision", "text": "cut"},
            {"start_s": "abc", "end_s": 20, "label": "ligation"},
            {"start_s": "00:10", "end_s": "00:25", "label": "ligation", "text": "ligate"},
        ],
        "frames": [{"t_s": 5, "caption": "knife on skin"}],
    }
    typo = {"video_id": "os/v2", "operation": []}
    path = _write(tmp_path / "h.jsonl", json.dumps(good) + "\n{not json\n" + json.dumps(typo) + "\n")
    h = validate(read_records(path))
    assert [v["video_id"] for v in h.videos] == ["os/v1"]
    assert h.videos[0]["path"] == str(tmp_path / "media" / "v1.mp4")
    assert [(o["start_s"], o["end_s"], o["label"]) for o in h.operations] == [
        (0, 10, "incision"),
        (10, 25, "ligation"),
    ]
    assert h.frames.to_pylist()[0]["op_index"] == 0
    by_kind = {e["kind"]: e["message"] for e in h.errors}
    assert sorted(by_kind) == ["bad_record", "bad_row"]
    assert f"{path}:1: video os/v1: operations[1]" in by_kind["bad_row"]
    assert [e for e in h.errors if e["message"].startswith(f"{path}:2")], "the broken JSON line is reported"
    assert any(f"{path}:3" in e["message"] and "operation" in e["message"] for e in h.errors)
    assert sniff_format(path) == "records"


def test_activitynet_v13_and_captions(tmp_path):
    v13 = {
        "version": "1.3",
        "database": {
            "vidA": {
                "subset": "training",
                "duration": 60.0,
                "url": "u",
                "annotations": [
                    {"segment": [1.0, 10.0], "label": "incision"},
                    {"segment": [12.0, 30.5], "label": "closure"},
                ],
            }
        },
    }
    p = _write(tmp_path / "anet.json", json.dumps(v13))
    assert sniff_format(p) == "activitynet"
    h = validate(read_activitynet(p, source="os", surgery_type="hernia repair"))
    assert [(o["video_id"], o["start_s"], o["end_s"], o["label"]) for o in h.operations] == [
        ("os/vidA", 1.0, 10.0, "incision"),
        ("os/vidA", 12.0, 30.5, "closure"),
    ]
    assert h.videos[0]["surgery_type"] == "hernia repair" and not h.errors

    caps = {
        "v_1": {
            "duration": 20.0,
            "timestamps": [[0, 8], [5, 12], [12, 25]],
            "sentences": ["a nurse preps", "incision made", "way past the end"],
        }
    }
    p = _write(tmp_path / "captions.json", json.dumps(caps))
    assert sniff_format(p) == "activitynet"
    strict = validate(read_activitynet(p))
    assert sorted(e["kind"] for e in strict.errors) == ["outside_video", "overlap"]
    loose = validate(read_activitynet(p), Rules(allow_overlap=True))
    assert [o["text"] for o in loose.operations] == ["a nurse preps", "incision made"]


def test_narration_csvs_become_frame_captions(tmp_path):
    folder = tmp_path / "narr"
    folder.mkdir()
    _write(folder / "case01.csv", 'start,end,text\n0,4,"now we open, carefully"\n00:05,00:09,suture\nx,1,bad\n')
    _write(folder / "case02.csv", "1.0,3.0,retract the lobe\n")
    h = validate(read_narrations(folder, source="surgvlp"))
    assert sorted(v["video_id"] for v in h.videos) == ["surgvlp/case01", "surgvlp/case02"]
    assert [(f["video_id"], f["t_s"], f["caption"]) for f in h.frames.to_pylist()] == [
        ("surgvlp/case01", 2.0, "now we open, carefully"),
        ("surgvlp/case01", 7.0, "suture"),
        ("surgvlp/case02", 2.0, "retract the lobe"),
    ]
    [err] = h.errors
    assert err["kind"] == "bad_row" and f"{folder / 'case01.csv'}:4" in err["message"]
    as_ops = validate(read_narrations(folder, source="surgvlp", level="operations"))
    assert len(as_ops.operations) == 3


@pytest.mark.skipif(not MBP.is_dir(), reason="real MultiBypass140 labels not found beside the repo (../shared)")
def test_multibypass_phases_and_steps_real_files(tmp_path):
    raw = json.loads((MBP / "BBP01.mp4.json").read_text())
    events = {"out_of_body", "severe_index"}
    phases = sorted((p for p in raw["phases"] if p["label_name"] not in events), key=lambda p: p["start"])
    h = validate(read_multibypass(MBP / "BBP01.mp4.json"))
    assert not h.errors
    assert [v["video_id"] for v in h.videos] == ["multibypass140/bern/BBP01"]
    assert [(o["start_s"], o["end_s"], o["label"]) for o in h.operations] == [
        (p["start"] / 1000, p["end"] / 1000, p["label_name"]) for p in phases
    ]
    assert [o["index"] for o in h.operations] == list(range(len(phases)))
    n_events = sum(p["label_name"] in events for p in raw["phases"])
    assert len(h.frames) == len(raw["steps"]) + n_events
    step = min(raw["steps"], key=lambda s: s["start"])
    first = next(f for f in h.frames.to_pylist() if f["label"] == step["label_name"])
    assert first["t_s"] == round((step["start"] + step["end"]) / 2000, 3)
    assert first["caption"].startswith(step["label_name"].split("_", 1)[1].replace("_", " "))
    assert "during" in first["caption"]

    report = import_hierarchy(tmp_path / "b", MBP)
    assert report.videos == len(list(MBP.glob("*.json"))) and report.errors == 0
    rows = query(
        tmp_path / "b", "SELECT label, count(*) n FROM operation_details WHERE label = 'preparation' GROUP BY label"
    )
    assert rows == [{"label": "preparation", "n": report.videos}]


def test_operation_details_view_answers_the_thyroidectomy_question(tmp_path):
    v = _write(tmp_path / "videos.csv", VIDEOS_CSV)
    o = _write(tmp_path / "operations.csv", OPS_CSV)
    f = _write(
        tmp_path / "frames.csv",
        "video_id,t_s,label,caption\nos/a,40,,lobe retracted\nos/a,50,,nerve seen\nos/b,30,,mesh laid\n",
    )
    import_hierarchy(tmp_path / "b", v, o, f)
    rows = query(
        tmp_path / "b",
        'SELECT video_id, "index", duration_s, captions FROM operation_details '
        "WHERE surgery_type = 'thyroidectomy' AND duration_s > 45",
    )
    assert rows == [{"video_id": "os/a", "index": 1, "duration_s": 60.0, "captions": ["lobe retracted", "nerve seen"]}]
    frames = query(tmp_path / "b", "SELECT key, operation_label FROM frame_details ORDER BY key")
    assert frames[-1] == {"key": "os__b__t-000030000", "operation_label": "mesh"}


def test_documented_example_imports(tmp_path):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "hierarchy.md").read_text()
    example = doc.split("```json\n", 1)[1].split("```", 1)[0]
    (tmp_path / "ann").mkdir()
    path = _write(tmp_path / "ann" / "example.json", example)
    report = import_hierarchy(tmp_path / "b", path)
    assert (report.videos, report.operations, report.frames, report.errors) == (1, 4, 2, 0)
    h = load_hierarchy(tmp_path / "b")
    assert h.videos[0]["path"] == str(tmp_path / "videos" / "yt-3kq9Zx1.mp4")
    assert h.videos[0]["group_id"] == "patient-0042"
    assert [o["end_s"] for o in h.operations][:2] == [95.5, 370.0]
    assert [f["op_index"] for f in h.frames.to_pylist()] == [0, 2]
