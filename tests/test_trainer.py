"""The training stack on a real pipeline build (generated videos, 1 s clips at 8 fps, 64 px; tiny configs on CPU).

Covers: masking ratios and shapes (VideoMAE tube masks, V-JEPA multi-block masks), the paper-size models' shapes
and parameter counts, both objectives' losses falling over 40 steps, exact resume (same losses after a checkpoint,
with two loader workers), the sampler's weights in the loader, and a checkpoint embedding clips through
``embed --encoder`` and ``load_encoder``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from corpus.balance import CLIP_BALANCE
from corpus.errors import DecodeError
from corpus.manifest import load_manifest
from corpus.schemas import table_path, write_table
from corpus.testing import make_video
from tests.conftest import write_manifest
from trainers.checkpoint import load_model
from trainers.config import load_config
from trainers.data import decode_jpgs, decode_mp4_decord, decode_mp4_ffmpeg, normalize
from trainers.jepa import MaskSpec, MultiBlockMasking
from trainers.loop import train
from trainers.mae import TubeMasking, patch_targets
from trainers.metrics import read_metrics
from trainers.recipe import CONFIG_DIR, get_recipe

TINY = {"run.log_every": 1, "data.num_workers": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """Deterministic CPU math for loss comparisons; the thread count is restored for later tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus built by the pipeline: site-a (3 videos of 6 s) and site-c (2 videos of 4 s), all in train."""
    from builders.pipeline import build

    root = tmp_path_factory.mktemp("trainer")
    make_video(root / "c" / "w1.mp4", 4, source="life=size=160x120:rate=25:seed=5:mold=10")
    make_video(root / "c" / "w2.mp4", 4, source="rgbtestsrc=size=160x120:rate=25")
    manifest = write_manifest(
        root / "train.yaml",
        {
            "name": "tr",
            "sources": [
                {"name": "site-a", "domain": "laparoscopy", "root": str(generated / "a"), "videos": {"glob": "*.mp4"}},
                {"name": "site-c", "domain": "endoscopy", "root": str(root / "c"), "videos": {"glob": "*.mp4"}},
            ],
            "clips": {"fps": 8, "size": 64, "seconds": 1},
            "split": {"val": 0.0, "test": 0.0, "seed": 0},
            "shard": {"max_samples": 6},
        },
    )
    build(load_manifest(manifest), root / "corpus", workers=2, show_progress=False, manifest_path=manifest)
    return root / "corpus"


def test_tube_mask_is_shared_across_time_with_ratio_09() -> None:
    grid = (8, 14, 14)
    out = TubeMasking(grid, 0.9)({"video": torch.zeros(3, 1)}, torch.Generator().manual_seed(0))
    assert out["masked"].shape == (3, 8 * 176) and out["visible"].shape == (3, 8 * 20)  # int(0.9 * 196) = 176
    for vis, msk in zip(out["visible"], out["masked"], strict=True):
        assert sorted(torch.cat([vis, msk]).tolist()) == list(range(8 * 196))
        spatial = (msk % 196).view(8, 176)
        assert (spatial == spatial[0]).all()  # the same positions in every time slot
    assert not torch.equal(out["masked"][0], out["masked"][1])


def test_multiblock_masks_span_all_time_slots_and_partition_the_grid() -> None:
    grid = (8, 14, 14)
    specs = (MaskSpec(num_blocks=8, spatial_scale=0.15), MaskSpec(num_blocks=2, spatial_scale=0.7))
    masking = MultiBlockMasking(grid, specs)
    gen = torch.Generator().manual_seed(1)
    h, w = masking.block_size(specs[0], gen)
    assert 20 <= h * w <= 40  # int(196 * 0.15) = 29 patches, rounded to a block
    out = masking({"video": torch.zeros(4, 1)}, gen)
    fractions = []
    for i in range(2):
        ctx, tgt = out[f"context_{i}"], out[f"target_{i}"]
        assert ctx.shape[0] == tgt.shape[0] == 4 and ctx.shape[1] % 8 == 0 and tgt.shape[1] % 8 == 0
        for c, t in zip(ctx, tgt, strict=True):
            assert not set(c.tolist()) & set(t.tolist())
            spatial = (t % 196).view(8, -1)
            assert (spatial == spatial[0]).all()
        fractions.append(tgt.shape[1] / (8 * 196))
    # 8 overlapping blocks of ~29 patches: well under 8 x 15 %; 2 blocks of ~137 (0.66-0.71 each) cover more
    assert 0.3 < fractions[0] < 0.85 and 0.65 < fractions[1] < 1.0 and fractions[1] > fractions[0]
    one = MultiBlockMasking(grid, (MaskSpec(num_blocks=1, spatial_scale=0.7),))
    h, w = one.block_size(one.specs[0], torch.Generator().manual_seed(2))  # the first draw of a call
    out = one({"video": torch.zeros(3, 1)}, torch.Generator().manual_seed(2))
    assert out["target_0"].shape == (3, 8 * h * w) and out["context_0"].shape == (3, 8 * (196 - h * w))


def test_patch_targets_are_normalised_per_patch_and_channel() -> None:
    x = torch.rand(2, 3, 4, 32, 32)
    t = patch_targets(x, patch=16, tubelet=2)
    assert t.shape == (2, 2 * 2 * 2, 2 * 16 * 16 * 3)
    per = t.view(2, 8, 512, 3)
    assert torch.allclose(per.mean(dim=2), torch.zeros(2, 8, 3), atol=1e-5)
    assert torch.allclose(per.std(dim=2), torch.ones(2, 8, 3), atol=1e-3)
    # token 0 is frames 0-1, rows 0-15, columns 0-15; pixel order is (frame, row, column), then channel
    raw = patch_targets(x, patch=16, tubelet=2, norm=False).view(2, 8, 2, 16, 16, 3)
    assert torch.equal(raw[0, 0, 1, 3, 5], x[0, :, 1, 3, 5])
    assert torch.equal(raw[1, 3, 0, 2, 7], x[1, :, 0, 16 + 2, 16 + 7])  # token 3: slot 0, row 1, column 1
    assert torch.equal(raw[1, 4, 1, 2, 7], x[1, :, 3, 2, 7])  # token 4: slot 1 (frames 2-3), row 0, column 0


def test_decoders_agree_and_jpeg_frames_decode(corpus: Path) -> None:
    import cv2
    import webdataset as wds

    shard = sorted((corpus / "shards" / "train").glob("*.tar"))[0]
    sample = next(s for s in wds.WebDataset(str(shard), shardshuffle=False) if "mp4" in s)
    a = decode_mp4_decord(sample["mp4"], np.arange, "t")
    b = decode_mp4_ffmpeg(sample["mp4"], np.arange, "t")
    assert a.shape == b.shape == (8, 64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # same libavcodec frames, RGB conversion may round
    assert np.array_equal(decode_mp4_decord(sample["mp4"], lambda n: np.array([n - 1, 0]), "t"), a[[7, 0]])
    with pytest.raises(DecodeError, match="t: decord cannot decode"):
        decode_mp4_decord(b"not an mp4", np.arange, "t")
    frames = {
        f"{i:03d}.jpg": cv2.imencode(".jpg", np.full((16, 16, 3), 40 * i, np.uint8))[1].tobytes() for i in range(4)
    }
    out = decode_jpgs({"__key__": "k", **frames}, lambda n: np.array([3, 1]), "t")
    assert out.shape == (2, 16, 16, 3) and abs(int(out[0, 0, 0, 0]) - 120) <= 2 and abs(int(out[1, 0, 0, 0]) - 40) <= 2


@pytest.mark.parametrize(
    ("config", "encoder_params", "extra"),
    [("mae-vitb.yaml", 86.2e6, ("decoder_blocks", 4, 384)), ("jepa-vitl.yaml", 303.3e6, ("predictor", 12, 384))],
)
def test_paper_size_models_have_the_published_shapes(config: str, encoder_params: float, extra: tuple) -> None:
    cfg = load_config(CONFIG_DIR / config)
    recipe = get_recipe(cfg.recipe)
    masks = recipe.collate(cfg)({"video": torch.empty(2, 0)}, torch.Generator().manual_seed(0))
    with torch.device("meta"):  # shapes and counts without allocating ViT-L's weights
        model = recipe.build_model(cfg)
    n = sum(p.numel() for p in model.eval_encoder.parameters())
    assert n == pytest.approx(encoder_params, rel=0.01)
    name, depth, width = extra
    part = getattr(model, name)
    blocks = part if name == "decoder_blocks" else part.blocks
    assert len(blocks) == depth and blocks[0].norm1.normalized_shape == (width,)
    if cfg.recipe == "mae":
        assert masks["visible"].shape == (2, 160) and masks["masked"].shape == (2, 1408)
    else:
        assert sum(p.numel() for p in model.target_encoder.parameters()) == n
        assert not any(p.requires_grad for p in model.target_encoder.parameters())
    for module in model.modules():  # one block per stack is enough for shapes (meta tensors run slowly)
        for attr in ("blocks", "decoder_blocks"):
            if isinstance(getattr(module, attr, None), torch.nn.ModuleList):
                setattr(module, attr, getattr(module, attr)[:1])
    with torch.device("meta"):
        batch = {"video": torch.empty(2, 3, 16, 224, 224)} | {k: v.to("meta") for k, v in masks.items()}
        loss, _ = model(batch)
        tokens = model.eval_encoder(batch["video"])
    assert loss.shape == () and tokens.shape == (2, 1568, 1024 if cfg.model.size == "L" else 768)


@pytest.mark.parametrize("recipe", ["mae", "jepa"])
def test_loss_falls_over_40_steps(corpus: Path, tmp_path: Path, recipe: str) -> None:
    """40 steps of the tiny config through the loop; the objective on 3 fixed held-back batches (their own epoch,
    their own masks) drops against the initial weights, and the logged losses drop too."""
    cfg = load_config(CONFIG_DIR / f"{recipe}-tiny.yaml", **TINY)
    result = train(cfg, corpus, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41)) and result.step == 40
    assert {"step", "loss", "lr", "clips_per_s", "data_wait"} <= set(rows[0])
    assert rows[0]["lr"] == pytest.approx(cfg.optim.lr / cfg.optim.warmup_steps)
    assert rows[3]["lr"] == pytest.approx(cfg.optim.lr) and rows[-1]["lr"] < rows[10]["lr"]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "config.yaml").exists()

    stream = get_recipe(recipe).build_data(cfg, corpus, rank=0, world_size=1)
    stream.set_position(epoch=1000)
    held = [b for _, b in zip(range(3), stream.loader(), strict=False)]
    for b in held:
        assert b["video"].dtype == torch.uint8 and b["video"].shape == (4, 3, 8, 64, 64)
        b["video"] = normalize(b["video"], cfg.data.mean, cfg.data.std)
    torch.manual_seed(cfg.seed)  # the loop's initial weights
    initial = get_recipe(recipe).build_model(cfg)
    trained, _ = load_model(tmp_path / "run" / "last.pt")
    with torch.no_grad():
        before = sum(initial(b)[0].item() for b in held) / 3
        after = sum(trained(b)[0].item() for b in held) / 3
    assert after < 0.97 * before, (before, after)
    logged = [r["loss"] for r in rows]
    assert sum(logged[-10:]) / 10 < sum(logged[:5]) / 5


@pytest.mark.parametrize("recipe", ["mae", "jepa"])
def test_resume_continues_the_same_trajectory(corpus: Path, tmp_path: Path, recipe: str) -> None:
    """Two loader workers and gradient accumulation: 6 steps straight equal 3 steps, a checkpoint, 3 resumed
    (for JEPA this includes the EMA target encoder and its momentum schedule)."""
    cfg = load_config(
        CONFIG_DIR / f"{recipe}-tiny.yaml",
        **{"run.log_every": 1, "run.steps": 6, "run.accum": 2, "data.num_workers": 2, "data.batch_size": 2},
    )
    train(cfg, corpus, tmp_path / "straight", progress=False)
    train(cfg, corpus, tmp_path / "cut", progress=False, stop_at=3)
    assert [r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3]
    train(cfg, corpus, tmp_path / "cut", progress=False, resume=True)
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in cut] == list(range(1, 7))
    assert [r["loss"] for r in cut] == pytest.approx([r["loss"] for r in straight], rel=1e-6)
    assert [r["lr"] for r in cut] == pytest.approx([r["lr"] for r in straight], rel=1e-9)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["position"] == b["position"]
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-6) for k in a["model"])


def test_sampler_weights_hold_in_the_loader(corpus: Path, tmp_path: Path) -> None:
    build = tmp_path / "balanced"
    shutil.copytree(corpus, build)
    clips = pq.read_table(table_path(build, "shards"), columns=["clip_id"]).column("clip_id").to_pylist()
    clips = sorted(set(clips))
    zero = [c for c in clips if c.startswith("site-a/v3/")]  # not selected: weight 0
    groups = {"site-a": ([c for c in clips if c.startswith("site-a/") and c not in zero], 0.25),
              "site-c": ([c for c in clips if c.startswith("site-c/")], 0.75)}  # fmt: skip
    rows = [
        {"clip_id": c, "weight": share / len(ids), "balanced": True} for ids, share in groups.values() for c in ids
    ]
    rows += [{"clip_id": c, "weight": 0.0, "balanced": False} for c in zero]
    rows = [r | {"cluster": "0/0", "rank": 0, "reason": ""} for r in rows]
    write_table(pa.Table.from_pylist(rows, schema=CLIP_BALANCE), table_path(build, "clip_balance"))
    cfg = load_config(
        CONFIG_DIR / "mae-tiny.yaml", **{"data.num_workers": 2, "data.batch_size": 8, "data.samples_per_epoch": 320}
    )
    stream = get_recipe("mae").build_data(cfg, build, rank=0, world_size=1)
    assert stream.group_probs == pytest.approx({"site-a": 0.25, "site-c": 0.75})
    keys = [k for batch in stream.loader() for k in batch["keys"]]
    assert len(keys) == 320 == stream.batches_per_epoch * 8
    sources = Counter(k.split("__")[0] for k in keys)
    assert sources["site-c"] / 320 == pytest.approx(0.75, abs=0.08)
    assert not [k for k in keys if k.startswith("site-a__v3__")]  # weight 0 never appears


def test_checkpoint_embeds_clips_through_embed_encoder(corpus: Path, tmp_path: Path) -> None:
    build = tmp_path / "b"
    shutil.copytree(corpus, build)
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["train", "mae", "--config", str(CONFIG_DIR / "mae-tiny.yaml"), "--build", str(build), "--out", str(out),
         "--steps", "2", "--workers", "0", "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "mae: step 2" in res.output
    res = runner.invoke(app, ["embed", "--build", str(build), "--encoder", str(out / "last.pt"), "--limit", "6"])
    assert res.exit_code == 0, res.output
    emb = pq.read_table(table_path(build, "embeddings")).to_pylist()
    assert len(emb) == 6 and all(r["encoder"].startswith("ckpt-last-") for r in emb)
    assert len(emb[0]["vector"]) == 64  # the tiny ViT's width

    from trainers.checkpoint import load_encoder
    from trainers.vit import VideoViT

    encoder, config = load_encoder(out / "last.pt")
    assert isinstance(encoder, VideoViT) and not encoder.training
    assert (config["num_frames"], config["image_size"], config["recipe"]) == (8, 64, "mae")
    assert encoder.embed(torch.zeros(2, 3, 8, 64, 64)).shape == (2, 64)


def test_train_errors_name_the_problem(corpus: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "nope", "--build", str(corpus), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown recipe 'nope'" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: mae\nrun: {steps: -1}\n")
    res = runner.invoke(app, ["train", "mae", "--config", str(bad), "--build", str(corpus), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "bad.yaml: run.steps" in res.output
    res = runner.invoke(app, ["train", "mae", "--build", str(corpus), "--out", str(tmp_path / "none"), "--resume"])
    assert res.exit_code == 2 and "nothing to resume" in res.output
