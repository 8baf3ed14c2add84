"""Quality measures for masks and alpha mattes (numpy only, no files).

Masks: region similarity :func:`iou` (J) and the boundary F-measure
:func:`boundary_f` (F) of the DAVIS benchmark (Perazzi et al. 2016).
Alpha mattes: :func:`sad`, :func:`mse`, :func:`gradient_error` and
:func:`connectivity_error` of the alphamatting.com benchmark (Rhemann et al.
2009), and :func:`l2_unknown`, the L2 norm that alphamatting.com-style
comparisons quote. SAD, gradient and connectivity errors are divided by 1000
as is customary.

Alpha arguments are ``[H, W]`` floats in [0, 1]; uint8 arrays are read as
0-255 and scaled. ``region`` arguments are ``[H, W]`` bool masks of the
pixels to score (usually the trimap's unknown band); ``None`` scores all.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional

import cv2
import numpy as np

from icm_cli.errors import ArrayError, SettingError


class BoundaryScore(NamedTuple):
    """Boundary precision, recall and F-measure, each in [0, 1]."""

    precision: float
    recall: float
    f: float


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ArrayError(f"{name} must be [H, W], got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    top = 255 if mask.dtype == np.uint8 and mask.max() > 1 else 1
    return mask.astype(np.int64) * 2 >= top


def _as_alpha(alpha: np.ndarray, name: str) -> np.ndarray:
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise ArrayError(f"{name} must be [H, W], got shape {alpha.shape}")
    if alpha.dtype == np.uint8:
        return alpha.astype(np.float64) / 255.0
    if alpha.dtype == np.uint16:
        return alpha.astype(np.float64) / 65535.0
    return alpha.astype(np.float64)


def _pair(a: np.ndarray, b: np.ndarray, convert, region: Optional[np.ndarray] = None):
    a, b = convert(a, "pred"), convert(b, "gt")
    if a.shape != b.shape:
        raise ArrayError(f"prediction {a.shape} and ground truth {b.shape} differ in size")
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != a.shape:
            raise ArrayError(f"region {region.shape} and images {a.shape} differ in size")
    return a, b, region


# ----------------------------------------------------------------------- masks

def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union (Jaccard index J) of two ``[H, W]`` masks.

    Non-bool masks are thresholded at half range. Two empty masks agree
    perfectly: 1.0.
    """
    p, g, _ = _pair(pred, gt, _as_bool)
    union = np.logical_or(p, g).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, g).sum() / union)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool -> ``[H, W]`` bool: object pixels with a 4-neighbour outside the object.

    The image border is not a boundary (an object cut by the frame has no
    edge there).
    """
    m = _as_bool(mask, "mask")
    padded = np.pad(m, 1, mode="edge")
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return m & ~inner


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: Optional[float] = None) -> BoundaryScore:
    """DAVIS boundary F-measure of two ``[H, W]`` masks.

    Boundaries (:func:`mask_boundary`) are matched within ``tolerance``:
    pixels if >= 1, else a fraction of the image diagonal (default 0.008),
    by dilating the other boundary with a disk of that radius. Precision =
    share of predicted boundary pixels near a true one; recall = share of
    true boundary pixels near a predicted one; F = 2PR / (P + R). Both
    boundaries empty: (1, 1, 1); one empty: P or R is 0.
    Returns :class:`BoundaryScore` ``(precision, recall, f)``.
    """
    p, g, _ = _pair(pred, gt, _as_bool)
    if tolerance is None:
        tolerance = 0.008
    if tolerance < 0:
        raise SettingError(f"tolerance must be >= 0, got {tolerance}")
    radius = int(round(tolerance)) if tolerance >= 1 else int(math.ceil(tolerance * math.hypot(*p.shape)))
    pb, gb = mask_boundary(p), mask_boundary(g)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return BoundaryScore(1.0, 1.0, 1.0)
    if radius > 0:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        gd = cv2.dilate(gb.astype(np.uint8), disk).astype(bool)
        pd = cv2.dilate(pb.astype(np.uint8), disk).astype(bool)
    else:
        gd, pd = gb, pb
    precision = float((pb & gd).sum() / n_p) if n_p else 1.0
    recall = float((gb & pd).sum() / n_g) if n_g else 1.0
    if n_p == 0:
        recall = 0.0
    if n_g == 0:
        precision = 0.0
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return BoundaryScore(precision, recall, float(f))


# ----------------------------------------------------------------------- alpha

def sad(pred: np.ndarray, gt: np.ndarray, region: Optional[np.ndarray] = None) -> float:
    """Sum of absolute differences over ``region`` (alpha in [0, 1]), divided by 1000."""
    p, g, r = _pair(pred, gt, _as_alpha, region)
    d = np.abs(p - g)
    return float((d[r] if r is not None else d).sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, region: Optional[np.ndarray] = None) -> float:
    """Mean squared difference over ``region`` (alpha in [0, 1]); 0.0 for an empty region."""
    p, g, r = _pair(pred, gt, _as_alpha, region)
    d = (p - g) ** 2
    d = d[r] if r is not None else d.ravel()
    return float(d.mean()) if d.size else 0.0


def l2_unknown(pred: np.ndarray, gt: np.ndarray, unknown_mask: np.ndarray) -> float:
    """L2 norm of ``pred - gt`` over the unknown pixels (alpha in [0, 1]): ``sqrt(sum d^2)``."""
    p, g, r = _pair(pred, gt, _as_alpha, unknown_mask)
    return float(np.sqrt(((p - g)[r] ** 2).sum()))


def _gaussian_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """1-D Gaussian (sum 1) and first-derivative-of-Gaussian *correlation* kernels.

    The derivative kernel is scaled so that its response to a unit ramp is
    exactly 1, so gradient magnitudes are in alpha units per pixel.
    """
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    d = x * g  # correlation: out[i] = sum_j d[j] * f[i + j]
    d /= np.sum(d * x)
    return g, d


def gradient_magnitude(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    """``[H, W]`` -> ``[H, W]``: length of the Gaussian-derivative gradient (alpha units per pixel)."""
    a = _as_alpha(alpha, "alpha")
    g, d = _gaussian_kernels(sigma)
    gx = cv2.sepFilter2D(a, cv2.CV_64F, d, g, borderType=cv2.BORDER_REFLECT)
    gy = cv2.sepFilter2D(a, cv2.CV_64F, g, d, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(gx ** 2 + gy ** 2)


def gradient_error(pred: np.ndarray, gt: np.ndarray, region: Optional[np.ndarray] = None,
                   sigma: float = 1.4) -> float:
    """Rhemann et al. gradient error: sum over ``region`` of the squared difference of
    gradient magnitudes (first-order Gaussian derivatives, ``sigma`` 1.4), / 1000."""
    p, g, r = _pair(pred, gt, _as_alpha, region)
    d = (gradient_magnitude(p, sigma) - gradient_magnitude(g, sigma)) ** 2
    return float((d[r] if r is not None else d).sum() / 1000.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def connectivity_error(pred: np.ndarray, gt: np.ndarray, region: Optional[np.ndarray] = None,
                       step: float = 0.1, theta: float = 0.15) -> float:
    """Rhemann et al. connectivity error, divided by 1000.

    For thresholds ``t = step, 2*step, ..., 1`` the source region is the
    largest 4-connected component of pixels where *both* alphas are >= t.
    ``l_i`` is the last threshold at which pixel i still belonged to it
    (``t - step`` at the first t where it does not; 1 if it always does).
    With ``d = alpha - l``, the degree of connectivity is
    ``phi = 1 - d * [d >= theta]``, and the error is the sum over ``region``
    of ``|phi(pred) - phi(gt)|``.
    """
    p, g, r = _pair(pred, gt, _as_alpha, region)
    levels = int(round(1.0 / step))
    last = np.full(p.shape, -1.0)
    for k in range(1, levels + 1):
        t = k * step
        component = _largest_component((p >= t - 1e-9) & (g >= t - 1e-9))
        dropped = (last == -1.0) & ~component
        last[dropped] = t - step
    last[last == -1.0] = 1.0
    dp, dg = p - last, g - last
    phi_p = 1.0 - dp * (dp >= theta)
    phi_g = 1.0 - dg * (dg >= theta)
    d = np.abs(phi_p - phi_g)
    return float((d[r] if r is not None else d).sum() / 1000.0)


def temporal_stability(masks: Iterable[np.ndarray]) -> float:
    """Mean IoU of each ``[H, W]`` bool mask with the one before it (frame order).

    1.0 for a sequence that never changes; NaN for fewer than two masks
    that can be compared. Two consecutive masks of different sizes (a cut,
    or a resized frame) are not compared. Compare a prediction's value with
    the ground truth's: flicker shows as a prediction less stable than the truth.
    """
    previous, scores = None, []
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        if previous is not None and previous.shape == mask.shape:
            scores.append(iou(mask, previous))
        previous = mask
    return float(np.mean(scores)) if scores else float("nan")
