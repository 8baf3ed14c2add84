"""From a coarse object probability to a full-resolution mask.

The feature grid is 8x coarser than the image, which caps what bilinear
upsampling can reach. GrabCut (Rother et al. 2004) re-labels the uncertain
band with colour models of the image's own object and background, seeded by
the probability map; it runs at half resolution to bound its cost.
"""

from __future__ import annotations

import cv2
import numpy as np

from icm_cli.core import window_padding
from icm_cli.core.morphology import cap_kernel
from icm_cli.process_settings import opencv_single_threaded

GRABCUT_SEED = 0


def grabcut_mask(image: np.ndarray, prob: np.ndarray, scale: float = 0.5, iterations: int = 1,
                 sure_fg: float = 0.75, sure_bg: float = 0.25, margin: int = 0) -> np.ndarray:
    """Refine a probability map with GrabCut.

    image: ``[H, W, 3]`` uint8 RGB; prob: ``[H, W]`` float in [0, 1] at the
    image's size. Cells with p >= ``sure_fg`` seed as certain object,
    p <= ``sure_bg`` as certain background, the rest as probable object
    (p >= 0.5) or probable background. Returns ``[H, W]`` bool. When either
    side has no pixels GrabCut cannot build its colour models and the map is
    simply thresholded at 0.5.
    """
    h, w = prob.shape
    threshold = prob >= 0.5
    if threshold.all() or not threshold.any() or iterations < 1:
        return threshold
    if scale != 1.0:
        sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
        small_img = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        small_prob = cv2.resize(prob.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR)
    else:
        small_img, small_prob = image, prob.astype(np.float32)
    labels = np.where(small_prob >= 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[small_prob >= sure_fg] = cv2.GC_FGD
    labels[small_prob <= sure_bg] = cv2.GC_BGD
    if not _has_both_sides(labels):
        return threshold
    region = (slice(None), slice(None))
    if margin > 0:
        # Only the uncertain cells can change: GrabCut on the box around them (and ``margin`` pixels of
        # sure object and background beyond it, for the colour models) decides them.
        rows, cols = np.nonzero((labels == cv2.GC_PR_FGD) | (labels == cv2.GC_PR_BGD))
        if rows.size:
            top, bottom = max(0, rows.min() - margin), min(labels.shape[0], rows.max() + 1 + margin)
            left, right = max(0, cols.min() - margin), min(labels.shape[1], cols.max() + 1 + margin)
            if _has_both_sides(labels[top:bottom, left:right]):
                region = (slice(top, bottom), slice(left, right))
    full_labels = labels
    labels = np.ascontiguousarray(full_labels[region])
    small_img = small_img[region]
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means on OpenCV's per-thread RNG, whose
    # state advances with every call: without a fixed seed a mask would depend on
    # which sources the same thread refined before (order, resume, shards, workers).
    try:
        with opencv_single_threaded():
            cv2.setRNGSeed(GRABCUT_SEED)
            cv2.grabCut(np.ascontiguousarray(small_img[..., ::-1]), labels, None, bgd, fgd, iterations,
                        cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return threshold
    full_labels[region] = labels
    labels = full_labels
    small_fg = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    if scale != 1.0:
        small_fg = cv2.resize(small_fg, (w, h), interpolation=cv2.INTER_LINEAR)
    return small_fg >= 0.5


def _has_both_sides(labels: np.ndarray) -> bool:
    """Whether GrabCut ``labels`` hold object and background pixels (sure or probable): it needs both to
    build its colour models."""
    return bool(((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).any()
                and ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)).any())


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool -> the same with enclosed background holes filled."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def keep_confident_components(mask: np.ndarray, prob: np.ndarray, confident: float = 0.9) -> np.ndarray:
    """Drop connected object regions with no pixel of probability >= ``confident``.

    Stray false positives are usually lukewarm everywhere; the object has a
    confident core. If no component qualifies the mask is kept as it is.
    """
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    hits = np.zeros(count, bool)
    hits[np.unique(labels[prob >= confident])] = True
    hits[0] = False
    if not hits[1:].any():
        return mask
    return hits[labels]


def mask_to_trimap_u8(mask: np.ndarray, erode_kernel: int, dilate_kernel: int) -> np.ndarray:
    """``[H, W]`` float mask in [0, 1] -> ``[H, W]`` uint8 trimap with values 0 / 128 / 255.

    The same trimap as :func:`icm_cli.core.generate_trimap` (same windows,
    same edge handling; a test holds them equal), computed with OpenCV's
    morphology on uint8, which is an order of magnitude faster on full-size
    masks than float max-pooling.
    """
    foreground = (mask >= 0.5).astype(np.uint8)
    sure = _square_window(cv2.erode, foreground, erode_kernel)
    possible = _square_window(cv2.dilate, foreground, dilate_kernel)
    out = possible * np.uint8(128)
    out[sure == 1] = 255
    return out


def _square_window(op, image: np.ndarray, kernel_size: int) -> np.ndarray:
    window_padding(kernel_size)  # validates it
    kernel_size = cap_kernel(kernel_size, image.shape[:2])
    before, _ = window_padding(kernel_size)
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    return op(image, kernel, anchor=(before, before), borderType=cv2.BORDER_REPLICATE)
