"""Shard tars written with the standard library are byte for byte webdataset's ``TarWriter`` output and read back
through ``webdataset.WebDataset``; writing them does not import webdataset (nor torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import webdataset as wds

from builders.stages.shard import TAR_MODE, TAR_MTIME, TAR_OWNER, Sample, write_shard


def _samples(real, tmp_path) -> list[Sample]:
    videos = sorted((real / "YimingRen111__LighTDiff-surgical-lowlight").rglob("*.mp4"))[:2]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, data in enumerate((b"\xff\xd8first", b"\xff\xd8second" * 700)):  # members of two tar block counts
        (frames / f"{i:03d}.jpg").write_bytes(data)
    out = [
        Sample(f"src__v{i}__000004000", (("mp4", str(v)), ("json", json.dumps({"i": i}).encode())), "f")
        for i, v in enumerate(videos)
    ]
    jpgs = tuple((f"{p.stem}.jpg", str(p)) for p in sorted(frames.glob("*.jpg")))
    out.append(Sample("src__frames__000000000", (*jpgs, ("json", b"{}")), "f"))
    return out


def test_tar_bytes_match_webdataset_tarwriter(real, tmp_path):
    samples = _samples(real, tmp_path)
    index = write_shard(tmp_path / "ours.tar", samples)
    with open(tmp_path / "wds.tar", "wb") as fh:
        writer = wds.TarWriter(fh, user=TAR_OWNER, group=TAR_OWNER, mode=TAR_MODE, mtime=TAR_MTIME, encoder=False)
        for s in samples:
            obj = {"__key__": s.key}
            for ext, value in s.members:
                obj[ext] = value if isinstance(value, bytes) else open(value, "rb").read()
            writer.write(obj)
        writer.close()
    ours = (tmp_path / "ours.tar").read_bytes()
    assert ours == (tmp_path / "wds.tar").read_bytes()
    read = list(wds.WebDataset(str(tmp_path / "ours.tar"), shardshuffle=False))
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    for r, s in zip(read, samples, strict=True):
        for ext, value in s.members:
            assert r[ext] == (value if isinstance(value, bytes) else open(value, "rb").read())
    for row in index:  # the index points at each member's bytes
        member = dict(next(s for s in samples if s.key == row["key"]).members)[row["ext"]]
        want = member if isinstance(member, bytes) else open(member, "rb").read()
        assert ours[row["offset"] : row["offset"] + row["bytes"]] == want


def test_writing_a_shard_imports_neither_webdataset_nor_torch(tmp_path):
    code = (
        "import sys; from pathlib import Path; from builders.stages.shard import Sample, write_shard; "
        f"write_shard(Path({str(tmp_path / 'x.tar')!r}), [Sample('k', (('json', b'{{}}'),), 'f')]); "
        "print(sorted(m for m in ('torch', 'webdataset') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert [r["__key__"] for r in wds.WebDataset(str(tmp_path / "x.tar"), shardshuffle=False)] == ["k"]
