"""Quality on ../shared/data: DAVIS-2016 dev (J, F), MSRC cows dev (mIoU), PerSeg (mIoU), iCoseg dev
(mean over groups of the mean IoU per group), the demo.

    python benchmarks/quality.py [--sets davis,cows,perseg,icoseg,demo] [--set key=value ...]
    python benchmarks/quality.py --baseline --variant before:decoder=none --variant after:decoder=builtin

Runs icm's propagator with its default settings (or overrides such as
``--set head_steps=0``) and prints per-sequence / per-object figures and the
means: DAVIS over all 17 dev sequences and over the first five (blackswan,
bmx-trees, dance-twirl, car-shadow, kite-surf; comparable with older
figures). ``--variant NAME:k=v,k=v`` (repeatable) runs several settings in
the same run on the same backbone features (each its own reference
context), so their differences are not machine noise. With ``--baseline``
the yardstick in ../shared/baseline is run on the same data in the same run.
Skips with a message when ../shared/data is absent.
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
FIVE = ("blackswan", "bmx-trees", "dance-twirl", "car-shadow", "kite-surf")  # the older 5-sequence dev set


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


def icoseg_cases():
    """iCoseg dev: in each group the first image by name is the reference; the others are scored."""
    root = DATA / "icoseg-dev"
    for group in sorted(p.name for p in root.iterdir() if p.is_dir()):
        images = sorted((root / group / "images").glob("*.jpg"))
        pairs = [(p, root / group / "masks" / f"{p.stem}.png") for p in images]
        yield group, pairs[:1], pairs[1:]


#: ``coco_mval`` of ``../shared/training/get_training_data.sh`` (training data: measure held-out categories only)
COCO_MVAL = Path(os.environ.get("ICM_COCO_MVAL", "/work/trainingdata/coco_mval"))


def coco_cases():
    """COCO_MVal, category level (as icm is used on unseen categories): in each of the 80 categories the
    first instance by name is the reference, the other 9-10 (other photos) are scored. Set ICM_COCO_MVAL to
    its folder (images/, masks/)."""
    import re

    by_category: dict[str, list[Path]] = {}
    for image in sorted((COCO_MVAL / "images").glob("*.jpg")):
        by_category.setdefault(re.sub(r"\d\d_.*$", "", image.stem), []).append(image)
    for category, images in sorted(by_category.items()):
        pairs = [(p, COCO_MVAL / "masks" / f"{p.stem}.png") for p in images]
        yield category, pairs[:1], pairs[1:]


SETS = {"davis": davis_cases, "cows": cows_cases, "perseg": perseg_cases, "icoseg": icoseg_cases,
        "demo": demo_cases, "coco": coco_cases}


def run_icm(cases, variants, backbone_name):
    """Score every variant (``{name: PropagateSettings}``) on the cases; one backbone forward
    per target is shared by all variants of the same working size. Returns ``{variant: {case: figures}}``."""
    import torch
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.metrics import boundary_f
    from icm_cli.predict.propagator import Propagator

    torch.set_grad_enabled(False)
    net = create_backbone(backbone_name)
    props = {name: Propagator(net, settings=st) for name, st in variants.items()}
    sizes = {}
    for name, st in variants.items():  # variants that share a working size share features
        sizes.setdefault((st.size, st.min_size), []).append(name)
    results = {name: {} for name in variants}
    seconds = {name: 0.0 for name in variants}
    for case, refs, targets in cases:
        ref_pairs = [(io.read_image(r), io.read_mask(m)) for r, m in refs]
        for name, prop in props.items():
            t0 = time.perf_counter()
            prop.set_references(ref_pairs)
            seconds[name] += time.perf_counter() - t0
        acc = {name: {"inter": 0, "union": 0, "ious": [], "fs": []} for name in variants}
        for img_path, gt_path in targets:
            image = io.read_image(img_path)
            gt = io.read_mask(gt_path) >= 0.5
            for group in sizes.values():
                t0 = time.perf_counter()
                geo, feats = props[group[0]].source_features([image], with_attention=True)
                shared_s = (time.perf_counter() - t0) / len(group)
                for name in group:
                    prop = props[name]
                    t0 = time.perf_counter()
                    pred = prop.evidence(feats, geo)[0]
                    _, mask = prop.finish(image, pred)
                    seconds[name] += time.perf_counter() - t0 + shared_s
                    a = acc[name]
                    a["inter"] += np.logical_and(mask, gt).sum()
                    a["union"] += np.logical_or(mask, gt).sum()
                    a["ious"].append(_iou(mask, gt))
                    a["fs"].append(boundary_f(mask, gt)[2])
        for name, a in acc.items():
            results[name][case] = {"J": float(np.mean(a["ious"])), "F": float(np.mean(a["fs"])),
                                   "pooled_iou": float(a["inter"] / max(a["union"], 1))}
    return results, seconds


def run_icm_video(settings, backbone_name, video_config, seqs=None, root=None):
    """DAVIS as video: `icm propagate --video` per sequence (frame 0 = reference), J/F on frames 1...;
    ``video_config``: a :class:`~icm_cli.config.VideoConfig`; ``seqs``: only these sequences."""
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
    from icm_cli.runner.user_masks import UserMasks
    from icm_cli.video import FrameSequence

    torch.set_grad_enabled(False)
    predictor = Predictor(ModelConfig(backbone=backbone_name, device="cpu"), settings=settings)
    root = Path(root) if root else DATA / "davis2016-dev"
    results = {}
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):
        if seqs and seq not in seqs:
            continue
        frames = root / "JPEGImages" / seq
        predictor.set_reference(frames / "00000.jpg", root / "Annotations" / seq / "00000.png")
        with tempfile.TemporaryDirectory() as tmp:
            # Frame 0 is the reference: as in `icm propagate --video`, its result is the user's mask.
            runner = BatchRunner(OutputPlan(Path(tmp), OutputConfig(("masks",))), RecordList(),
                                 user_masks=UserMasks(predictor.references))
            t0 = time.perf_counter()
            run_video(runner, FrameSequence(frames), predictor.video(video_config).pipeline)
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


def summary_line(set_name, results):
    """The headline figures of one set: DAVIS J, F and the 5-sequence J; cows/demo J; PerSeg mIoU."""
    if set_name == "perseg":
        return f"mIoU {summarise(set_name, results):.3f}"
    text = f"J {summarise(set_name, results):.3f}"
    if "F" in next(iter(results.values()), {}):
        text += f"  F {float(np.mean([r['F'] for r in results.values()])):.3f}"
    five = [results[k]["J"] for k in FIVE if k in results]
    if set_name == "davis" and len(five) == len(FIVE) and len(results) > len(FIVE):
        text += f"  5-seq J {np.mean(five):.3f}"
    return text


def parse_settings(base, pairs):
    """``["k=v", ...]`` -> a copy of ``base`` with those fields replaced (typed like the field)."""
    for kv in pairs:
        key, value = kv.split("=", 1)
        typ = type(getattr(base, key))
        base = dataclasses.replace(base, **{key: (value.lower() in ("1", "true", "yes")) if typ is bool else typ(value)})
    return base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="davis,cows,perseg,icoseg,demo")
    ap.add_argument("--set", action="append", default=[], help="propagator setting override key=value (config.PropagateSettings)")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value,key=value (repeatable): settings compared in the same run")
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--baseline", action="store_true", help="also run ../shared/baseline in this run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cows-refs", type=int, default=1, help="references per context on cows (1 = protocol)")
    ap.add_argument("--cows-holdout", type=int, default=1, help="cows taken out of scoring per context (>= --cows-refs)")
    ap.add_argument("--video", action="store_true", help="DAVIS as video (--video-set)")
    ap.add_argument("--video-set", action="append", default=[], metavar="KEY=VALUE",
                    help="--video: a VideoConfig field (memory=0, readout_weight=0.5, radius=6...); repeatable")
    ap.add_argument("--seqs", default="", help="--video: only these DAVIS sequences (comma-separated)")
    ap.add_argument("--video-root", default="", help="--video: another DAVIS-layout folder (JPEGImages/, Annotations/), "
                    "e.g. training sequences held out from every training run")
    ap.add_argument("--stride", type=int, default=1, help="score every Nth DAVIS frame (screening; report with 1)")
    args = ap.parse_args()
    global FRAME_STRIDE, COWS_REFS, COWS_HOLDOUT
    FRAME_STRIDE = args.stride
    COWS_REFS = args.cows_refs
    COWS_HOLDOUT = args.cows_holdout
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the shared evaluation data is not on this machine)")
        return 0
    from icm_cli.config import PropagateSettings
    settings = parse_settings(PropagateSettings(), args.set)
    print("settings:", dataclasses.asdict(settings))
    variants = {"icm": settings}
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, pairs = spec.partition(":")
            variants[name] = parse_settings(settings, [p for p in pairs.split(",") if p])
            changed = {k: v for k, v in dataclasses.asdict(variants[name]).items() if getattr(settings, k) != v}
            print(f"variant {name}: {changed or 'as settings'}")
    report = {}
    if args.video:
        if len(variants) > 1:
            raise SystemExit("--video runs one setting; use --set")
        from icm_cli.config import VideoConfig
        video_config = parse_settings(VideoConfig(), args.video_set)
        res = run_icm_video(settings, args.backbone, video_config, [s for s in args.seqs.split(",") if s],
                            args.video_root or None)
        print(f"\n== davis --video ({video_config}): {summary_line('davis', res)}")
        for name, r in res.items():
            print(f"  {name:22s} J {r['J']:.3f}  F {r['F']:.3f}  {r['fps']:.2f} frames/s")
        return 0
    for set_name in args.sets.split(","):
        res_by, secs_by = run_icm(SETS[set_name](), variants, args.backbone)
        row = {name: {"summary": summarise(set_name, r), "detail": r, "seconds": secs_by[name]}
               for name, r in res_by.items()}
        bres = None
        if args.baseline:
            t0 = time.perf_counter()
            bres = run_baseline(SETS[set_name]())
            row["baseline"] = {"summary": summarise(set_name, bres), "detail": bres,
                               "seconds": time.perf_counter() - t0}
        report[set_name] = row
        print(f"\n== {set_name}" + (f" (every {FRAME_STRIDE}th frame)" if set_name == "davis" and FRAME_STRIDE > 1 else ""))
        for name, r in res_by.items():
            print(f"  {name:12s} {summary_line(set_name, r)}  ({secs_by[name]:.0f}s)")
        if bres is not None:
            print(f"  {'baseline':12s} {summary_line(set_name, bres)}  ({row['baseline']['seconds']:.0f}s)")
        names = list(res_by)
        print(f"  {'':22s} " + " ".join(f"{n[:11]:>11s}" for n in names) + ("    baseline" if bres else ""))
        for case in next(iter(res_by.values())):
            cells = " ".join(f"{res_by[n][case]['J']:.3f}/{res_by[n][case]['F']:.2f}" for n in names)
            extra = f"  {bres[case]['J']:.3f}" if bres else ""
            print(f"  {case:22s} {cells}{extra}" + ("   (pooled IoU " + " ".join(
                f"{res_by[n][case]['pooled_iou']:.3f}" for n in names) + ")" if set_name == "perseg" else ""))
        sys.stdout.flush()
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
