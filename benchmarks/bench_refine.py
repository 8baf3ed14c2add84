"""Does `icm refine` make coarse masks better? Four corruptions of true masks, refined three ways.

    python benchmarks/bench_refine.py [--stride 5] [--sets davis,cows] [--methods decoder,grabcut,attention]

Coarse masks are made from the ground truth of the dev frames (DAVIS dev
every ``--stride``-th frame after frame 0, MSRC cows) with the four
corruptions of issue 20 (:mod:`icm_cli.training.corrupt`):

- blocky: bilinear resize to 1/16 of each side, threshold at half, nearest resize back;
- dilate / erode: a 31x31 square max / min filter;
- shift: 12 px to the right, the vacated strip empty.

Each coarse mask is then refined by ``Predictor.refine`` (the learned
decoder, what ``icm refine`` runs by default), by OpenCV GrabCut initialised
from the same mask (inside = probable object, outside = probable
background, 5 iterations, full resolution) and by ICM's attention vote
(``icm refine --method attention``). Prints the mean IoU with the truth
before and after, per corruption and method, and seconds per image.
Measuring only: skips when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

CORRUPTIONS = ("blocky", "dilate", "erode", "shift")


def corrupted(mask: np.ndarray, kind: str) -> np.ndarray:
    from icm_cli.training import corrupt

    if kind == "blocky":
        return corrupt.blocky(mask, 16)
    if kind == "dilate":
        return corrupt.dilate(mask, 31)
    if kind == "erode":
        return corrupt.erode(mask, 31)
    return corrupt.shift(mask, 12)


def grabcut_from_mask(image: np.ndarray, coarse: np.ndarray, iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut with the coarse mask as its initial labelling (probable object / probable background)."""
    import cv2

    gc = np.where(coarse, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    if coarse.all() or not coarse.any():
        return coarse.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def targets(sets: list[str], stride: int):
    for set_name in sets:
        if set_name == "davis":
            quality.FRAME_STRIDE = stride
        for case, _, items in quality.SETS[set_name]():
            for img_path, gt_path in items:
                yield set_name, case, img_path, gt_path


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="davis,cows")
    ap.add_argument("--stride", type=int, default=5, help="every Nth DAVIS frame")
    ap.add_argument("--methods", default="decoder,grabcut,attention")
    ap.add_argument("--decoder", default="auto", help="the decoder Predictor.refine uses")
    args = ap.parse_args()
    if not quality.DATA.is_dir():
        print(f"skipped: {quality.DATA} not found")
        return 0
    import torch

    from icm_cli import io
    from icm_cli.config import ModelConfig
    from icm_cli.predict.selfattention import refine_mask_with_attention
    from icm_cli.predictor import Predictor

    torch.set_grad_enabled(False)
    methods = args.methods.split(",")
    predictor = Predictor(ModelConfig(device="cpu", decoder=args.decoder))
    net, size = predictor.propagator.backbone, predictor.config.size
    scores = {(s, k, m): [] for s in args.sets.split(",") for k in CORRUPTIONS for m in ["coarse", *methods]}
    seconds = {m: 0.0 for m in methods}
    count = 0
    for set_name, case, img_path, gt_path in targets(args.sets.split(","), args.stride):
        image = io.read_image(img_path)
        truth = io.read_mask(gt_path) >= 0.5
        if not truth.any():
            continue
        count += 1
        for kind in CORRUPTIONS:
            coarse = corrupted(truth, kind)
            scores[(set_name, kind, "coarse")].append(_iou(coarse, truth))
            if not coarse.any():
                for m in methods:
                    scores[(set_name, kind, m)].append(0.0)
                continue
            for m in methods:
                t0 = time.perf_counter()
                if m == "decoder":
                    out = predictor.refine(image, coarse).mask
                elif m == "grabcut":
                    out = grabcut_from_mask(image, coarse)
                else:
                    out, _ = refine_mask_with_attention(net, image, coarse.astype(np.float32), size, 3,
                                                        "classification", predictor.device, torch.float32)
                seconds[m] += time.perf_counter() - t0
                scores[(set_name, kind, m)].append(_iou(out, truth))
        if count % 20 == 0:
            print(f"  {count} images", file=sys.stderr, flush=True)
    print(f"\n{count} images; decoder: {predictor.config.decoder}")
    header = f"{'set':6s} {'corruption':10s} {'coarse':>8s} " + " ".join(f"{m:>10s}" for m in methods)
    print(header)
    for s in args.sets.split(","):
        for k in CORRUPTIONS:
            row = [np.mean(scores[(s, k, m)]) if scores[(s, k, m)] else float("nan") for m in ["coarse", *methods]]
            print(f"{s:6s} {k:10s} " + " ".join(f"{v:8.3f}" if i == 0 else f"{v:10.3f}" for i, v in enumerate(row)))
    per = {m: seconds[m] / max(1, 4 * count) for m in methods}
    print("seconds per refined mask: " + ", ".join(f"{m} {v:.2f}" for m, v in per.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
