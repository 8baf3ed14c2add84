"""Steadier alpha for video: known answers of the pull, less flicker, and resume giving the same alphas."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from icm_cli.alpha_temporal import COLOUR_SIGMA, STRENGTH, SequenceMatte, quantised, steady_alpha
from icm_cli.cli import app
from tests.conftest import save_png, textured_scene

runner = CliRunner()


def test_steady_alpha_known_answers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    alpha = np.full((8, 10), 0.2, np.float32)
    previous = np.full((8, 10), 0.7, np.float32)
    band = np.zeros((8, 10), bool)
    band[2:6, 3:7] = True
    # the same picture: the pull is STRENGTH inside the band, nothing outside
    out = steady_alpha(alpha, band, image, image, previous)
    assert np.allclose(out[band], 0.2 + STRENGTH * 0.5) and np.allclose(out[~band], 0.2)
    # every channel off by COLOUR_SIGMA: the pull falls to exp(-1/2) of STRENGTH
    shifted = (image.astype(int) + np.where(image < 128, 1, -1) * int(COLOUR_SIGMA)).astype(np.uint8)
    out = steady_alpha(alpha, band, image, shifted, previous)
    assert np.allclose(out[band], 0.2 + STRENGTH * np.exp(-0.5) * 0.5, atol=1e-5)
    # a picture that changed completely: the new alpha stands
    out = steady_alpha(alpha, band, image, 255 - image, previous, window=1)
    assert np.allclose(out[band & (np.abs(image.astype(int) - 127).min(axis=2) > 60)], 0.2, atol=1e-3)


def test_a_sequence_matte_flickers_less_than_the_alphas_it_is_given():
    """A still picture whose per-frame alpha jitters in the band (as independent solves do)."""
    rng = np.random.default_rng(1)
    image, mask = textured_scene(48, 64, (10, 14, 28, 36), seed=3)
    trimap = np.where(mask > 0, 1.0, 0.0).astype(np.float32)
    edge = np.abs(np.diff(mask.astype(int), axis=1, prepend=0)) > 0
    band = np.zeros_like(edge)
    for dx in range(-3, 4):
        band |= np.roll(edge, dx, axis=1)
    trimap[band] = 0.5
    truth = np.clip(mask.astype(np.float32), 0, 1)
    jitters = [np.clip(truth + band * rng.normal(0, 0.15, truth.shape), 0, 1) for _ in range(12)]
    raw = [quantised(a) for a in jitters]
    matte = SequenceMatte(lambda img, tri, it=iter(jitters): next(it))
    steadied = [matte(image, trimap) for _ in range(12)]

    def flicker(alphas):
        return float(np.mean([np.abs(a - b)[band].mean() for a, b in zip(alphas, alphas[1:])]))

    assert flicker(steadied) < 0.7 * flicker(raw)
    assert np.array_equal(steadied[0], raw[0])          # the first frame has nothing to lean on
    assert all(np.array_equal(s[~band], truth[~band]) for s in steadied)  # sure object/background untouched


def test_resumed_video_alphas_equal_an_uninterrupted_run(tmp_path):
    frames = tmp_path / "frames"
    for i in range(5):
        img, _ = textured_scene(64, 80, (14, 10 + 5 * i, 30, 36), seed=50 + i)
        save_png(frames / f"{i:03d}.png", img)
    _, ref_mask = textured_scene(64, 80, (14, 10, 30, 36), seed=50)
    save_png(tmp_path / "m.png", ref_mask * 255)
    common = ["--ref", str(frames / "000.png"), "--mask", str(tmp_path / "m.png"), "--save", "masks,alpha",
              "--head-steps", "10", "--size", "96", "--no-edges", "--quiet"]
    full = tmp_path / "full"
    res = runner.invoke(app, ["propagate", "--video", str(frames), "-o", str(full), *common])
    assert res.exit_code == 0, res.output
    part = tmp_path / "part"
    first3 = tmp_path / "first3"
    first3.mkdir()
    for p in sorted(frames.iterdir())[:3]:  # the same files (frame 0 is the reference, so its mask the user's)
        os.link(p, first3 / p.name)
    assert runner.invoke(app, ["propagate", "--video", str(first3), "-o", str(part), *common]).exit_code == 0
    res = runner.invoke(app, ["propagate", "--video", str(frames), "-o", str(part), *common, "--json"])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["status"] for line in res.stdout.splitlines()] == ["skipped"] * 3 + ["done"] * 2
    for p in sorted((full / "alpha").iterdir()):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(part / "alpha" / p.name))), p.name
    # and the steadying did act: frame 4 differs from its own, unsteadied solve
    from icm_cli.matting import solve_alpha
    from icm_cli.predict.fullres import mask_to_trimap_u8

    image = np.asarray(Image.open(frames / "004.png"))
    mask = np.asarray(Image.open(full / "masks" / "004.png")).astype(np.float32) / 255
    alone = quantised(solve_alpha(image, mask_to_trimap_u8(mask, 20, 20).astype(np.float32) / 255.0))
    written = np.asarray(Image.open(full / "alpha" / "004.png")).astype(np.float32) / 255
    assert not np.array_equal(alone, written)


def test_sequence_matte_solves_with_one_numba_thread_and_restores_the_count():
    import numba


    before = numba.get_num_threads()
    seen = []

    def solve(image, trimap):
        seen.append(numba.get_num_threads())
        return trimap

    matte = SequenceMatte(solve)
    trimap = np.zeros((8, 8), np.float32)
    trimap[:, 4:] = 1.0
    out = matte(np.zeros((8, 8, 3), np.uint8), trimap)
    assert seen == [1] and numba.get_num_threads() == before
    assert np.array_equal(out, trimap)


def test_frames_solved_ahead_give_the_alphas_of_frames_solved_one_by_one():
    import cv2

    from icm_cli.matting import solve_alpha

    frames = []
    for i in range(4):
        image, mask = textured_scene(48, 64, (12 + i, 16 + i, 20, 24), seed=30 + i)
        trimap = np.where(mask, 1.0, 0.0).astype(np.float32)
        m = mask.astype(np.uint8)
        kernel = np.ones((5, 5), np.uint8)
        band = (cv2.dilate(m, kernel) > 0) & ~(cv2.erode(m, kernel) > 0)  # a 4-pixel unknown band at the edge
        trimap[band] = 0.5
        frames.append((image, trimap))
    one_by_one = SequenceMatte(solve_alpha, ahead_workers=0)
    expected = [one_by_one(image, trimap) for image, trimap in frames]
    ahead = SequenceMatte(solve_alpha)
    for image, trimap in frames:  # the serial chain announces each frame's trimap before the writer asks
        ahead.ahead(image, lambda t=trimap: t)
    got = [ahead(image, trimap) for image, trimap in frames]
    ahead.close()
    assert any(((t > 0.25) & (t < 0.75)).any() for _, t in frames)
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)
    # a trimap other than the one announced is solved again, not taken from the announcement
    other = SequenceMatte(solve_alpha)
    other.ahead(frames[0][0], lambda: np.zeros_like(frames[0][1]))
    assert np.array_equal(other(*frames[0]), SequenceMatte(solve_alpha, ahead_workers=0)(*frames[0]))
    other.close()
