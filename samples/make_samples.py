#!/usr/bin/env python
"""Generate the tiny demo set in ``samples/demo/`` for ``icm propagate``.

Images used (all ship inside the scikit-image wheel, ``skimage/data/``; the
licence lines are quoted from the ``skimage.data.<name>`` docstrings):

* ``coffee.png``    - espresso cup on a saucer, "No copyright restrictions.
  CC0 by the photographer (Rachel Michetti)."  -> the object (reference).
* ``brick.png``     - brick wall, "licensed under the Creative Commons CC0
  License" (from CC0Textures).                 -> background, tinted.
* ``grass.png``     - grass, "licensed under the Creative Commons CC0
  License" (from DeviantArt user linolafett).  -> background, tinted.
* ``gravel.png``    - gravel, "licensed under the Creative Commons CC0
  License" (from CC0Textures).                 -> background, tinted.
* ``astronaut.png`` - Eileen Collins, NASA, "No known copyright restrictions,
  released into the public domain."            -> background.
* ``rocket.jpg``    - DSCOVR launch on Falcon 9 by SpaceX, "released in the
  public domain".                              -> background and occluder.
* ``chelsea.png``   - Chelsea the cat, "No copyright restrictions. CC0 by the
  photographer (Stefan van der Walt)."         -> background.

What it does:

1. Builds the object mask of the cup (cup + saucer + spoon) ourselves: a
   hand-placed polygon, refined with OpenCV GrabCut (polygon interior eroded =
   sure foreground, polygon interior = probable foreground, a ring outside it
   = probable background, the rest = sure background), then cleaned (largest
   connected component, holes filled, light morphological smoothing).
2. Writes ``demo/reference.jpg`` (450x300, JPEG q85) and
   ``demo/reference_mask.png`` (L, 0/255).
3. Composites the cut-out (slightly feathered alpha, soft drop shadow) onto
   backgrounds made from the other images above - moved, scaled (0.6-1.3x the
   reference size), flipped, recoloured a little, partly occluded, partly cut
   by the frame - and writes ``demo/sources/NN_description.jpg`` and the
   ground-truth masks ``demo/truth/NN_description.png`` (L, 0/255).

Re-running it reproduces the committed files (everything is fixed or seeded;
byte-identical output assumes the same scikit-image / OpenCV / Pillow builds).

    pip install scikit-image      # only needed to run this script
    python samples/make_samples.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

try:
    import skimage.data as skdata
except ImportError:  # pragma: no cover - message for humans
    sys.exit("make_samples.py needs scikit-image: pip install scikit-image")

HERE = Path(__file__).resolve().parent
DEMO = HERE / "demo"
SEED = 20240607
JPEG_QUALITY = 85
FULL_W = 600           # coffee.png is 600x400
REF_SIZE = (450, 300)  # (w, h) of reference.jpg

# Hand-placed outline of cup + saucer + spoon in coffee.png (600x400) pixels,
# read off a gridded view of the photo: the saucer and the cup rim are
# ellipses ((cx, cy), (semi-axis x, semi-axis y)), the spoon handle that pokes
# out above the saucer is a polygon. GrabCut snaps their union to the edges.
SAUCER_ELLIPSE = ((278, 217), (201, 171))
CUP_RIM_ELLIPSE = ((290, 111), (118, 92))
SPOON_POLYGON = [(398, 75), (404, 66), (414, 63), (423, 68), (424, 80),
                 (418, 104), (412, 125), (400, 125)]


# --------------------------------------------------------------------------
# reference mask
# --------------------------------------------------------------------------
def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected component and fill its holes."""
    m = (mask > 0).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return m * 255
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    m = (lab == keep).astype(np.uint8)
    # fill holes: flood the background from a padded border, invert
    pad = np.pad(m, 1)
    flood = pad.copy()
    ff = np.zeros((pad.shape[0] + 2, pad.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return ((m > 0) | holes).astype(np.uint8) * 255


BAND = 5  # px either side of the hand outline that GrabCut may move


def hand_outline(shape) -> np.ndarray:
    """The hand-placed shapes rasterised: uint8 0/1 of ``shape`` (h, w)."""
    poly = np.zeros(shape, np.uint8)
    for centre, axes in (SAUCER_ELLIPSE, CUP_RIM_ELLIPSE):
        cv2.ellipse(poly, centre, axes, 0, 0, 360, 1, -1)
    cv2.fillPoly(poly, [np.array(SPOON_POLYGON, np.int32)], 1)
    return poly


def make_object_mask(img: np.ndarray) -> np.ndarray:
    """GrabCut-refined mask (0/255) of the cup in ``img`` (RGB uint8)."""
    h, w = img.shape[:2]
    poly = hand_outline((h, w))
    k = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    sure_fg = cv2.erode(poly, k(BAND))
    ring = cv2.dilate(poly, k(BAND))

    gc = np.full((h, w), cv2.GC_BGD, np.uint8)
    gc[ring > 0] = cv2.GC_PR_BGD
    gc[poly > 0] = cv2.GC_PR_FGD
    gc[sure_fg > 0] = cv2.GC_FGD

    cv2.setRNGSeed(SEED)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, gc, None, bgd, fgd, 8, cv2.GC_INIT_WITH_MASK)
    m = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255

    # clean: smooth jaggies, single component, no holes
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k(2))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k(3))
    m = _largest_component_filled(m)
    m = cv2.GaussianBlur(m, (0, 0), 1.0)
    return np.where(m >= 128, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------
# compositing helpers
# --------------------------------------------------------------------------
def tint_gray(gray: np.ndarray, rgb_lo, rgb_hi) -> np.ndarray:
    """Map a grayscale texture onto a colour ramp from rgb_lo to rgb_hi."""
    t = (gray.astype(np.float32) / 255.0)[..., None]
    lo = np.array(rgb_lo, np.float32)
    hi = np.array(rgb_hi, np.float32)
    return np.clip(lo + t * (hi - lo), 0, 255).astype(np.uint8)


def resize(img: np.ndarray, size, interp=cv2.INTER_AREA) -> np.ndarray:
    return cv2.resize(img, (int(size[0]), int(size[1])), interpolation=interp)


def fit_crop(img: np.ndarray, size, box=None) -> np.ndarray:
    """Crop ``box`` = (x0, y0, x1, y1) (default: all) and resize to ``size``."""
    if box is not None:
        x0, y0, x1, y1 = box
        img = img[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if img.shape[1] >= size[0] else cv2.INTER_CUBIC
    return resize(img, size, interp)


def recolour(rgb: np.ndarray, hue_deg: float = 0.0, sat: float = 1.0,
             bright: float = 1.0) -> np.ndarray:
    """Small hue rotation / saturation / brightness change."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue_deg / 2.0) % 180.0  # OpenCV hue: 0..180
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * bright, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@dataclass
class Source:
    name: str
    background: np.ndarray        # RGB uint8, final size
    scale: float                  # object size relative to the reference
    centre: tuple                 # object centre in the source (x, y)
    flip: bool = False
    hue: float = 0.0              # degrees
    sat: float = 1.0
    bright: float = 1.0
    occluder: tuple | None = None  # (patch RGB, (x, y) top-left, alpha 0..1)


def composite(obj: np.ndarray, obj_mask: np.ndarray, s: Source, rng) -> tuple:
    """Paste the object onto ``s.background``; return (image, truth mask)."""
    bg = s.background.astype(np.float32)
    H, W = bg.shape[:2]
    # object pixels come from the full-res photo (FULL_W wide); ``scale`` is
    # relative to the object's size in reference.jpg (REF_SIZE[0] wide)
    f = s.scale * REF_SIZE[0] / FULL_W
    ow, oh = round(obj.shape[1] * f), round(obj.shape[0] * f)
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    o = resize(obj, (ow, oh), interp)
    a = resize(obj_mask, (ow, oh), cv2.INTER_LINEAR).astype(np.float32) / 255.0
    if s.flip:
        o, a = o[:, ::-1], a[:, ::-1]
    o = recolour(np.ascontiguousarray(o), s.hue, s.sat, s.bright)
    hard = (a >= 0.5).astype(np.float32)
    soft = cv2.GaussianBlur(hard, (0, 0), 0.8)  # slightly feathered edge

    # place on a canvas the size of the background (object may leave the frame)
    x0 = int(round(s.centre[0] - ow / 2))
    y0 = int(round(s.centre[1] - oh / 2))
    canvas = np.zeros((H, W, 3), np.float32)
    alpha = np.zeros((H, W), np.float32)
    truth = np.zeros((H, W), np.float32)
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    cw = min(ow - sx0, W - dx0)
    ch = min(oh - sy0, H - dy0)
    canvas[dy0:dy0 + ch, dx0:dx0 + cw] = o[sy0:sy0 + ch, sx0:sx0 + cw]
    alpha[dy0:dy0 + ch, dx0:dx0 + cw] = soft[sy0:sy0 + ch, sx0:sx0 + cw]
    truth[dy0:dy0 + ch, dx0:dx0 + cw] = hard[sy0:sy0 + ch, sx0:sx0 + cw]

    # soft contact shadow, offset down-right, darkens the background only
    sh = cv2.GaussianBlur(alpha, (0, 0), 6.0 * max(s.scale, 0.5))
    M = np.float32([[1, 0, 5 * s.scale], [0, 1, 8 * s.scale]])
    sh = cv2.warpAffine(sh, M, (W, H))
    bg = bg * (1.0 - 0.45 * sh[..., None])

    out = bg * (1.0 - alpha[..., None]) + canvas * alpha[..., None]

    if s.occluder is not None:
        patch, (px, py), pa = s.occluder
        ph, pw = patch.shape[:2]
        # rounded-corner patch with a soft edge and its own little shadow
        pm = np.zeros((ph, pw), np.uint8)
        r = max(4, min(ph, pw) // 8)
        cv2.rectangle(pm, (r, 0), (pw - 1 - r, ph - 1), 255, -1)
        cv2.rectangle(pm, (0, r), (pw - 1, ph - 1 - r), 255, -1)
        for cx, cy in ((r, r), (pw - 1 - r, r), (r, ph - 1 - r), (pw - 1 - r, ph - 1 - r)):
            cv2.circle(pm, (cx, cy), r, 255, -1)
        pmf = cv2.GaussianBlur(pm.astype(np.float32) / 255.0, (0, 0), 0.8) * pa
        full = np.zeros((H, W), np.float32)
        full[py:py + ph, px:px + pw] = pmf[: H - py, : W - px]
        img_p = np.zeros((H, W, 3), np.float32)
        img_p[py:py + ph, px:px + pw] = patch[: H - py, : W - px]
        osh = cv2.warpAffine(cv2.GaussianBlur(full, (0, 0), 5.0),
                             np.float32([[1, 0, 6], [0, 1, 8]]), (W, H))
        out = out * (1.0 - 0.4 * osh[..., None] * (1.0 - full[..., None]))
        out = out * (1.0 - full[..., None]) + img_p * full[..., None]
        truth = truth * (full < 0.5)

    # a touch of sensor noise so the paste is not perfectly clean
    out = out + rng.normal(0.0, 2.0, out.shape).astype(np.float32)
    img = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return img, (truth >= 0.5).astype(np.uint8) * 255


def save_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)


def save_mask(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m.astype(np.uint8), "L").save(path, optimize=True)


# --------------------------------------------------------------------------
def main() -> None:
    rng = np.random.default_rng(SEED)
    coffee = skdata.coffee()          # (400, 600, 3)
    mask_full = make_object_mask(coffee)

    # reference: the whole photo at 450x300, mask resized with it
    ref = resize(coffee, REF_SIZE)
    ref_mask = resize(mask_full, REF_SIZE, cv2.INTER_LINEAR)
    ref_mask = np.where(ref_mask >= 128, 255, 0).astype(np.uint8)
    save_jpg(DEMO / "reference.jpg", ref)
    save_mask(DEMO / "reference_mask.png", ref_mask)

    # tight cut-out of the object from the full-res photo
    ys, xs = np.nonzero(mask_full)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    obj = coffee[y0:y1, x0:x1]
    obj_mask = mask_full[y0:y1, x0:x1]

    # the brick texture ships rotated by 90 degrees; turn it back to courses
    brick = tint_gray(np.rot90(skdata.brick()), (96, 74, 60), (232, 214, 188))
    grass = tint_gray(skdata.grass(), (18, 48, 10), (150, 200, 90))
    gravel = tint_gray(skdata.gravel(), (55, 52, 48), (205, 198, 186))
    astronaut = skdata.astronaut()    # (512, 512, 3)
    rocket = skdata.rocket()          # (427, 640, 3)
    chelsea = skdata.chelsea()        # (300, 451, 3)

    occ_patch = fit_crop(rocket, (110, 150), (30, 170, 140, 320))  # tower + sky

    # object in reference.jpg is ~300x285 px; scale is relative to that
    sources = [
        Source("01_moved_brick", fit_crop(brick, (560, 420), (0, 64, 512, 448)),
               scale=0.9, centre=(190, 215)),
        Source("02_flipped_small_grass", fit_crop(grass, (600, 450), (0, 0, 512, 384)),
               scale=0.6, centre=(420, 150), flip=True, hue=6, bright=1.08),
        Source("03_large_darker_gravel", fit_crop(gravel, (600, 450), (0, 64, 512, 448)),
               scale=1.25, centre=(320, 232), bright=0.82, sat=0.9),
        Source("04_occluded_astronaut", fit_crop(astronaut, (512, 512)),
               scale=0.8, centre=(360, 380), hue=-5,
               occluder=(occ_patch, (396, 286), 1.0)),
        Source("05_recoloured_rocket", fit_crop(rocket, (640, 427)),
               scale=0.7, centre=(150, 290), flip=True, hue=10, sat=1.15, bright=1.12),
        Source("06_cut_by_frame_cat", fit_crop(chelsea, (600, 400)),
               scale=1.1, centre=(520, 290), hue=-8, bright=0.95),
    ]

    for s in sources:
        img, truth = composite(obj, obj_mask, s, rng)
        save_jpg(DEMO / "sources" / f"{s.name}.jpg", img)
        save_mask(DEMO / "truth" / f"{s.name}.png", truth)

    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote {DEMO} ({len(sources)} sources); samples/ is {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
