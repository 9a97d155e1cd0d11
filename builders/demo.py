"""``surgcorpus demo``: generate a small multi-source corpus with ffmpeg lavfi, build it, print where to look.

Three source layouts: a flat laparoscopy folder of mp4s, an endoscopy tree of mkv files with a circular scope mask,
and a robotic JIGSAWS-like layout of AVI trials with two camera views each (kept in one split by a group
pattern). The generated data hold a re-encoded, resized, brightened near duplicate, a trimmed copy, an exact copy,
a corrupt file and a truncated file whose header claims more frames than it holds. When ``../shared/data/real``
exists, its real surgical clips are added as three more sources. No network is needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from builders.tools import require_binary
from corpus.testing import SCOPE_MASK

# (name, lavfi source) — each generator gives visually distinct, slowly changing content
_PATTERNS = {
    "case_01": "mandelbrot=size=320x240:rate=25:start_scale=3:end_scale=0.6",
    "case_02": "life=size=320x240:rate=25:seed=7:mold=10:life_color=#d04040:death_color=#401010",
    "case_03": "cellauto=size=320x240:rate=25:rule=18:seed=3",
    "case_04": "testsrc2=size=320x240:rate=25",
}
_ENDO = {"patient01/visit1": "smptehdbars=size=320x240:rate=25", "patient02/visit1": "rgbtestsrc=size=320x240:rate=25"}
_ROBOT_TRIALS = {"Knot_B001": "yuvtestsrc=size=320x240:rate=30", "Knot_C002": "pal100bars=size=320x240:rate=30"}
SECONDS = 8.0

REAL_SOURCES = [
    (
        "cholect50-real",
        "laparoscopy",
        "CC BY-NC-SA 4.0",
        "Moshintha20__CholecT50-Cholec80-Task-Phase-Groupings",
        "dataset/**/*.mp4",
        None,
    ),
    (
        "lightdiff-real",
        "laparoscopy",
        "MIT",
        "YimingRen111__LighTDiff-surgical-lowlight",
        "dataset/video/**/*.mp4",
        None,
    ),
    (
        "jigsaws-real",
        "robotic",
        "JIGSAWS academic research release",
        "anidhi__homework3_JIGSAWS",
        "JIGSAW/Suturing/video/*.avi",
        r"^(.*)_capture\d$",
    ),
]


def _ffmpeg(*args: str) -> None:
    cmd = [require_binary("ffmpeg"), "-nostdin", "-v", "error", "-y", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"demo data generation failed: {' '.join(cmd)}\n{res.stderr}")


def _lavfi(src: str, out: Path, seconds: float = SECONDS, vf: str | None = None, codec: tuple[str, ...] = ()) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", src, "-t", f"{seconds}"]
    if vf:
        args += ["-vf", vf]
    _ffmpeg(*args, *(codec or ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")), str(out))


def generate_demo_data(data: Path) -> dict[str, Path]:
    """Write the synthetic sources under ``data``; returns source name -> root. Idempotent (skips existing)."""
    lap, endo, robot, web = data / "lap-sim", data / "endo-sim", data / "robot-sim", data / "web-mirror"
    marker = data / ".complete"
    roots = {"lap-sim": lap, "endo-sim": endo, "robot-sim": robot, "web-mirror": web}
    if marker.exists():
        return roots
    shutil.rmtree(data, ignore_errors=True)
    for name, src in _PATTERNS.items():
        _lavfi(src, lap / f"{name}.mp4")
    circle = SCOPE_MASK
    for name, src in _ENDO.items():
        _lavfi(src, endo / f"{name}.mkv", vf=circle)
    for trial, src in _ROBOT_TRIALS.items():
        for view, vf in (
            ("capture1", "crop=300:240:0:0,scale=320:240"),
            ("capture2", "crop=300:240:20:0,scale=320:240"),
        ):
            _lavfi(src, robot / f"{trial}_{view}.avi", vf=vf, codec=("-c:v", "mpeg4", "-q:v", "4"))
    # a web mirror of the laparoscopy source: re-encoded+resized+brighter, trimmed, byte-identical, broken files
    web.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        "-i",
        str(lap / "case_01.mp4"),
        "-vf",
        "scale=480:360,eq=brightness=0.06:contrast=1.1",
        "-c:v",
        "libx264",
        "-crf",
        "30",
        "-preset",
        "veryfast",
        str(web / "case_01_reupload.mp4"),
    )
    _ffmpeg(
        "-ss",
        "2",
        "-i",
        str(lap / "case_02.mp4"),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        str(web / "case_02_trimmed.mp4"),
    )
    shutil.copyfile(lap / "case_03.mp4", web / "case_03_copy.mp4")
    (web / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    # header claims all frames, data stops half way (moov first, so the index survives the cut)
    _ffmpeg("-i", str(lap / "case_04.mp4"), "-c", "copy", "-movflags", "+faststart", str(web / "_full.mp4"))
    full = (web / "_full.mp4").read_bytes()
    (web / "truncated.mp4").write_bytes(full[: len(full) // 2])
    (web / "_full.mp4").unlink()
    marker.write_text("ok\n")
    return roots


def demo_manifest(out: Path, roots: dict[str, Path], real_root: Path | None) -> dict:
    """The demo corpus manifest (written to ``<out>/demo.yaml`` so it can be rebuilt with `surgcorpus build`)."""
    sources = [
        {
            "name": "lap-sim",
            "domain": "laparoscopy",
            "license": "CC0 (generated)",
            "root": str(roots["lap-sim"]),
            "videos": {"glob": "*.mp4"},
        },
        {
            "name": "endo-sim",
            "domain": "endoscopy",
            "license": "CC0 (generated)",
            "root": str(roots["endo-sim"]),
            "mask": "circle",
            "videos": {"glob": "**/*.mkv"},
        },
        {
            "name": "robot-sim",
            "domain": "robotic",
            "license": "CC0 (generated)",
            "root": str(roots["robot-sim"]),
            "videos": {"glob": "*.avi"},
            "group_pattern": r"^(.*)_capture\d$",
        },
        {
            "name": "web-mirror",
            "domain": "laparoscopy",
            "license": "CC0 (generated)",
            "access": "local",
            "root": str(roots["web-mirror"]),
            "videos": {"glob": "*.mp4"},
        },
    ]
    if real_root is not None:
        for name, domain, lic, folder, glob, pattern in REAL_SOURCES:
            if (real_root / folder).exists():
                src = {
                    "name": name,
                    "domain": domain,
                    "license": lic,
                    "root": str(real_root / folder),
                    "videos": {"glob": glob},
                }
                if pattern:
                    src["group_pattern"] = pattern
                sources.append(src)
    return {
        "name": "demo",
        "description": "surgcorpus demo: generated sources plus real clips from ../shared/data/real when present",
        "sources": sources,
        "clips": {"fps": 8, "size": 112, "seconds": 2, "format": "mp4"},
        "dedup": {"video_threshold": 10, "clip_threshold": 8},
        "split": {"val": 0.15, "test": 0.15, "seed": 4},  # a seed that fills all three splits of this tiny demo
        "shard": {"max_samples": 64, "max_bytes": 64 * 1024 * 1024},
    }


def default_real_root() -> Path | None:
    """``../shared/data/real`` beside the repository, when present."""
    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
    return here if here.is_dir() else None


def run_demo(out: Path, workers: int | None = None, include_real: bool = True) -> Path:
    """Generate the demo data, write the manifest, build, print the summary; returns the manifest path."""
    from builders.pipeline import build, print_summary
    from corpus.manifest import load_manifest
    from corpus.progress import console
    from corpus.report import write_report

    out = Path(out).resolve()
    console.print(f"[bold]surgcorpus demo[/] → {out}")
    roots = generate_demo_data(out / "data")
    manifest_path = out / "demo.yaml"
    manifest_path.write_text(
        yaml.safe_dump(demo_manifest(out, roots, default_real_root() if include_real else None), sort_keys=False)
    )
    summary = build(load_manifest(manifest_path), out / "corpus", workers=workers, manifest_path=manifest_path)
    from builders.hierarchy_demo import make_demo_hierarchy

    print_summary(summary, report=write_report(out / "corpus"))
    hierarchy = make_demo_hierarchy(out / "opensurgery")
    console.print(
        f"opensurgery: {hierarchy} (surgcorpus hierarchy --help)\n"
        f"manifest: {manifest_path} (rebuild: surgcorpus build {manifest_path} --out {out / 'corpus'})"
    )
    return manifest_path
