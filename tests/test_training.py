"""`icm train` and the training package, on tiny data the tests write."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import save_png, textured_scene
from icm_cli.cli import app
from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, load_decoder
from icm_cli.training import corrupt
from icm_cli.training.episodes import Recipe, build_episodes, mask_shares, plan_episodes, save_plan
from icm_cli.training.fit import FitSettings, fit
from icm_cli.training.layout import LayoutError, read_layout

runner = CliRunner()


def write_layout(root, photos=3, frames=5, size=(96, 128)):
    """A group of photos (the object at other places) and a short sequence (the object moving)."""
    h, w = size
    for i in range(photos):
        img, mask = textured_scene(h, w, (15 + 7 * i, 20 + 15 * i, 40, 50), seed=10 + i)
        save_png(root / "things" / "images" / f"p{i}.png", img)
        save_png(root / "things" / "masks" / f"p{i}.png", mask * 255)
    for i in range(frames):
        img, mask = textured_scene(h, w, (30, 10 + 8 * i, 36, 44), seed=20 + i)
        save_png(root / "clip" / "images" / f"{i}.jpg", img)
        save_png(root / "clip" / "masks" / f"{i}.png", mask)  # 0/1 masks, as many datasets have them
    if frames:
        (root / "clip" / "group.json").write_text(json.dumps({"sequence": True, "pool": "video"}))
    return root


TINY = Recipe(sequence_refs=2, photo_refs=2, targets=2, pasted=1, augmented=1, refine=1, val_refs=1, val_targets=1)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    root = write_layout(tmp_path_factory.mktemp("data"))
    cache = tmp_path_factory.mktemp("cache")
    groups = read_layout(root, val_share=0.0)
    plans = plan_episodes(groups, mask_shares(root, groups), TINY, seed=0)
    save_plan(cache, plans, {})
    build_episodes(root, cache, plans, workers=1)
    return root, cache, plans


# ------------------------------------------------------------------ layout

def test_layout_reads_groups_sequences_pools_and_leaves_out_unpaired_images(tmp_path):
    root = write_layout(tmp_path)
    img, _ = textured_scene(32, 32, (5, 5, 10, 10))
    save_png(root / "things" / "images" / "orphan.png", img)
    for i in (10, 2):  # natural order: frame 2 before frame 10
        save_png(root / "clip" / "images" / f"{i}.jpg", img)
        save_png(root / "clip" / "masks" / f"{i}.png", np.zeros((32, 32), np.uint8))
    groups = {g.name: g for g in read_layout(root, val_share=0.0)}
    assert set(groups) == {"things", "clip"}
    clip = groups["clip"]
    assert clip.sequence and clip.pool == "video" and clip.split == "train"
    names = [it.image.split("/")[-1] for it in clip.items]
    assert names == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "10.jpg"]
    things = groups["things"]
    assert not things.sequence and things.pool == "things" and len(things.items) == 3
    assert any("orphan.png" in w and "no mask" in w for w in things.warnings)


def test_layout_errors_name_the_folder(tmp_path):
    with pytest.raises(LayoutError, match="no groups"):
        read_layout(tmp_path)
    (tmp_path / "g" / "images").mkdir(parents=True)
    with pytest.raises(LayoutError, match="images/ and masks/"):
        read_layout(tmp_path)
    (tmp_path / "g" / "masks").mkdir()
    (tmp_path / "g" / "group.json").write_text("{not json")
    with pytest.raises(LayoutError, match="group.json"):
        read_layout(tmp_path)


def test_validation_holds_out_groups_of_a_large_pool_and_images_of_a_small_one(tmp_path):
    for g in range(10):
        for i in range(2):
            img, mask = textured_scene(32, 32, (5, 5, 12, 12), seed=i)
            save_png(tmp_path / f"cat{g}" / "images" / f"{i}.png", img)
            save_png(tmp_path / f"cat{g}" / "masks" / f"{i}.png", mask * 255)
            (tmp_path / f"cat{g}" / "group.json").write_text('{"pool": "coco"}')
    for i in range(30):
        img, mask = textured_scene(32, 32, (5, 5, 12, 12), seed=i)
        save_png(tmp_path / "people" / "images" / f"{i}.png", img)
        save_png(tmp_path / "people" / "masks" / f"{i}.png", mask * 255)
    groups = {g.name: g for g in read_layout(tmp_path, val_share=0.1, seed=3)}
    assert sum(g.split == "val" for g in groups.values()) == 1      # 10% of the 10 coco groups
    assert groups["people"].split == "train" and groups["people"].val_items == {0, 10, 20}
    again = {g.name: g.split for g in read_layout(tmp_path, val_share=0.1, seed=3)}
    assert again == {n: g.split for n, g in groups.items()}         # the seed decides


# ------------------------------------------------------------------ corruptions (known answers)

def test_corruptions_with_known_answers():
    m = np.zeros((64, 64), bool)
    m[16:48, 20:40] = True
    assert corrupt.dilate(m, 5).sum() == 36 * 24 and corrupt.erode(m, 5).sum() == 28 * 16
    moved = corrupt.shift(m, 12)
    assert moved[16:48, 32:52].all() and moved.sum() == m.sum() and not moved[:, :32].any()
    assert corrupt.shift(m, 30).sum() == 32 * (64 - 50)                # pushed off the right edge
    assert corrupt.filled_box(m).sum() == m.sum()
    # Bilinear samples at block centres 7.5, 23.5, 39.5, 55.5: rows 1-2 and columns 1-2 (39.5 is half in).
    expected = np.zeros_like(m)
    expected[16:48, 16:48] = True
    assert np.array_equal(corrupt.blocky(m, 16), expected)
    disc = np.zeros((64, 64), np.uint8)
    import cv2
    cv2.circle(disc, (32, 32), 20, 1, -1)
    assert corrupt.convex_polygon(disc.astype(bool)).sum() >= disc.sum() * 0.97
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = corrupt.random_corruption(m, rng)
        assert out.shape == m.shape and out.dtype == bool and out.any()


def test_blocky_follows_the_issue_recipe():
    m = np.zeros((64, 64), bool)
    m[0:40, 0:40] = True           # 40 px: 2.5 blocks of 16 -> bilinear at half a block decides
    out = corrupt.blocky(m, 16)
    assert out.shape == m.shape and set(np.unique(out)) <= {False, True}
    assert out[:32, :32].all() and not out[48:, 48:].any()


# ------------------------------------------------------------------ episodes and fitting

def test_episodes_are_planned_by_seed_and_cached_with_what_the_decoder_reads(tiny_cache):
    root, cache, plans = tiny_cache
    kinds = {p.kind for p in plans}
    assert {"pair", "pasted", "augmented", "refine"} <= kinds
    groups = read_layout(root, val_share=0.0)
    again = plan_episodes(groups, mask_shares(root, groups), TINY, seed=0)
    assert again == plans
    frame = lambda path: int(path.split("/")[-1].split(".")[0])  # noqa: E731
    seq = [p for p in plans if p.group == "clip" and p.kind == "pair"]
    chained = {p.chain for p in seq if p.chain >= 0}
    assert chained  # some sequence targets have an episode of an earlier frame (own-prediction priors)
    for p in seq:  # targets are min_gap frames from their reference; chained earlier frames at least 1
        assert abs(frame(p.ref) - frame(p.target)) >= (1 if p.index in chained else TINY.min_gap)
    for p in seq:
        if p.chain >= 0:
            earlier = plans[p.chain]
            assert earlier.ref == p.ref and 1 <= frame(p.target) - frame(earlier.target) <= 5
    assert all(p.prev == tuple(f"clip/masks/{frame(p.target) - k}.png" for k in range(1, len(p.prev) + 1))
               for p in seq)
    for p in plans:
        with np.load(cache / "episodes" / f"{p.index:05d}.npz") as z:
            assert {"canvas", "gt", "maps", "level4", "proto2", "proto4", "resized"} <= set(z.files)
            assert z["maps"].shape[0] == 7 and z["canvas"].dtype == np.uint8
            assert ("prior" in z.files) == (p.kind == "refine")
            assert ("prev" in z.files) == bool(p.prev)
    # Building again computes nothing.
    assert build_episodes(root, cache, plans, workers=1) == 0


def test_the_loss_falls_and_a_checkpoint_resumes_to_the_same_weights(tiny_cache, tmp_path):
    _, cache, plans = tiny_cache
    fs = FitSettings(steps=30, batch=4, crop=128, lr=3e-3, val_every=0, checkpoint_every=10, prior_share=0.5)
    losses = []
    torch.manual_seed(0)
    model = MaskDecoder(DecoderConfig(prior=True))
    fit(cache, plans, model, fs, 0.1, checkpoint=tmp_path / "a.ckpt", on_step=lambda s, l: losses.append(l))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # Interrupted after 10 steps (the checkpoint of step 10), then resumed: the same weights.
    short = dataclasses.replace(fs)
    torch.manual_seed(0)
    first = MaskDecoder(DecoderConfig(prior=True))
    ckpt = tmp_path / "b.ckpt"
    stopped = []

    def stop(step, loss):
        stopped.append(step)
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cache, plans, first, short, 0.1, checkpoint=ckpt, on_step=stop)
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = MaskDecoder(DecoderConfig(prior=True))
    fit(cache, plans, resumed, short, 0.1, checkpoint=ckpt, resume=True)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ the command

def test_icm_train_end_to_end_and_the_weights_load_back_with_decoder(tmp_path):
    data = write_layout(tmp_path / "data", photos=3, frames=4)
    out = tmp_path / "mine.safetensors"
    args = ["train", str(data), "-o", str(out), "--steps", "6", "--workers", "1", "--cache", str(tmp_path / "c")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert out.is_file() and "validation" in res.output.lower()
    model = load_decoder(out)
    assert model.config.prior
    # Rerun: episodes are cached, only the fit runs again; --resume with the finished checkpoint is a no-op fit.
    res = runner.invoke(app, args + ["--resume"])
    assert res.exit_code == 0, res.output
    # The weights drive propagate.
    img, mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    src, _ = textured_scene(96, 128, (30, 50, 40, 50), seed=2)
    save_png(tmp_path / "ref.png", img)
    save_png(tmp_path / "ref_mask.png", mask * 255)
    save_png(tmp_path / "src" / "a.png", src)
    res = runner.invoke(app, ["propagate", str(tmp_path / "src"), "--ref", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "ref_mask.png"), "-o", str(tmp_path / "o"),
                              "--decoder", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "masks" / "a.png").is_file()


def test_icm_train_refuses_bad_arguments_with_one_line(tmp_path):
    res = runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "w.bin")])
    assert res.exit_code == 2 and ".safetensors" in res.output
    res = runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "w.safetensors")])
    assert res.exit_code == 2 and "no groups" in res.output
    data = write_layout(tmp_path / "d", photos=2, frames=0)
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "w.safetensors"), "--pool-weight", "x"])
    assert res.exit_code == 2 and "POOL=WEIGHT" in res.output
    res = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "w.safetensors"), "--init",
                              str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "missing.safetensors" in res.output
