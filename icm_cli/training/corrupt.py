"""Coarse masks made from true ones: the priors a refiner learns to correct.

Each function takes an ``[H, W]`` bool mask and returns a new ``[H, W]`` bool
mask (the input is never changed). :func:`random_corruption` draws one or
two of them with sizes relative to the object, as a quick brush mask, a box
or another tool's output would be wrong; the four fixed ones
(:func:`blocky`, :func:`dilate`, :func:`erode`, :func:`shift`) are also
how the refine benchmark makes its coarse masks.
"""

from __future__ import annotations

import cv2
import numpy as np


def blocky(mask: np.ndarray, factor: int = 16) -> np.ndarray:
    """Bilinear resize to ``1/factor`` of each side, threshold at half, nearest resize back."""
    h, w = mask.shape
    small = cv2.resize(mask.astype(np.float32), (max(1, round(w / factor)), max(1, round(h / factor))),
                       interpolation=cv2.INTER_LINEAR)
    return cv2.resize((small >= 0.5).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def dilate(mask: np.ndarray, size: int = 31) -> np.ndarray:
    """A ``size`` x ``size`` square max filter."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def erode(mask: np.ndarray, size: int = 31) -> np.ndarray:
    """A ``size`` x ``size`` square min filter (outside the image counts as object, as in a max filter's dual)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((size, size), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)


def shift(mask: np.ndarray, dx: int = 12, dy: int = 0) -> np.ndarray:
    """Moved ``dx`` pixels right and ``dy`` down; the vacated strips are empty."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    src = mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def filled_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """The object's bounding box, grown by ``margin`` of its size on each side, filled."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask, dtype=bool)
    if len(ys) == 0:
        return out
    h, w = mask.shape
    my, mx = margin * (ys.max() - ys.min() + 1), margin * (xs.max() - xs.min() + 1)
    out[max(0, int(ys.min() - my)):min(h, int(ys.max() + my) + 1),
        max(0, int(xs.min() - mx)):min(w, int(xs.max() + mx) + 1)] = True
    return out


def convex_polygon(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of the object (a quick polygon around it)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, np.uint8)
    if len(ys) < 3:
        return mask.copy()
    hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


def _blob(shape: tuple[int, int], center: tuple[int, int], radius: float, rng: np.random.Generator) -> np.ndarray:
    """A random ellipse of about ``radius``."""
    out = np.zeros(shape, np.uint8)
    axes = (max(1, int(radius * rng.uniform(0.5, 1.5))), max(1, int(radius * rng.uniform(0.5, 1.5))))
    cv2.ellipse(out, (int(center[1]), int(center[0])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return out.astype(bool)


def _object_radius(mask: np.ndarray) -> float:
    return max(2.0, float(np.sqrt(mask.sum() / np.pi)))


def add_blobs(mask: np.ndarray, rng: np.random.Generator, count: int = 2) -> np.ndarray:
    """Spurious regions: ellipses of up to half the object's size, touching it or anywhere."""
    out = mask.copy()
    r = _object_radius(mask)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    for _ in range(count):
        if len(ys) and rng.random() < 0.5:  # on the object's edge: a bleed into the background
            i = rng.integers(len(ys))
            center = (ys[i], xs[i])
        else:
            center = (rng.integers(h), rng.integers(w))
        out |= _blob(mask.shape, center, r * rng.uniform(0.15, 0.5), rng)
    return out


def remove_blobs(mask: np.ndarray, rng: np.random.Generator, count: int = 2) -> np.ndarray:
    """Missing parts: ellipses of up to half the object's size cut out of it (holes or bites)."""
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return out
    r = _object_radius(mask)
    for _ in range(count):
        i = rng.integers(len(ys))
        out &= ~_blob(mask.shape, (ys[i], xs[i]), r * rng.uniform(0.1, 0.45), rng)
    return out


def random_corruption(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or two corruptions drawn at random, sized relative to the object (see the module docstring).

    An object that a corruption would erase entirely keeps its blocky version instead."""
    r = _object_radius(mask)
    h, w = mask.shape
    kinds = ("blocky", "dilate", "erode", "shift", "add", "remove", "box", "polygon")
    out = mask
    for kind in rng.choice(kinds, size=1 + int(rng.random() < 0.4), replace=False):
        if kind == "blocky":
            out = blocky(out, int(rng.choice([4, 8, 16, 32])))
        elif kind == "dilate":
            out = dilate(out, 2 * max(1, int(r * rng.uniform(0.05, 0.4))) + 1)
        elif kind == "erode":
            out = erode(out, 2 * max(1, int(r * rng.uniform(0.05, 0.35))) + 1)
        elif kind == "shift":
            scale = r * rng.uniform(0.05, 0.4)
            out = shift(out, int(scale * rng.normal()), int(scale * rng.normal()))
        elif kind == "add":
            out = add_blobs(out, rng, int(rng.integers(1, 4)))
        elif kind == "remove":
            out = remove_blobs(out, rng, int(rng.integers(1, 4)))
        elif kind == "box":
            out = filled_box(out, float(rng.uniform(0.0, 0.15)))
        else:
            out = convex_polygon(out)
    if not out.any() and mask.any():
        out = blocky(mask, 8)
        if not out.any():
            out = mask.copy()
    return out.astype(bool)
