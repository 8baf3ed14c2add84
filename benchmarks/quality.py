"""Quality on ../shared/data: DAVIS-2016 dev (J, F), MSRC cows dev (mIoU), PerSeg (mIoU).

    python benchmarks/quality.py [--sets davis,cows,perseg] [--set key=value ...]

Runs icm's engine with its default settings (or overrides such as
``--set head_steps=0``) and prints per-sequence / per-object figures and the
means. With ``--baseline`` the yardstick in ../shared/baseline is run on the
same data in the same run. Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


FRAME_STRIDE = 1  # --stride N scores every Nth DAVIS frame (quick screening only)


def davis_cases():
    root = DATA / "davis2016-dev"
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):
        frames = sorted((root / "JPEGImages" / seq).glob("*.jpg"))
        annos = [root / "Annotations" / seq / f"{f.stem}.png" for f in frames]
        yield seq, [(frames[0], annos[0])], list(zip(frames[1:], annos[1:]))[FRAME_STRIDE - 1::FRAME_STRIDE]


COWS_REFS = 1  # --cows-refs N: each cow plus the next N-1 (cyclically) form one context
COWS_HOLDOUT = 1  # --cows-holdout N: the next N-1 cows are not scored (same targets for 1 vs N refs)


def cows_cases():
    root = DATA / "msrc-cows-dev"
    images = sorted((root / "images").glob("*.bmp"))
    for i, ref in enumerate(images):
        refs = [images[(i + j) % len(images)] for j in range(COWS_REFS)]
        held = [images[(i + j) % len(images)] for j in range(max(COWS_REFS, COWS_HOLDOUT))]
        others = [p for p in images if p not in held]
        yield ref.stem, [(r, root / "masks" / r.name) for r in refs], [(p, root / "masks" / p.name) for p in others]


def perseg_cases():
    root = DATA / "perseg-examples"
    objects = sorted({p.stem.rsplit("_", 1)[0] for p in root.glob("*_00.jpg")})
    for obj in objects:
        imgs = sorted(root.glob(f"{obj}_*.jpg"))
        yield obj, [(imgs[0], imgs[0].with_suffix(".png"))], [(p, p.with_suffix(".png")) for p in imgs[1:]]


def demo_cases():
    root = ROOT / "samples" / "demo"
    srcs = sorted((root / "sources").glob("*.jpg"))
    yield "demo", [(root / "reference.jpg", root / "reference_mask.png")], \
        [(p, root / "truth" / f"{p.stem}.png") for p in srcs]


SETS = {"davis": davis_cases, "cows": cows_cases, "perseg": perseg_cases, "demo": demo_cases}


def run_icm(cases, settings, backbone_name):
    import torch
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    try:
        from icm_cli.metrics import boundary_f
    except ImportError:  # metrics module not built yet
        boundary_f = None
    from icm_cli.predict.engine import Propagator

    torch.set_grad_enabled(False)
    prop = Propagator(create_backbone(backbone_name), settings=settings)
    results = {}
    for name, refs, targets in cases:
        prop.set_references([(io.read_image(r), io.read_mask(m)) for r, m in refs])
        inter = union = 0
        ious, fs = [], []
        for img_path, gt_path in targets:
            image = io.read_image(img_path)
            gt = io.read_mask(gt_path) >= 0.5
            pred = prop.predict_grid([image])[0]
            _, mask = prop.finish(image, pred)
            inter += np.logical_and(mask, gt).sum()
            union += np.logical_or(mask, gt).sum()
            ious.append(_iou(mask, gt))
            fs.append(boundary_f(mask, gt)[2] if callable(boundary_f) else float("nan"))
        results[name] = {"J": float(np.mean(ious)), "F": float(np.mean(fs)),
                         "pooled_iou": float(inter / max(union, 1))}
    return results


def run_icm_video(settings, backbone_name, memory, radius):
    """DAVIS as video: `icm propagate --video` per sequence (frame 0 = reference), J/F on frames 1..."""
    import tempfile

    import torch
    from icm_cli import io
    from icm_cli.config import ModelConfig, OutputConfig, VideoConfig
    from icm_cli.metrics import boundary_f
    from icm_cli.predictor import Predictor
    from icm_cli.runner.batch import BatchRunner
    from icm_cli.runner.manifest import RecordList
    from icm_cli.runner.outputs import OutputPlan
    from icm_cli.runner.sequence import run_video
    from icm_cli.video import FrameSequence

    torch.set_grad_enabled(False)
    predictor = Predictor(ModelConfig(backbone=backbone_name, device="cpu"), settings=settings)
    root = DATA / "davis2016-dev"
    results = {}
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):
        frames = root / "JPEGImages" / seq
        predictor.set_reference(frames / "00000.jpg", root / "Annotations" / seq / "00000.png")
        with tempfile.TemporaryDirectory() as tmp:
            runner = BatchRunner(OutputPlan(Path(tmp), OutputConfig(("masks",))), RecordList())
            t0 = time.perf_counter()
            run_video(runner, FrameSequence(frames), predictor.video(VideoConfig(radius=radius, memory=memory)))
            secs = time.perf_counter() - t0
            ious, fs = [], []
            for gt_path in sorted((root / "Annotations" / seq).glob("*.png"))[1:]:
                gt = io.read_mask(gt_path) >= 0.5
                pred = io.read_mask(Path(tmp) / "masks" / gt_path.name) >= 0.5
                ious.append(_iou(pred, gt))
                fs.append(boundary_f(pred, gt)[2])
        results[seq] = {"J": float(np.mean(ious)), "F": float(np.mean(fs)), "pooled_iou": float("nan"),
                        "fps": len(list(frames.glob("*.jpg"))) / secs}
    return results


def run_baseline(cases):
    sys.path.insert(0, str(ROOT.parent / "shared" / "baseline"))
    import torch
    from PIL import Image, ImageOps
    from icm_baseline import cli as bl
    from icm_cli import io

    torch.set_grad_enabled(False)
    m = bl.net()
    results = {}
    for name, refs, targets in cases:
        fg, bg = [], []
        for r, k in refs:
            f = bl.feats(m, ImageOps.exif_transpose(Image.open(r)))
            t = bl.tokens(f, Image.open(k))
            fg.append(t[0]); bg.append(t[1])
        fg, bg = torch.cat(fg), torch.cat(bg)
        inter = union = 0
        ious = []
        for img_path, gt_path in targets:
            img = ImageOps.exif_transpose(Image.open(img_path))
            p = bl.predict(bl.feats(m, img), fg, bg)
            up = torch.nn.functional.interpolate(p, size=(img.size[1], img.size[0]), mode="bilinear",
                                                 align_corners=False)[0, 0].numpy() > 0.5
            gt = io.read_mask(gt_path) >= 0.5
            inter += np.logical_and(up, gt).sum(); union += np.logical_or(up, gt).sum()
            ious.append(_iou(up, gt))
        results[name] = {"J": float(np.mean(ious)), "pooled_iou": float(inter / max(union, 1))}
    return results


def summarise(set_name, results):
    if set_name == "perseg":
        return float(np.mean([r["pooled_iou"] for r in results.values()]))
    return float(np.mean([r["J"] for r in results.values()]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="davis,cows,perseg")
    ap.add_argument("--set", action="append", default=[], help="engine setting override key=value")
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--baseline", action="store_true", help="also run ../shared/baseline in this run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cows-refs", type=int, default=1, help="references per context on cows (1 = protocol)")
    ap.add_argument("--cows-holdout", type=int, default=1, help="cows taken out of scoring per context (>= --cows-refs)")
    ap.add_argument("--video", action="store_true", help="DAVIS as video (--memory, --radius)")
    ap.add_argument("--memory", type=int, default=0)
    ap.add_argument("--radius", type=int, default=3)
    ap.add_argument("--stride", type=int, default=1, help="score every Nth DAVIS frame (screening; report with 1)")
    args = ap.parse_args()
    global FRAME_STRIDE, COWS_REFS, COWS_HOLDOUT
    FRAME_STRIDE = args.stride
    COWS_REFS = args.cows_refs
    COWS_HOLDOUT = args.cows_holdout
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the shared evaluation data is not on this machine)")
        return 0
    from icm_cli.predict.engine import PropagateSettings
    settings = PropagateSettings()
    for kv in args.set:
        key, value = kv.split("=", 1)
        typ = type(getattr(settings, key))
        settings = dataclasses.replace(settings, **{key: (value.lower() in ("1", "true", "yes")) if typ is bool else typ(value)})
    print("settings:", dataclasses.asdict(settings))
    report = {}
    if args.video:
        res = run_icm_video(settings, args.backbone, args.memory, args.radius)
        print(f"\n== davis --video (memory {args.memory}, radius {args.radius}): mean J "
              f"{np.mean([r['J'] for r in res.values()]):.3f}  mean F {np.mean([r['F'] for r in res.values()]):.3f}")
        for name, r in res.items():
            print(f"  {name:22s} J {r['J']:.3f}  F {r['F']:.3f}  {r['fps']:.2f} frames/s")
        return 0
    for set_name in args.sets.split(","):
        t0 = time.perf_counter()
        res = run_icm(SETS[set_name](), settings, args.backbone)
        secs = time.perf_counter() - t0
        row = {"icm": summarise(set_name, res), "icm_detail": res, "icm_seconds": secs}
        if args.baseline:
            t0 = time.perf_counter()
            bres = run_baseline(SETS[set_name]())
            row.update(baseline=summarise(set_name, bres), baseline_detail=bres,
                       baseline_seconds=time.perf_counter() - t0)
        report[set_name] = row
        metric = "mIoU (PerSeg protocol)" if set_name == "perseg" else "mean J"
        print(f"\n== {set_name}: icm {metric} {row['icm']:.3f}"
              + (f"  baseline {row['baseline']:.3f}" if args.baseline else "") + f"  ({secs:.0f}s)")
        for name, r in res.items():
            extra = f"  baseline J {bres[name]['J']:.3f}" if args.baseline else ""
            print(f"  {name:22s} J {r['J']:.3f}  F {r['F']:.3f}  pooled IoU {r['pooled_iou']:.3f}{extra}")
        sys.stdout.flush()
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
