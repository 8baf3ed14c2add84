"""`icm refine` and `icm inspect-attn` on files the tests write."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import save_png, textured_scene

runner = CliRunner()


def test_refine_fixes_a_coarse_mask_and_pairs_by_stem(tmp_path):
    img, truth = textured_scene(96, 128, (24, 32, 48, 64), seed=3)
    save_png(tmp_path / "images" / "shot.jpg", img)
    coarse = truth.copy()
    coarse[:, :] = 0
    coarse[20:76, 28:100] = 1  # a box around the ellipse: too big at the corners
    coarse[40:56, 56:72] = 0   # and a hole in the middle
    save_png(tmp_path / "coarse" / "shot.png", coarse * 255)
    save_png(tmp_path / "coarse" / "orphan.png", coarse * 255)
    out = tmp_path / "out"
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"),
                              "-o", str(out), "--size", "128", "-q"])
    assert res.exit_code == 1 and "orphan" in res.output  # no image for that stem
    refined = np.asarray(Image.open(out / "shot.png")) > 127
    assert refined.shape == truth.shape

    def iou(a, b):
        return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()
    assert iou(refined, truth) > iou(coarse.astype(bool), truth)


def test_refine_rejects_unknown_score(tmp_path):
    res = runner.invoke(app, ["refine", str(tmp_path), "--images", str(tmp_path), "-o", str(tmp_path / "o"),
                              "--score", "vote"])
    assert res.exit_code == 2 and "classification" in res.output


def test_inspect_attn_writes_montage_and_heat_maps(tmp_path):
    img, mask = textured_scene(90, 120, (20, 30, 50, 60), seed=1)
    src, src_mask = textured_scene(90, 120, (30, 50, 40, 50), seed=2)
    save_png(tmp_path / "ref.png", img)
    save_png(tmp_path / "mask.png", mask * 255)
    save_png(tmp_path / "src" / "s1.png", src)
    out = tmp_path / "out"
    res = runner.invoke(app, ["inspect-attn", str(tmp_path / "src"), "--ref", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "mask.png"), "-o", str(out), "--point", "60,45",
                              "--size", "128", "--head-steps", "10", "--height", "100", "-q"])
    assert res.exit_code == 0, res.output
    montage = Image.open(out / "s1.png")
    assert montage.mode == "RGB" and montage.size[1] == 100 and montage.size[0] > 5 * 100
    for suffix in ["_inter", "_intra", "_point"]:
        heat = Image.open(out / f"s1{suffix}.png")
        assert heat.size == (120, 90)
    # The point sits on the object: its attention peaks inside the source object.
    point = np.asarray(Image.open(out / "s1_point.png")).astype(int)
    warmth = point[..., 0] - point[..., 2]  # Turbo: red where attention peaks, blue where it is 0
    peak = np.unravel_index(np.argmax(warmth), warmth.shape)
    assert src_mask[peak] == 1


def test_inspect_attn_point_outside_reference_is_an_error(tmp_path):
    img, mask = textured_scene(60, 80, (10, 20, 30, 30), seed=1)
    save_png(tmp_path / "ref.png", img)
    save_png(tmp_path / "mask.png", mask * 255)
    res = runner.invoke(app, ["inspect-attn", str(tmp_path / "ref.png"), "--ref", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "mask.png"), "-o", str(tmp_path / "o"),
                              "--point", "500,5", "--size", "64", "--head-steps", "0", "-q"])
    assert res.exit_code == 2 and "outside" in res.output  # found before the model loads


def test_refine_by_attention_writes_what_the_library_refines(tmp_path):
    """`icm refine --method attention` calls ``Predictor.refine(method="attention")``; both give the bytes of
    the attention vote run on a bare torch backbone, as the command computed it before the library had it."""
    import torch

    from icm_cli.backbones import create_backbone
    from icm_cli.config import ModelConfig
    from icm_cli.predict.selfattention import refine_mask_with_attention
    from icm_cli.predictor import Predictor

    img, truth = textured_scene(96, 128, (24, 32, 48, 64), seed=3)
    save_png(tmp_path / "images" / "shot.png", img)
    coarse = np.zeros_like(truth)
    coarse[20:76, 28:100] = 1
    coarse[40:56, 56:72] = 0
    save_png(tmp_path / "coarse" / "shot.png", coarse * 255)
    out = tmp_path / "out"
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"),
                              "-o", str(out), "--size", "128", "--method", "attention", "--iterations", "2", "-q"])
    assert res.exit_code == 0, res.output
    written = np.asarray(Image.open(out / "shot.png"))

    predictor = Predictor(ModelConfig(device="cpu", size=128, decoder="none", runtime="torch"))
    result = predictor.refine(img, coarse.astype(np.float32), method="attention", iterations=2)
    assert result.confidence is None and result.probability.dtype == np.float32
    np.testing.assert_array_equal(written, result.mask.astype(np.uint8) * 255)
    with torch.no_grad():
        bare, _ = refine_mask_with_attention(create_backbone("efficientnet-lite0").eval(), img,
                                             coarse.astype(np.float32), 128, 2)
    np.testing.assert_array_equal(result.mask, bare)
    assert (written > 127).tolist() != (coarse > 0).tolist()  # the vote changed something


def test_library_refine_methods():
    import pytest

    from icm_cli.config import ModelConfig
    from icm_cli.errors import SettingError
    from icm_cli.io import InputError
    from icm_cli.predictor import Predictor

    img, truth = textured_scene(64, 64, (16, 16, 32, 32), seed=1)
    predictor = Predictor(ModelConfig(device="cpu", size=64, decoder="none", head_steps=0))
    auto = predictor.refine(img, truth > 0, method="auto")  # no decoder reads priors: the attention vote
    assert auto.mask.tolist() == predictor.refine(img, truth > 0, method="attention").mask.tolist()
    with pytest.raises(SettingError, match="prior"):
        predictor.refine(img, truth > 0, method="decoder")
    with pytest.raises(SettingError, match="attention"):
        predictor.refine(img, truth > 0, method="vote")
    with pytest.raises(SettingError, match="classification"):
        predictor.refine(img, truth > 0, method="attention", score="vote")
    with pytest.raises(InputError, match="empty"):
        predictor.refine(img, np.zeros_like(truth), method="attention")
