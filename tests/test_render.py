"""The heat-map overlay: the same pixels as its float formula, whatever the speed-up."""

from __future__ import annotations

import numpy as np
import pytest

from icm_cli import render


def _float_overlay(image: np.ndarray, heat: np.ndarray, opacity: float) -> np.ndarray:
    """The overlay's formula as icm computed it before the look-up table, full-size float32 passes."""
    grey = image.astype(np.float32).sum(axis=2) / np.float32(3.0) * np.float32(1.0 - opacity)
    colour = render.colorize(heat).astype(np.float32) * np.float32(opacity)
    return np.clip(colour + grey[..., None] + np.float32(0.5), 0, 255).astype(np.uint8)


def _every_pair() -> tuple[np.ndarray, np.ndarray]:
    """An image and a heat map holding every (grey sum, colour index) pair once: 766 x 256 pixels."""
    sums = np.arange(766)
    rgb = np.stack([np.minimum(sums, 255), np.clip(sums - 255, 0, 255), np.clip(sums - 510, 0, 255)], axis=1)
    assert np.array_equal(rgb.sum(axis=1), sums)
    image = np.repeat(rgb[:, None, :], 256, axis=1).astype(np.uint8)
    heat = np.broadcast_to(np.arange(256, dtype=np.float32) / 255.0, (766, 256))
    return image, np.ascontiguousarray(heat)


@pytest.mark.parametrize("opacity", [0.5, 0.3, 0.85])
def test_overlay_equals_the_float_formula_for_every_grey_and_colour(opacity):
    image, heat = _every_pair()
    assert np.array_equal(render.overlay(image, heat, opacity), _float_overlay(image, heat, opacity))


def test_overlay_equals_the_float_formula_on_a_photo_like_image():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    heat = rng.uniform(-0.2, 1.2, (37, 53)).astype(np.float32)  # out of range values are clipped
    heat[0, :3] = (0.0, 1.0, 0.5)
    out = render.overlay(image, heat)
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3) and out.flags.c_contiguous
    assert np.array_equal(out, _float_overlay(image, heat, 0.5))


def test_overlay_at_half_opacity_known_answers():
    # At opacity 0.5 each channel is (r + g + b) / 6 + turbo / 2 rounded half up: (s + 3 t + 3) // 6 in integers.
    image = np.array([[[0, 0, 0], [255, 255, 255], [10, 20, 31], [200, 3, 100]]], np.uint8)
    heat = np.array([[0.0, 1.0, 0.5, 0.25]], np.float32)
    turbo = render.colorize(heat).astype(np.int64)
    sums = image.astype(np.int64).sum(axis=2, keepdims=True)
    expected = (sums + 3 * turbo + 3) // 6
    assert np.array_equal(render.overlay(image, heat), expected.astype(np.uint8))
    # Written out for the first pixel: black under Turbo's dark blue (48, 18, 59) -> (24, 9, 30).
    assert render.colorize(np.zeros((1, 1), np.float32))[0, 0].tolist() == [48, 18, 59]
    assert render.overlay(image[:, :1], heat[:, :1])[0, 0].tolist() == [24, 9, 30]


def test_overlay_refuses_an_image_that_is_not_8_bit():
    with pytest.raises(TypeError, match="8-bit"):
        render.overlay(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.float32))
