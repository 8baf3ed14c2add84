"""Quality of the ONNX Runtime backbone beside torch, on ../shared/data, in the same run.

    python benchmarks/runtime_parity.py [--sets davis,cows,perseg] [--threads 1] [--stride 1] [--part all]
    python benchmarks/runtime_parity.py --part decoder --video 20   # DAVIS as sequences, priors read

``--part all`` (the default) builds the default propagator twice on one set
of weights: everything on torch, and the backbone and the learned decoder on
ONNX Runtime (the cached exports of the same modules, ``--runtime onnx``).
Each case's reference context is built by each, each target predicted by
each (default settings, learned decoder, GrabCut). ``--part decoder`` builds
it once, on torch, and finishes each target's one evidence twice: with the
decoder on torch and on ONNX Runtime (the decoder's share alone). Prints per
sequence / object: J (mean IoU) for torch and ONNX, the difference, and the
share of mask pixels that differ; then the means per set and the largest
|J difference| (the bar: 0.003). Skips when the data is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (the dev sets' cases, as quality.py scores them)


def engines(part: str):
    import torch

    from icm_cli.backbones import create_backbone
    from icm_cli.backbones.onnx_trunk import load_trunk
    from icm_cli.predict.propagator import Propagator

    torch.set_grad_enabled(False)
    on_torch = Propagator(create_backbone("efficientnet-lite0"))
    if part == "decoder":
        return {"torch": on_torch}
    backbone = create_backbone("efficientnet-lite0")
    backbone.trunk = load_trunk(backbone)
    on_onnx = Propagator(backbone)
    note = on_onnx.decoders.use_runtime("onnx")
    if note:
        sys.exit(note)
    return {"torch": on_torch, "onnx": on_onnx}


def predict(prop, image):
    return prop.finish(image, prop.predict_grid([image])[0])[1]


def predict_both(props, image) -> dict:
    """Each runtime's mask of ``image``: with one propagator, its one evidence finished with the decoder
    on torch and on ONNX Runtime."""
    if len(props) == 2:
        return {k: predict(p, image) for k, p in props.items()}
    prop, out = props["torch"], {}
    evidence = prop.predict_grid([image])[0]
    for runtime in ("torch", "onnx"):
        note = prop.decoders.use_runtime(runtime)
        if note:
            sys.exit(note)
        out[runtime] = prop.finish(image, evidence)[1]
    return out


def run_video(frames_per_sequence: int) -> dict:
    """DAVIS as sequences (``--video N``: the first N frames of each): each frame's evidence, with the
    previous frame's mask as the decoder's prior (video's default settings), finished with the decoder on
    torch and on ONNX Runtime (the prior-reading pair both at work); the sequence goes on from torch's mask."""
    from icm_cli import io
    from icm_cli.config import ModelConfig, VideoConfig
    from icm_cli.predictor import Predictor, VideoPredictor

    predictor = Predictor(ModelConfig(device="cpu", runtime="onnx"), reference_cache=False)
    decoders = predictor.propagator.decoders
    if not decoders.reads_priors:
        sys.exit("the decoder reads no priors: nothing for --video to compare")
    rows = {}
    quality.FRAME_STRIDE = 1
    for case, refs, targets in quality.davis_cases():
        predictor.set_references([(io.read_image(r), io.read_mask(m)) for r, m in refs])
        video = VideoPredictor(predictor, VideoConfig())
        acc = {k: [] for k in ("torch", "onnx")}
        differ = total = 0
        for img_path, gt_path in targets[:frames_per_sequence]:
            image, gt = io.read_image(img_path), io.read_mask(gt_path) >= 0.5
            encoded = video.pipeline.encode(image)
            evidence = video.pipeline.predict_encoded(encoded)
            masks = {}
            for runtime in ("torch", "onnx"):
                decoders.use_runtime(runtime)
                masks[runtime] = video.pipeline.finish(image, evidence).mask
                acc[runtime].append(quality._iou(masks[runtime], gt))
            video.pipeline.observe_encoded(encoded, masks["torch"])
            differ += int(np.count_nonzero(masks["torch"] != masks["onnx"]))
            total += masks["torch"].size
        n = len(acc["torch"])
        rows[case] = {"torch": float(np.mean(acc["torch"])), "onnx": float(np.mean(acc["onnx"])),
                      "differ": differ / max(total, 1), "differ_px": differ, "pixels": total, "frames": n}
        r = rows[case]
        print(f"  {case:22s} torch {r['torch']:.4f}  onnx {r['onnx']:.4f}  diff {r['onnx'] - r['torch']:+.4f}  "
              f"pixels differing {100 * r['differ']:.4f}% ({differ})  ({n} frames)", flush=True)
    return rows


def run_set(name, cases, props) -> dict:
    from icm_cli import io

    rows = {}
    for case, refs, targets in cases:
        pairs = [(io.read_image(r), io.read_mask(m)) for r, m in refs]
        for prop in props.values():
            prop.set_references(pairs)
        acc = {k: {"ious": [], "inter": 0, "union": 0} for k in ("torch", "onnx")}
        differ = total = 0
        for img_path, gt_path in targets:
            image = io.read_image(img_path)
            gt = io.read_mask(gt_path) >= 0.5
            masks = predict_both(props, image)
            for k, mask in masks.items():
                acc[k]["ious"].append(quality._iou(mask, gt))
                acc[k]["inter"] += np.logical_and(mask, gt).sum()
                acc[k]["union"] += np.logical_or(mask, gt).sum()
            differ += int(np.count_nonzero(masks["torch"] != masks["onnx"]))
            total += masks["torch"].size
        score = {k: (a["inter"] / max(a["union"], 1)) if name == "perseg" else float(np.mean(a["ious"]))
                 for k, a in acc.items()}
        rows[case] = {**score, "differ": differ / max(total, 1), "differ_px": differ, "pixels": total,
                      "frames": len(targets)}
        r = rows[case]
        print(f"  {case:22s} torch {r['torch']:.4f}  onnx {r['onnx']:.4f}  diff {r['onnx'] - r['torch']:+.4f}  "
              f"pixels differing {100 * r['differ']:.4f}% ({r['differ_px']})  ({r['frames']} targets)", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="davis,cows,perseg")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stride", type=int, default=1, help="score every Nth DAVIS frame (say so when reporting)")
    ap.add_argument("--part", choices=("all", "decoder"), default="all",
                    help="all: backbone and decoder on ONNX Runtime; decoder: the decoder alone")
    ap.add_argument("--video", type=int, default=0, metavar="N",
                    help="--part decoder: DAVIS as sequences, the first N frames of each, priors read")
    args = ap.parse_args()
    quality.FRAME_STRIDE = args.stride
    if not quality.DATA.is_dir():
        print(f"skipped: {quality.DATA} not found (the shared evaluation data is not on this machine)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.video:
        import torch

        torch.set_num_threads(args.threads)
        print(f"the decoder alone, on torch and on ONNX Runtime, DAVIS as sequences (first {args.video} frames)")
        rows = run_video(args.video)
        differ = sum(r["differ_px"] for r in rows.values())
        total = sum(r["pixels"] for r in rows.values())
        big = max(abs(r["onnx"] - r["torch"]) for r in rows.values())
        print(f"  mask pixels differing {100 * differ / max(total, 1):.4f}% ({differ} of {total}); "
              f"largest per-sequence |J diff| {big:.4f}")
        return 0
    props = engines(args.part)
    print(f"comparing on torch and on ONNX Runtime: {'the backbone and the decoder' if args.part == 'all' else 'the decoder alone'}", flush=True)
    worst = 0.0
    t0 = time.perf_counter()
    for name in args.sets.split(","):
        print(f"\n== {name}" + (f" (every {args.stride}th frame)" if name == "davis" and args.stride > 1 else ""),
              flush=True)
        rows = run_set(name, quality.SETS[name](), props)
        t = float(np.mean([r["torch"] for r in rows.values()]))
        o = float(np.mean([r["onnx"] for r in rows.values()]))
        pixels = sum(r["differ"] * r["frames"] for r in rows.values()) / max(sum(r["frames"] for r in rows.values()), 1)
        big = max(abs(r["onnx"] - r["torch"]) for r in rows.values())
        worst = max(worst, big, abs(o - t))
        label = "mIoU" if name == "perseg" else "J"
        print(f"  mean {label}: torch {t:.4f}  onnx {o:.4f}  diff {o - t:+.4f}; largest per-case |diff| {big:.4f}; "
              f"mask pixels differing {100 * pixels:.4f}% ({sum(r['differ_px'] for r in rows.values())} of "
              f"{sum(r['pixels'] for r in rows.values())})", flush=True)
    print(f"\nlargest |J difference| anywhere: {worst:.4f} (bar 0.003: {'met' if worst <= 0.003 else 'NOT met'}); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
