"""Does the confidence rank results like their true quality? Spearman(confidence, IoU) per dev set.

    python benchmarks/confidence.py [--sets davis,cows,perseg,demo] [--stride 5] [--video]
                                    [--set head_steps=0] [--dump rows.json] [--from rows.json]

Runs the propagator with its default settings on the dev sets of
benchmarks/quality.py (DAVIS-2016 dev every ``--stride``-th frame with frame 0
as the reference, MSRC cows each cow against the others, PerSeg, and the
bundled demo), computes every signal of :mod:`icm_cli.predict.confidence`
and the IoU of each result, and prints per set the Spearman rank correlation
of the confidence and of each signal alone with the IoU, then the
alternative formulas that were compared. ``--video`` adds DAVIS run as
``propagate --video`` does (every frame in order, every ``--stride``-th scored). ``--dump`` keeps the per-image rows
so formulas can be compared again with ``--from`` without running the model.
The DAVIS figure pools all sequences (the ranking must hold across
sequences, as in a folder of mixed results); the mean of the per-sequence
correlations is printed beside it. Skips with a message when
../shared/data is absent (the demo still runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the dev sets' case generators)

from icm_cli.predict.confidence import SIGNALS  # noqa: E402


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), float)
    sorted_v = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation of two sequences (pairs with a NaN dropped); NaN under 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def scored_row(learned: bool, set_name: str, case: str, image_path, pred, prob, mask, gt, ref_area) -> dict:
    """One result's row: set, case, image, IoU, whether the decoder made it, the confidence, its cost and
    every signal (assessed as ``Predictor.finish`` does)."""
    from icm_cli.predict.confidence import assess

    t0 = time.perf_counter()
    result = assess(prob, mask, pred, ref_area, learned=learned)
    return {"set": set_name, "case": case, "image": str(image_path), "iou": quality._iou(mask, gt),
            "confidence": result.confidence, "learned": learned, "seconds": time.perf_counter() - t0,
            **result.signals}


def collect(set_name: str, cases, settings) -> list[dict]:
    """One row per scored image: set, case, image, IoU, timing and every signal."""
    import torch
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.confidence import reference_area_share
    from icm_cli.predict.propagator import Propagator

    torch.set_grad_enabled(False)
    prop = Propagator(create_backbone("efficientnet-lite0"), settings=settings)
    rows = []
    for case, refs, targets in cases:
        prop.set_references([(io.read_image(r), io.read_mask(m)) for r, m in refs])
        ref_area = reference_area_share(prop.context)
        for img_path, gt_path in targets:
            image = io.read_image(img_path)
            gt = io.read_mask(gt_path) >= 0.5
            pred = prop.predict_grid([image])[0]
            prob, mask, learned = prop.finish_path(image, pred)
            rows.append(scored_row(learned, set_name, case, img_path, pred, prob, mask, gt, ref_area))
        print(f"  {set_name}/{case}: {len(targets)} images", file=sys.stderr, flush=True)
    return rows


def collect_video(settings, stride: int, radius: int = 6) -> list[dict]:
    """DAVIS as `propagate --video` runs it (frame 0 = reference, a search window from the last mask);
    every frame is predicted in order, every ``stride``-th is scored."""
    import torch
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.confidence import reference_area_share
    from icm_cli.predict.propagator import Propagator
    from icm_cli.config import VideoConfig
    from icm_cli.predict.temporal import TemporalContext

    torch.set_grad_enabled(False)
    prop = Propagator(create_backbone("efficientnet-lite0"), settings=settings)
    root = quality.DATA / "davis2016-dev"
    rows = []
    for seq in sorted(p.name for p in (root / "JPEGImages").iterdir()):
        frames = sorted((root / "JPEGImages" / seq).glob("*.jpg"))
        prop.set_references([(io.read_image(frames[0]), io.read_mask(root / "Annotations" / seq / "00000.png"))])
        ref_area = reference_area_share(prop.context)
        temporal = TemporalContext(VideoConfig(radius=radius, motion=False))
        for index, frame in enumerate(frames):
            image = io.read_image(frame)
            geo, feats = prop.source_features([image])
            pred = prop.evidence(feats, geo, window=temporal.window(tuple(feats.ft.shape[-2:])))[0]
            prob, mask, learned = prop.finish_path(image, pred)
            temporal.update(mask, geo, feats.ft.cpu())
            if index == 0 or index % stride:
                continue
            gt = io.read_mask(root / "Annotations" / seq / f"{frame.stem}.png") >= 0.5
            rows.append(scored_row(learned, "davis-video", seq, frame, pred, prob, mask, gt, ref_area))
        print(f"  davis-video/{seq}", file=sys.stderr, flush=True)
    return rows


def _product(rows, weights: dict[str, float], drop: tuple[str, ...] = ()) -> np.ndarray:
    """Weighted product of signals per row (NaN signals count as 1; empty masks capped at 0.1).

    A geometric mean of the same signals is a monotone function of it: the same Spearman.
    """
    out = []
    for r in rows:
        c = 1.0
        for name, w in weights.items():
            v = r.get(name)
            if name in drop or v is None or v != v:
                continue
            c *= max(v, 0.0) ** w
        out.append(min(c, 0.1) if r.get("mask_area", 1.0) == 0 else c)
    return np.array(out)


#: The formulas compared (label -> per-row scores). The first is what icm ships.
FORMULAS = {
    "shipped (crisp * border with the decoder, else the next)": lambda rows: np.array(
        [r["confidence"] for r in rows]),
    "grabcut * border * nearest_mask^0.25 (training-free path)": lambda rows: _product(
        rows, {"grabcut": 1, "border": 1, "nearest_mask": 0.25}),
    "  the same without grabcut (as with --no-edges)": lambda rows: _product(
        rows, {"grabcut": 1, "border": 1, "nearest_mask": 0.25}, drop=("grabcut",)),
    "crisp * border (decoder path)": lambda rows: _product(rows, {"crisp": 1, "border": 1}),
    "crisp * grabcut * border": lambda rows: _product(rows, {"crisp": 1, "grabcut": 1, "border": 1}),
    "grabcut * border": lambda rows: _product(rows, {"grabcut": 1, "border": 1}),
    "grabcut * border * (nearest_mask * head_mask)^0.25": lambda rows: _product(
        rows, {"grabcut": 1, "border": 1, "nearest_mask": 0.25, "head_mask": 0.25}),
    "grabcut * border * (nearest_mask * area)^0.25": lambda rows: _product(
        rows, {"grabcut": 1, "border": 1, "nearest_mask": 0.25, "area": 0.25}),
    "self_iou * crisp * grabcut * nearest_mask * head_mask (first draft)": lambda rows: _product(
        rows, {"self_iou": 1, "crisp": 1, "grabcut": 1, "nearest_mask": 1, "head_mask": 1}),
    "product of all signals": lambda rows: _product(rows, {s: 1 for s in SIGNALS}),
}


def report(rows: list[dict]) -> None:
    sets = list(dict.fromkeys(r["set"] for r in rows))
    iou = {s: np.array([r["iou"] for r in rows if r["set"] == s]) for s in sets}
    print("\nSpearman(signal, IoU) per set (n = scored images; DAVIS pools its sequences)")
    header = f"  {'signal':14s}" + "".join(f"{s + ' n=' + str(len(iou[s])):>16s}" for s in sets)
    print(header)
    for name in ("confidence", *SIGNALS):
        line = f"  {name:14s}"
        for s in sets:
            line += f"{spearman([r[name] for r in rows if r['set'] == s], iou[s]):16.3f}"
        print(line)
    if "davis" in sets:
        per_seq = []
        for case in dict.fromkeys(r["case"] for r in rows if r["set"] == "davis"):
            sub = [r for r in rows if r["set"] == "davis" and r["case"] == case]
            per_seq.append(spearman([r["confidence"] for r in sub], [r["iou"] for r in sub]))
        print(f"  davis: mean of per-sequence Spearman(confidence, IoU) {np.nanmean(per_seq):.3f} "
              f"over {len(per_seq)} sequences")
    print("\nFormulas compared, Spearman with IoU per set:")
    for label, fn in FORMULAS.items():
        line = f"  {label:70s}"
        for s in sets:
            sub = [r for r in rows if r["set"] == s]
            line += f" {s} {spearman(fn(sub), iou[s]):6.3f}"
        print(line)
    print("\nScale: mean confidence beside mean IoU; results under 0.5 by confidence and by IoU:")
    for s in sets:
        sub = [r for r in rows if r["set"] == s]
        conf = np.array([r["confidence"] for r in sub])
        bad, low = iou[s] < 0.5, conf < 0.5
        print(f"  {s:12s} mean confidence {conf.mean():.2f}, mean IoU {iou[s].mean():.2f}; confidence < 0.5: "
              f"{low.sum()}, IoU < 0.5: {bad.sum()}, both: {(bad & low).sum()}")
    secs = [r["seconds"] for r in rows if "seconds" in r]
    if secs:
        print(f"\nconfidence cost: median {1000 * np.median(secs):.1f} ms, max {1000 * max(secs):.1f} ms per image")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="davis,cows,perseg,demo")
    ap.add_argument("--stride", type=int, default=5, help="score every Nth DAVIS frame")
    ap.add_argument("--set", action="append", default=[], help="propagator setting override key=value (config.PropagateSettings)")
    ap.add_argument("--video", action="store_true", help="also DAVIS as --video (every frame predicted in order)")
    ap.add_argument("--dump", type=Path, help="write the per-image rows (JSON) here")
    ap.add_argument("--from", dest="from_", type=Path, help="read rows written by --dump instead of running the model")
    args = ap.parse_args()
    if args.from_:
        rows = json.loads(args.from_.read_text())
        from icm_cli.predict.confidence import combine
        for r in rows:  # re-score with the formula as it is now
            r["confidence"] = combine(r, r.get("learned", False))
        report(rows)
        return 0
    quality.FRAME_STRIDE = args.stride
    from icm_cli.config import PropagateSettings
    settings = PropagateSettings()
    for kv in args.set:
        key, value = kv.split("=", 1)
        typ = type(getattr(settings, key))
        settings = dataclasses.replace(settings, **{key: (value.lower() in ("1", "true", "yes")) if typ is bool
                                                    else typ(value)})
    sets = [s for s in args.sets.split(",") if s]
    if not quality.DATA.is_dir():
        print(f"skipped: {quality.DATA} not found (the shared evaluation data is not on this machine); demo only")
        sets = [s for s in sets if s == "demo"]
    rows = []
    for s in sets:
        t0 = time.perf_counter()
        rows += collect(s, quality.SETS[s](), settings)
        print(f"{s}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    if args.video and "davis" in args.sets.split(",") and quality.DATA.is_dir():
        t0 = time.perf_counter()
        rows += collect_video(settings, args.stride)
        print(f"davis-video: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    if args.dump:
        args.dump.write_text(json.dumps(rows))
    if rows:
        report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
