"""Matting benchmark on the alphamatting.com development images (GT01-GT08).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_matting.py [--trimaps trimap1]
        [--methods cf,knn,...] [--kernels 5,10,15,20,30] [--skip-e2e] [--skip-large]

1. From the user trimaps: pymatting's ``estimate_alpha_cf`` with default
   settings (the yardstick) vs ``icm_cli.matting.solve_alpha`` defaults, per
   image and mean: L2 norm of (alpha - GT) over the unknown pixels, SAD / 1000
   and MSE over the unknown pixels, seconds. ``--methods`` adds other
   ``solve_alpha`` methods (means only).
2. End to end: GT alpha thresholded at 0.5 -> binary mask -> trimap by
   erosion/dilation with kernel k (``icm_cli.core.generate_trimap``) ->
   ``solve_alpha`` -> SAD and MSE over the *whole* image (comparable across k).
3. An 8 MP image (GT04 upscaled to 3840x2160) through ``solve_alpha`` in a
   child process: seconds and peak resident memory.

Needs ``../shared/data/alphamatting-dev`` next to the repository (or under
``$ICM_SHARED_DATA``, as ``benchmarks/quality.py``); skips with
a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data")) / "alphamatting-dev"
NAMES = [f"GT0{i}" for i in range(1, 9)]


def load(name: str, trimaps: str):
    from icm_cli import io

    image = io.read_image(DATA / "input" / f"{name}.png")
    gt = io.read_trimap(DATA / "gt" / f"{name}.png", io.DEFAULT_MAX_PIXELS)
    trimap = io.read_trimap(DATA / trimaps / f"{name}.png", io.DEFAULT_MAX_PIXELS)
    return image, gt, trimap


def scores(alpha, gt, region):
    from icm_cli import metrics

    return metrics.l2_unknown(alpha, gt, region), metrics.sad(alpha, gt, region), metrics.mse(alpha, gt, region)


def pymatting_cf(image, trimap):
    import warnings

    from pymatting import estimate_alpha_cf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimate_alpha_cf(image.astype(np.float64) / 255.0, trimap.astype(np.float64))


def section_trimaps(trimaps: str, methods: list[str]) -> None:
    from icm_cli.matting import DEFAULT_METHOD, solve_alpha, split_trimap

    print(f"\n## alphamatting dev GT01-GT08 from {trimaps}: pymatting cf defaults vs solve_alpha "
          f"(default method {DEFAULT_METHOD})")
    print("L2 = norm of (alpha - GT) over unknown pixels; SAD/1000 and MSE over unknown pixels\n")
    print("| image | cf L2 | cf SAD | cf MSE | cf s | icm L2 | icm SAD | icm MSE | icm s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    extra = {m: [] for m in methods}
    for name in NAMES:
        image, gt, trimap = load(name, trimaps)
        region = split_trimap(trimap)[2]
        t0 = time.perf_counter()
        a_cf = pymatting_cf(image, trimap)
        t1 = time.perf_counter()
        a_icm = solve_alpha(image, trimap)
        t2 = time.perf_counter()
        row = (*scores(a_cf, gt, region), t1 - t0, *scores(a_icm, gt, region), t2 - t1)
        rows.append(row)
        print(f"| {name} | {row[0]:.1f} | {row[1]:.2f} | {row[2]:.4f} | {row[3]:.1f} "
              f"| {row[4]:.1f} | {row[5]:.2f} | {row[6]:.4f} | {row[7]:.1f} |", flush=True)
        for m in methods:
            t3 = time.perf_counter()
            a = solve_alpha(image, trimap, method=m)
            extra[m].append((*scores(a, gt, region), time.perf_counter() - t3))
    mean = np.mean(rows, axis=0)
    print(f"| **mean** | **{mean[0]:.2f}** | {mean[1]:.2f} | {mean[2]:.4f} | {mean[3]:.1f} "
          f"| **{mean[4]:.2f}** | {mean[5]:.2f} | {mean[6]:.4f} | {mean[7]:.1f} |")
    if methods:
        print("\n| solve_alpha method | " + " | ".join(NAMES) + " | mean L2 | mean SAD | mean MSE | total s |")
        print("|---|" + "---|" * (len(NAMES) + 4))
        for m, vals in extra.items():
            v = np.array(vals)
            print(f"| {m} | " + " | ".join(f"{x:.1f}" for x in v[:, 0])
                  + f" | {v[:, 0].mean():.2f} | {v[:, 1].mean():.2f} | {v[:, 2].mean():.4f} | {v[:, 3].sum():.1f} |")


def section_e2e(kernels: list[int], methods: list[str]) -> None:
    from icm_cli import io, metrics
    from icm_cli.predict.fullres import mask_to_trimap_u8
    from icm_cli.matting import split_trimap, solve_alpha

    print("\n## end to end: GT > 0.5 -> mask -> trimap(kernel k) -> solve_alpha; SAD/1000 and MSE over the whole image\n")
    print("| method | k | " + " | ".join(f"{n} SAD" for n in NAMES) + " | mean SAD | mean MSE | mean band px | s |")
    print("|---|---|" + "---|" * (len(NAMES) + 4))
    for method in methods:
        for k in kernels:
            sads, mses, band = [], [], []
            t0 = time.perf_counter()
            for name in NAMES:
                image, gt, _ = load(name, "trimap1")
                trimap = mask_to_trimap_u8(io.binary_mask(gt).astype(np.float32), k, k).astype(np.float32) / 255.0
                band.append(int(split_trimap(trimap)[2].sum()))
                if method == "pymatting-cf":
                    alpha = pymatting_cf(image, trimap)
                else:
                    alpha = solve_alpha(image, trimap, method=method)
                sads.append(metrics.sad(alpha, gt))
                mses.append(metrics.mse(alpha, gt))
            secs = time.perf_counter() - t0
            print(f"| {method} | {k} | " + " | ".join(f"{s:.2f}" for s in sads)
                  + f" | {np.mean(sads):.2f} | {np.mean(mses):.5f} | {np.mean(band):.0f} | {secs:.1f} |", flush=True)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not
    inherited from the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def large_child() -> None:
    """Runs in a child process: solve an 8 MP image and report JSON on stdout."""
    import cv2

    from icm_cli.matting import solve_alpha

    image, gt, trimap = load("GT04", "trimap1")
    W, H = 3840, 2160
    image = cv2.resize(image, (W, H), interpolation=cv2.INTER_CUBIC)
    trimap = cv2.resize(trimap, (W, H), interpolation=cv2.INTER_NEAREST)
    gt = cv2.resize(gt, (W, H), interpolation=cv2.INTER_LINEAR)
    before = _peak_rss_mb()
    info: dict = {}
    t0 = time.perf_counter()
    alpha = solve_alpha(image, trimap, info=info)
    secs = time.perf_counter() - t0
    from icm_cli.matting import split_trimap

    l2, s, m = scores(alpha, gt, split_trimap(trimap)[2])
    t1 = time.perf_counter()
    from icm_cli.matting import cutout_rgba

    cutout_rgba(image, alpha)
    cut_secs = time.perf_counter() - t1
    print(json.dumps({"seconds": secs, "cutout_seconds": cut_secs, "rss_before_mb": before,
                      "peak_rss_mb": _peak_rss_mb(),
                      "scale": info.get("scale"), "crop": info.get("crop"), "mse": m, "sad": s}))


def section_large() -> None:
    print("\n## 8 MP (GT04 upscaled to 3840x2160, trimap1), default solve_alpha, child process\n")
    out = subprocess.run([sys.executable, __file__, "--large-child"], capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        print("failed:", out.stderr[-2000:])
        return
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"solve {r['seconds']:.1f} s (working scale {r['scale']:.3f}, crop {r['crop']}), "
          f"cut-out {r['cutout_seconds']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
          f"(of which {r['rss_before_mb']:.0f} MB before solving: interpreter, libraries, 8 MP inputs); "
          f"MSE over unknown {r['mse']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trimaps", default="trimap1", choices=["trimap1", "trimap2"])
    parser.add_argument("--methods", default="", help="comma list of extra solve_alpha methods to score")
    parser.add_argument("--kernels", default="5,10,15,20,30")
    parser.add_argument("--e2e-methods", default="sm-cf", help="comma list; 'pymatting-cf' = pymatting defaults")
    parser.add_argument("--skip-trimaps", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--large-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the benchmark data lives outside the repository)")
        return
    if args.large_child:
        large_child()
        return
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}")
    # Compile pymatting's numba kernels before anything is timed.
    from icm_cli.matting import solve_alpha

    warm = np.zeros((24, 24, 3), np.uint8)
    warm[:, 12:] = 200
    tri = np.zeros((24, 24), np.float32)
    tri[:, 10:14] = 0.5
    tri[:, 14:] = 1.0
    solve_alpha(warm, tri)
    pymatting_cf(warm, tri)
    if not args.skip_trimaps:
        section_trimaps(args.trimaps, [m for m in args.methods.split(",") if m])
    if not args.skip_e2e:
        section_e2e([int(k) for k in args.kernels.split(",")], [m for m in args.e2e_methods.split(",") if m])
    if not args.skip_large:
        section_large()


if __name__ == "__main__":
    main()
