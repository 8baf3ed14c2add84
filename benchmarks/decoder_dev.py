"""Decoders compared on the dev sets from cached evidence: minutes, not an hour, per candidate.

    python benchmarks/decoder_dev.py build [--sets davis,cows,perseg,icoseg] [--cache DIR]
    python benchmarks/decoder_dev.py eval --decoder FILE [--decoder none] [--video] [--gate RULE]

``build`` runs icm's propagator once (default settings, object head, training-free
maps) on every dev target of ``benchmarks/quality.py``'s protocols and caches
what a decoder reads, exactly as training episodes are made
(:func:`icm_cli.training.episodes.target_arrays`). ``eval`` then runs each
decoder and the same full-size finishing as ``icm propagate`` (GrabCut on the
uncertain band, hole filling, confident components) and prints the protocol
figures per set and per case. ``--video`` scores DAVIS as ``propagate
--video`` does: frames in order, the previous frame's final mask as the
prior (decoders that read priors) and the search window (``--radius``).
``--gate`` picks per image between the decoder and the training-free path by
their confidences (see :func:`gated`).

The cached maps are float16, so figures can differ from ``quality.py`` (which
recomputes everything) in the third decimal; report final figures from
``quality.py``. Measuring only: the dev data is never trained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the dev protocols)

DEFAULT_CACHE = Path("/tmp/icm-dev-evidence")


def build(sets: list[str], cache: Path) -> None:
    import torch

    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.propagator import Propagator
    from icm_cli.training.episodes import episode_settings, target_arrays

    torch.set_grad_enabled(False)
    prop = Propagator(create_backbone("efficientnet-lite0"), settings=episode_settings(), collect_decoder_inputs=True)
    for set_name in sets:
        index = []
        folder = cache / set_name
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for case, refs, targets in quality.SETS[set_name]():
            prop.set_references([(io.read_image(r), io.read_mask(m)) for r, m in refs])
            for k, (img_path, gt_path) in enumerate(targets):
                name = f"{case}__{k:05d}.npz"
                index.append({"case": case, "image": str(img_path), "gt": str(gt_path), "file": name})
                if (folder / name).exists():
                    continue
                image = io.read_image(img_path)
                arrays, _ = target_arrays(prop, image, io.read_mask(gt_path) >= 0.5)
                np.savez(folder / f".{name}", **arrays)
                (folder / f".{name}").rename(folder / name)
            print(f"  {set_name}/{case}: {len(targets)} targets ({time.perf_counter() - t0:.0f}s)", flush=True)
        (folder / "index.json").write_text(json.dumps(index))


def evidence_of(arrays: dict, geo, prior=None, prior_weight: float = 1.0):
    """The cached arrays as the propagator's Evidence (maps in MAP_CHANNELS order)."""
    import torch

    from icm_cli.predict.evidence import Evidence

    m = torch.from_numpy(arrays["maps"].astype(np.float32))[None]
    one = lambda i: m[:, i:i + 1]  # noqa: E731
    return Evidence(geometry=geo, prob=one(0), nearest=one(1), head=one(2), inter=one(3), intra=one(4),
                    sim_fg=one(5), sim_bg=one(6), base=one(0), prior=prior, prior_weight=prior_weight,
                    levels={4: torch.from_numpy(arrays["level4"].astype(np.float32))[None]})


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def gated(results: dict[str, tuple], rule: str):
    """Pick one result per image from ``{"decoder": (prob, mask, conf), "none": (...)}``.

    ``conf``: the training-free result unless the decoder's confidence is at least the
    training-free one's; ``conf-margin:M``: ... at least theirs minus M."""
    dec, free = results["decoder"], results["none"]
    margin = float(rule.split(":", 1)[1]) if ":" in rule else 0.0
    return dec if dec[2] >= free[2] - margin else free


def evaluate(cache: Path, sets: list[str], decoders: list[str], video: bool, radius: int, gate: str | None,
             stride: int, json_out: bool, motion: bool = True, overrides: tuple = (),
             prior_weight: float = 0.5) -> dict:
    import torch

    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.confidence import assess
    from icm_cli.predict.propagator import Propagator
    from icm_cli.predict.motion import grey_half
    from icm_cli.config import VideoConfig
    from icm_cli.predict.temporal import TemporalContext
    from icm_cli.training.episodes import episode_settings

    torch.set_grad_enabled(False)
    net = create_backbone("efficientnet-lite0")
    base = quality.parse_settings(episode_settings(), overrides)
    props = {d: Propagator(net, settings=dataclasses.replace(base, decoder=d)) for d in decoders}
    if gate:
        props.setdefault("none", Propagator(net, settings=dataclasses.replace(episode_settings(), decoder="none")))
    report: dict = {}
    for set_name in sets:
        folder = cache / set_name
        index = json.loads((folder / "index.json").read_text())
        if set_name == "davis" and stride > 1:
            index = [e for e in index if int(e["file"].rsplit("__", 1)[1][:5]) % stride == stride - 1]
        names = list(props) + (["gated"] if gate else [])
        scores = {n: {} for n in names}
        temporal = {}
        t0 = time.perf_counter()
        for e in index:
            arrays = dict(np.load(folder / e["file"]))
            image = io.read_image(e["image"])
            gt = io.read_mask(e["gt"]) >= 0.5
            geo = next(iter(props.values())).geometry_for(*image.shape[:2])
            ctx = SimpleNamespace(prototypes={2: torch.from_numpy(arrays["proto2"]),
                                              4: torch.from_numpy(arrays["proto4"])})
            results = {}
            grey = grey_half(image, geo) if video and motion else None
            for name, prop in props.items():
                prior = window = None
                if video:
                    key = (name, e["case"])
                    tc = temporal.setdefault(key, TemporalContext(VideoConfig(radius=radius, motion=motion)))
                    prior = tc.prior(geo, grey) if prop.reads_priors else None
                    window = tc.window((geo.padded_h // 8, geo.padded_w // 8))
                ev = evidence_of(arrays, geo, prior, prior_weight)
                if window is not None:
                    ev.window = window
                    ev.prob = ev.prob * window
                prob, mask, learned = prop.finish_path(image, ev, context=ctx)
                if video:
                    tc.update(mask, geo, torch.zeros(1, 1, geo.padded_h // 8, geo.padded_w // 8), grey)
                conf = assess(prob, mask, ev, None, learned=learned).confidence
                results[name] = (prob, mask, conf)
            if gate:
                results["gated"] = gated({"decoder": results[decoders[0]], "none": results["none"]}, gate)
            for name, (_, mask, conf) in results.items():
                acc = scores[name].setdefault(e["case"], {"ious": [], "inter": 0, "union": 0, "conf": []})
                acc["ious"].append(_iou(mask, gt))
                acc["inter"] += int((mask & gt).sum())
                acc["union"] += int((mask | gt).sum())
                acc["conf"].append(conf)
        secs = time.perf_counter() - t0
        summary = {}
        for name, per_case in scores.items():
            if set_name == "perseg":
                vals = {c: a["inter"] / max(1, a["union"]) for c, a in per_case.items()}
            else:
                vals = {c: float(np.mean(a["ious"])) for c, a in per_case.items()}
            summary[name] = {"mean": float(np.mean(list(vals.values()))), "cases": vals}
        report[set_name] = summary
        label = f"{set_name}{' --video' if video and set_name == 'davis' else ''}"
        print(f"\n== {label} ({len(index)} targets, {secs:.0f}s)")
        print("  " + " ".join(f"{n[-28:]:>28s}" for n in names))
        print("  " + " ".join(f"{summary[n]['mean']:28.3f}" for n in names) + "   mean")
        for case in summary[names[0]]["cases"]:
            print("  " + " ".join(f"{summary[n]['cases'][case]:28.3f}" for n in names) + f"   {case}")
        sys.stdout.flush()
    if json_out:
        print(json.dumps(report))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("build", "eval"))
    ap.add_argument("--sets", default="davis,cows,perseg,icoseg")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--decoder", action="append", default=[], help="auto, builtin, none or a file; repeatable")
    ap.add_argument("--video", action="store_true", help="DAVIS in frame order with the previous mask as prior")
    ap.add_argument("--radius", type=int, default=6)
    ap.add_argument("--no-motion", action="store_true", help="--video: the previous mask as it is (no flow)")
    ap.add_argument("--prior-weight", type=float, default=0.5, help="--video: share of the pass reading the prior")
    ap.add_argument("--gate", help="conf or conf-margin:M: per image, the decoder or the training-free result")
    ap.add_argument("--stride", type=int, default=1, help="score every Nth DAVIS frame (not with --video)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="propagator setting override key=value (config.PropagateSettings)")
    args = ap.parse_args()
    if not quality.DATA.is_dir():
        print(f"skipped: {quality.DATA} not found")
        return 0
    sets = args.sets.split(",")
    if args.stage == "build":
        build(sets, args.cache)
    else:
        if args.video and args.stride > 1:
            raise SystemExit("--video scores every frame")
        evaluate(args.cache, sets, args.decoder or ["auto"], args.video, args.radius, args.gate, args.stride,
                 args.json, motion=not args.no_motion, overrides=tuple(args.set), prior_weight=args.prior_weight)
    return 0


if __name__ == "__main__":
    sys.exit(main())
