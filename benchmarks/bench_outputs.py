"""What each output of ``icm propagate`` costs per 854x480 image: rendering, and encoding + writing.

Run:  python benchmarks/bench_outputs.py  [--repeats N] [--image PATH]

One thread (OpenCV told so here; the library never is), median of
``--repeats`` timed calls after a warm-up, the old and the new form of each
step alternating in the same run so that both see the same machine load:

- render: the array written for each kind from one source's result
  (``OutputPlan.render``'s steps: the 0/255 mask, the 0/128/255 trimap, the
  heat-map overlay); "before" is the overlay's earlier float32 formula,
  written out here.
- write: ``io.write_image_atomic`` (PNG through OpenCV, one fixed row filter,
  zlib level 1, temporary file + rename) against the earlier writer (Pillow,
  ``compress_level=1``, which tries every row filter; same temporary file +
  rename). Both files are decoded again and must hold exactly the array.

The image is the first blackswan frame of DAVIS 2016 when ``../shared/data``
has it, else a seeded synthetic picture; the mask and probability are a
smooth synthetic blob (the writes' cost depends on the picture and the shape
of the mask, not on how good the mask is). ``alpha`` and ``cutout``
(``--save alpha,cutout``) are timed for the write only, on a blurred blob.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from icm_cli import atomic, io, render
from icm_cli.predict.fullres import mask_to_trimap_u8

DAVIS_FRAME = Path(__file__).resolve().parents[2] / "shared/data/davis2016-dev/JPEGImages/blackswan/00000.jpg"
SIZE = (480, 854)  # H, W of a DAVIS 480p frame


def old_overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The overlay as icm computed it before: float32 passes over the full image."""
    grey = image[..., 0].astype(np.float32)
    grey += image[..., 1]
    grey += image[..., 2]
    grey /= np.float32(3.0)
    grey *= np.float32(1.0 - opacity)
    mixed = render.colorize(heat).astype(np.float32)
    mixed *= np.float32(opacity)
    mixed += grey[..., None]
    mixed += np.float32(0.5)
    np.clip(mixed, 0, 255, out=mixed)
    return mixed.astype(np.uint8)


def old_write(path: Path, array: np.ndarray) -> None:
    """The PNG writer as icm had it before: Pillow at ``compress_level=1`` into a temporary file + rename."""
    with atomic.atomic_file(path) as fh:
        Image.fromarray(np.ascontiguousarray(array)).save(fh, format="PNG", compress_level=1)


def inputs(image_path: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(image, probability, where the image came from)`` at 854x480."""
    path = image_path or (DAVIS_FRAME if DAVIS_FRAME.exists() else None)
    if path is not None:
        image = io.read_image(path)
        if image.shape[:2] != SIZE:
            image = cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA)
        source = str(path)
    else:
        rng = np.random.default_rng(0)
        coarse = rng.uniform(0, 255, (12, 20, 3)).astype(np.float32)
        image = cv2.resize(coarse, SIZE[::-1], interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        source = "synthetic (seeded)"
    h, w = SIZE
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    blob = ((xx - 0.49 * w) / (0.23 * w)) ** 2 + ((yy - 0.5 * h) / (0.25 * h)) ** 2
    wobble = 0.15 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    probability = (1.0 / (1.0 + np.exp(8.0 * (blob + wobble - 1.0)))).astype(np.float32)
    return image, probability, source


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per step (median reported)")
    parser.add_argument("--image", type=Path, help="a picture to use instead of the DAVIS frame")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    image, probability, source = inputs(args.image)
    mask = probability >= 0.5
    alpha = (np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 3.0), 0, 1) * 255 + 0.5).astype(np.uint8)
    cutout = np.concatenate([image * (alpha[..., None] > 0), alpha[..., None]], axis=2).astype(np.uint8)

    renders = {
        "masks": (lambda: mask.astype(np.uint8) * 255, None),
        "trimaps": (lambda: mask_to_trimap_u8(mask.astype(np.float32), 20, 20), None),
        "heatmaps": (lambda: render.overlay(image, probability), lambda: old_overlay(image, probability)),
    }
    arrays = {kind: new() for kind, (new, _) in renders.items()}
    assert np.array_equal(arrays["heatmaps"], old_overlay(image, probability)), "overlay pixels changed"
    arrays["alpha"], arrays["cutout"] = alpha, cutout

    load = os.getloadavg()
    print(f"image: {source}, {image.shape[1]}x{image.shape[0]}; one thread; median of {args.repeats}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'kind':<9} {'render before':>13} {'render now':>10}   {'write before':>12} {'write now':>9}   "
          f"{'KiB before':>10} {'KiB now':>7}")
    totals = [0.0, 0.0, 0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, array in arrays.items():
            new_render, old_render = renders.get(kind, (None, None))
            r_new = median_ms(new_render, args.repeats) if new_render else float("nan")
            r_old = median_ms(old_render, args.repeats) if old_render else r_new
            old_path, new_path = folder / f"{kind}-before.png", folder / f"{kind}-now.png"
            w_old = median_ms(lambda: old_write(old_path, array), args.repeats)
            w_new = median_ms(lambda: io.write_image_atomic(new_path, array), args.repeats)
            for path in (old_path, new_path):
                assert np.array_equal(decoded(path), array), f"{path.name} does not decode to the array"
            if kind in renders:
                totals = [t + v for t, v in zip(totals, (r_old, r_new, w_old, w_new))]
            fmt = lambda v: "-" if v != v else f"{v:.2f}"  # noqa: E731
            print(f"{kind:<9} {fmt(r_old if kind in renders else float('nan')):>13} {fmt(r_new):>10}   "
                  f"{w_old:>12.2f} {w_new:>9.2f}   {old_path.stat().st_size / 1024:>10.0f} "
                  f"{new_path.stat().st_size / 1024:>7.0f}")
    print(f"{'default':<9} {totals[0]:>13.2f} {totals[1]:>10.2f}   {totals[2]:>12.2f} {totals[3]:>9.2f}   "
          "(masks + trimaps + heatmaps, ms per image)")
    print(f"default outputs: {totals[0] + totals[2]:.1f} ms before, {totals[1] + totals[3]:.1f} ms now per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
