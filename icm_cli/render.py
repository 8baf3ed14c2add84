"""Turning maps into pictures people can read: colour maps, overlays, montages."""

from __future__ import annotations

import functools

import cv2
import numpy as np


def _heat_index(heat: np.ndarray) -> np.ndarray:
    """``[H, W]`` float in [0, 1] -> the colour map's index 0-255 (rounded)."""
    return (np.clip(heat, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _turbo_rgb() -> np.ndarray:
    """The Turbo colour map as a ``[256, 3]`` uint8 RGB table (index 0 = dark blue)."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()


def colorize(heat: np.ndarray) -> np.ndarray:
    """``[H, W]`` float in [0, 1] -> ``[H, W, 3]`` uint8 RGB with the Turbo colour map
    (dark blue = 0, red = 1; perceptually ordered, legible in print)."""
    return cv2.applyColorMap(_heat_index(heat), cv2.COLORMAP_TURBO)[..., ::-1].copy()


#: Grey sums r + g + b of one pixel: 0 to 3 * 255.
_GREY_SUMS = 3 * 255 + 1


@functools.lru_cache(maxsize=4)
def _overlay_table(opacity: float) -> np.ndarray:
    """Every pixel :func:`overlay` can make: ``[766 * 256, 3]`` uint8, row ``(r + g + b) * 256 + heat index``.

    A pixel of the overlay depends only on its grey sum and its colour-map
    index, so the blend is worked out once per opacity, with the float32
    arithmetic of the formula, for all 766 x 256 pairs (1 ms), and an image
    is one table look-up per pixel instead of full-size float passes.
    """
    grey = np.arange(_GREY_SUMS, dtype=np.float32)[:, None, None] / np.float32(3.0) * np.float32(1.0 - opacity)
    mixed = _turbo_rgb()[None].astype(np.float32) * np.float32(opacity)
    mixed = mixed + grey  # (1 - o) * grey + o * colour, in float32
    mixed += np.float32(0.5)
    np.clip(mixed, 0, 255, out=mixed)
    table = mixed.astype(np.uint8).reshape(_GREY_SUMS * 256, 3)
    table.flags.writeable = False
    return table


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Heat map blended over an RGB image; both ``[H, W(, 3)]``, returns uint8 RGB.

    The image is shown in grey under the colours so that the heat, not the
    photo's own colours, carries the hue: each pixel is
    ``(1 - opacity) * (r + g + b) / 3 + opacity * turbo(heat)``, rounded,
    read from :func:`_overlay_table`.
    """
    if image.dtype != np.uint8:  # the table covers 8-bit pixels (sums 0-765) only
        raise TypeError(f"overlay takes an 8-bit RGB image, got {image.dtype}")
    row = image[..., 0].astype(np.int32)
    row += image[..., 1]
    row += image[..., 2]
    row <<= 8
    row += _heat_index(heat)
    return np.take(_overlay_table(float(opacity)), row, axis=0)


def mask_outline(image: np.ndarray, mask: np.ndarray, colour=(255, 64, 64), width: int = 2) -> np.ndarray:
    """RGB image with the mask's boundary drawn on it (uint8 copy)."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, width)
    return out


#: The tint of ``overlay`` videos: a magenta that stands out on skin, sky and foliage alike.
TINT = (255, 40, 170)


def tint(image: np.ndarray, mask: np.ndarray, colour=TINT, opacity: float = 0.45) -> np.ndarray:
    """``[H, W, 3]`` uint8 with the ``[H, W]`` bool mask as a translucent fill and a 2 px outline."""
    out = image.astype(np.float32)
    out[mask] = (1.0 - opacity) * out[mask] + opacity * np.asarray(colour, np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return mask_outline(out, mask, colour=colour, width=2)


#: A montage panel is at most this many times as wide as it is high: a 3000x3 strip is
#: shown letterboxed, not stretched into a panel hundreds of thousands of pixels wide.
MAX_PANEL_ASPECT = 4


def fit_height(image: np.ndarray, height: int, max_aspect: float = MAX_PANEL_ASPECT) -> np.ndarray:
    """Resize ``[H, W, 3]`` (or ``[H, W]``) to the given height, aspect kept; always RGB out.

    An image wider than ``max_aspect`` times ``height`` is fitted to that
    width instead and centred on a white ``height``-high panel.
    """
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    max_width = max(1, round(max_aspect * height))
    fit_h = height
    if width > max_width:
        width, fit_h = max_width, max(1, round(h * max_width / w))
    interp = cv2.INTER_AREA if fit_h < h else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, fit_h), interpolation=interp)
    if fit_h == height:
        return resized
    panel = np.full((height, width, 3), 255, np.uint8)
    top = (height - fit_h) // 2
    panel[top:top + fit_h] = resized
    return panel


def label(panel: np.ndarray, text: str) -> np.ndarray:
    """Write a caption in the panel's top-left corner (white on a dark box)."""
    out = panel.copy()
    scale = max(0.4, panel.shape[0] / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def montage(panels: list[np.ndarray], height: int = 240, gap: int = 4) -> np.ndarray:
    """Panels side by side at one height with white gaps: ``[height, sum(W), 3]`` uint8."""
    fitted = [fit_height(p, height) for p in panels]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = []
    for i, p in enumerate(fitted):
        if i:
            row.append(spacer)
        row.append(p)
    return np.concatenate(row, axis=1)
