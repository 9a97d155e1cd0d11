"""A small OpenSurgery-style hierarchy from generated videos: 6 clips (ffmpeg lavfi test patterns, 160x120, 10 fps,
6-10 s), 3 surgery types, operations with texts and frame captions; imported, split and sharded.

Layout under ``out``: ``media/*.mp4``, ``annotations/opensurgery.jsonl`` (the documented ingestion format), then the
build dir itself: ``tables/``, ``catalog.duckdb``, ``shards/{video,operation,frame}/{train,test}/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import ffmpeg

# (native id, lavfi source, seconds, surgery type)
DEMO_VIDEOS = (
    ("os-001", "testsrc2", 8, "thyroidectomy"),
    ("os-002", "smptebars", 7, "thyroidectomy"),
    ("os-003", "testsrc", 9, "inguinal hernia repair"),
    ("os-004", "rgbtestsrc", 6, "inguinal hernia repair"),
    ("os-005", "pal100bars", 10, "appendectomy"),
    ("os-006", "yuvtestsrc", 8, "appendectomy"),
)

# per surgery type: (label, operation text, frame caption) in order
OPERATIONS = {
    "thyroidectomy": (
        ("incision", "Transverse collar incision two fingers above the sternal notch.", "skin incision in the neck"),
        ("flap_elevation", "Subplatysmal flaps are raised superiorly and inferiorly.", "platysma flap raised"),
        (
            "lobectomy",
            "The thyroid lobe is mobilised and the recurrent laryngeal nerve is preserved.",
            "thyroid lobe retracted medially",
        ),
        ("closure", "Strap muscles and skin are closed in layers.", "subcuticular skin closure"),
    ),
    "inguinal hernia repair": (
        ("incision", "Oblique groin incision over the inguinal canal.", "groin incision"),
        ("sac_dissection", "The hernia sac is dissected free from the cord structures.", "hernia sac isolated"),
        ("mesh_placement", "A polypropylene mesh is fixed to the inguinal ligament.", "mesh sutured in place"),
        ("closure", "External oblique aponeurosis and skin are closed.", "aponeurosis closed"),
    ),
    "appendectomy": (
        ("incision", "Gridiron incision at McBurney's point.", "muscle-splitting incision"),
        ("mobilisation", "The appendix is delivered and its mesoappendix divided.", "appendix delivered"),
        ("ligation", "The appendix base is ligated and the appendix removed.", "appendix base ligated"),
    ),
}


def _make_video(path: Path, pattern: str, seconds: int) -> None:
    src = ffmpeg.input(f"{pattern}=size=160x120:rate=10:duration={seconds}", f="lavfi")
    opts = {
        "vcodec": "libx264",
        "pix_fmt": "yuv420p",
        "crf": 30,
        "preset": "veryfast",
        "map_metadata": -1,
        "flags:v": "+bitexact",
        "fflags": "+bitexact",
    }
    src.output(str(path), **opts).global_args("-nostdin", "-loglevel", "error", "-y", "-threads", "1").run(
        capture_stdout=True, capture_stderr=True
    )


def demo_records(out: Path) -> list[dict]:
    """The demo's records in the documented JSON format (media paths relative to ``annotations/``)."""
    records = []
    for native, pattern, seconds, stype in DEMO_VIDEOS:
        ops = OPERATIONS[stype]
        step = seconds / len(ops)
        operations, frames = [], []
        for i, (label, text, caption) in enumerate(ops):
            start, end = round(i * step, 2), round((i + 1) * step - 0.2, 2)
            operations.append({"start_s": start, "end_s": end, "label": label, "text": text})
            frames.append({"t_s": round(start + step / 3, 2), "label": label, "caption": caption})
            frames.append({"t_s": round(start + 2 * step / 3, 2), "label": label, "caption": f"{caption}, later"})
        records.append(
            {
                "video_id": f"opensurgery/{native}",
                "surgery_type": stype,
                "title": f"Open {stype} ({pattern} demo)",
                "description": f"A demonstration {stype} in {len(ops)} operations (generated {pattern} video).",
                "duration_s": float(seconds),
                "url": f"https://example.org/opensurgery/{native}",
                "license": "CC0-1.0",
                "source": "opensurgery-demo",
                "path": f"../media/{native}.mp4",
                "operations": operations,
                "frames": frames,
            }
        )
    return records


def make_demo_hierarchy(out: Path, *, test_fraction: float = 0.3, seed: int = 0) -> Path:
    """Generate, import, split and shard the demo hierarchy under ``out``; returns ``out`` (the build dir)."""
    from builders.hierarchy_shards import ShardSettings, write_hierarchy_shards
    from corpus.hierarchy.build import import_hierarchy, split_hierarchy

    out = Path(out)
    (out / "media").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for native, pattern, seconds, _ in DEMO_VIDEOS:
        video = out / "media" / f"{native}.mp4"
        if not video.exists():
            tmp = video.with_name(f".{video.stem}.tmp.mp4")
            _make_video(tmp, pattern, seconds)
            tmp.replace(video)
    jsonl = out / "annotations" / "opensurgery.jsonl"
    jsonl.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in demo_records(out)))
    import_hierarchy(out, jsonl)
    split_hierarchy(out, test_fraction=test_fraction, seed=seed)
    write_hierarchy_shards(out, settings=ShardSettings(size=None, n_frames=8, seed=seed))
    return out
