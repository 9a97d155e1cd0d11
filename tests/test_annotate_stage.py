"""annotate as a resumable stage: parts per source, merged in video order; error rows; skip and re-parse."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from builders.executors.base import marker_path
from builders.executors.local import LocalExecutor
from builders.pipeline import _annotate
from builders.stages.annotate import AnnotateStage, annotate_units
from corpus.manifest import CorpusManifest
from corpus.parts import part_relpath
from corpus.schemas import table_path


def _manifest(tmp_path: Path) -> CorpusManifest:
    """Two annotated sources whose names sort differently with and without the ``/`` (``cam`` < ``cam-b``, but
    ``cam-b/`` < ``cam/``), and one without annotations."""
    phases = tmp_path / "c80"
    phases.mkdir()
    for i, frames in ((1, 5), (2, 3)):
        rows = "".join(f"{f}\t{'Preparation' if f < 2 else 'ClippingCutting'}\n" for f in range(frames))
        (phases / f"video{i:02d}-phase.txt").write_text("Frame\tPhase\n" + rows)
    (phases / "video01-tool.txt").write_text(
        "Frame Grasper Bipolar Hook Scissors Clipper Irrigator SpecimenBag\n0 1 0 1 0 0 0 0\n1 0 0 0 0 0 0 1\n"
    )
    trans = tmp_path / "jig" / "transcriptions"
    trans.mkdir(parents=True)
    (trans / "T_B001.txt").write_text("1 10 G1 \r\n11 20 G3 \r\n")
    source = {"domain": "laparoscopy", "root": str(tmp_path), "videos": {"glob": "*.none"}}
    return CorpusManifest.model_validate(
        {
            "name": "t",
            "sources": [
                {**source, "name": "cam", "annotations": {"adapter": "cholec80", "path": str(phases)}},
                {**source, "name": "cam-b", "annotations": {"adapter": "jigsaws", "path": str(tmp_path / "jig")}},
                {**source, "name": "plain"},
            ],
        }
    )


PLAN = [
    {"source": "cam", "native_id": n, "video_id": f"cam/{n}", "uri": f"file:///{n}.mp4"}
    for n in ("z/video02", "a/video01", "video03")
] + [
    {"source": "cam-b", "native_id": n, "video_id": f"cam-b/{n}", "uri": f"file:///{n}.avi"}
    for n in ("T_B001_capture2", "T_B001_capture1")
]


def _rows(out: Path, name: str) -> list[dict]:
    return pq.read_table(table_path(out, name)).to_pylist()


def test_parts_merge_in_video_order_with_camera_views_and_missing_annotations(tmp_path):
    m, out = _manifest(tmp_path), tmp_path / "out"
    with LocalExecutor(1, show_progress=False) as ex:
        errors = _annotate(m, PLAN, out, ex)
    assert [(e.stage, e.video_id, e.kind) for e in errors] == [("annotate", "cam/video03", "missing_annotation")]
    labels = _rows(out, "frame_labels")
    ids = [r["video_id"] for r in labels]
    assert ids == sorted(ids) and {r["source"] for r in labels} == {"cam"}  # jigsaws has no frame labels
    keys = [(r["video_id"], r["level"], r["frame"]) for r in labels]
    assert keys == sorted(keys)
    # video01: 5 phase rows, then tools in file order within a frame (Grasper before Hook; SpecimenBag)
    v1 = [(r["level"], r["frame"], r["label"], r["annotation_id"]) for r in labels if r["video_id"] == "cam/a/video01"]
    phases = ["Preparation"] * 2 + ["ClippingCutting"] * 3
    assert v1[:5] == [("phase", f, phases[f], "cholec80/video01") for f in range(5)]
    assert v1[5:] == [
        ("tool", 0, "Grasper", "cholec80/video01"),
        ("tool", 0, "Hook", "cholec80/video01"),
        ("tool", 1, "SpecimenBag", "cholec80/video01"),
    ]
    assert labels[0]["time_s"] == 0.0 and labels[1]["time_s"] == 1 / 25
    segs = _rows(out, "segments")
    assert [s["video_id"] for s in segs] == sorted(s["video_id"] for s in segs)
    # ``cam-b/`` sorts before ``cam/``: the parts are merged in that order; both camera views get the gestures
    assert [(s["video_id"], s["label"], s["start_frame"], s["end_frame"]) for s in segs[:4]] == [
        ("cam-b/T_B001_capture1", "G1", 1, 11),
        ("cam-b/T_B001_capture1", "G3", 11, 21),
        ("cam-b/T_B001_capture2", "G1", 1, 11),
        ("cam-b/T_B001_capture2", "G3", 11, 21),
    ]
    assert {(s["video_id"], s["source"]) for s in segs[4:]} == {("cam/a/video01", "cam"), ("cam/z/video02", "cam")}


def test_second_run_skips_and_a_touched_file_reparses_only_its_source(tmp_path):
    m, out = _manifest(tmp_path), tmp_path / "out"
    units = annotate_units(m.sources, PLAN)
    assert [u["source"] for u in units] == ["cam", "cam-b"]
    with LocalExecutor(1, show_progress=False) as ex:
        first = ex.run(str(out), AnnotateStage(str(out)), units)
        markers = {u["source"]: marker_path(out, "annotate", u["source"]) for u in units}
        stamps = {s: p.stat().st_mtime_ns for s, p in markers.items()}
        again = ex.run(str(out), AnnotateStage(str(out)), units)
        assert (first.ran, again.ran, again.skipped) == (2, 0, 2)
        assert again.parts == first.parts and len(first.parts["frame_labels"]) == 2
        assert [e.to_dict() for e in again.errors] == [e.to_dict() for e in first.errors]
        assert {s: p.stat().st_mtime_ns for s, p in markers.items()} == stamps
        cam_part = out / part_relpath("annotate", "frame_labels", "cam")
        assert str(cam_part.relative_to(out)) in first.parts["frame_labels"]
        n_before = pq.read_metadata(cam_part).num_rows

        phase = tmp_path / "c80" / "video02-phase.txt"
        phase.write_text(phase.read_text() + "3\tClippingCutting\n")
        os.utime(phase, ns=(phase.stat().st_atime_ns, phase.stat().st_mtime_ns + 10**9))
        third = ex.run(str(out), AnnotateStage(str(out)), units)
        assert (third.ran, third.skipped) == (1, 1)
        assert markers["cam-b"].stat().st_mtime_ns == stamps["cam-b"]
        assert markers["cam"].stat().st_mtime_ns != stamps["cam"]
        assert pq.read_metadata(cam_part).num_rows == n_before + 1  # the touched file was parsed again

        units[0]["videos"] = units[0]["videos"][:2]  # a planned video left the source: its fingerprint changes
        assert ex.run(str(out), AnnotateStage(str(out)), units).ran == 1
    assert not list((out / "_parts" / "annotate").glob(".spool-*")), "spool folders are removed"


@pytest.mark.parametrize(
    ("adapter", "text", "where"),
    [
        ("jigsaws", "1 10 G1\nten 20 G3\n", "T_B001.txt:2"),
        ("nope", None, "unknown annotation adapter 'nope'"),
    ],
)
def test_malformed_or_unknown_annotations_become_one_error_row(tmp_path, adapter, text, where):
    m, out = _manifest(tmp_path), tmp_path / "out"
    stage = AnnotateStage(str(out))
    [_, unit] = annotate_units(m.sources, PLAN)
    good = stage.process(unit)
    assert all((out / f).is_file() for f in good.files) and not good.errors
    if text is not None:
        (tmp_path / "jig" / "transcriptions" / "T_B001.txt").write_text(text)
    got = stage.process({**unit, "adapter": adapter})
    assert [e.kind for e in got.errors] == ["annotation"] and where in got.errors[0].message
    assert got.parts == {} and not any((out / f).exists() for f in good.files)  # no stale part of the old input
