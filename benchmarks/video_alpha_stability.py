"""Does the alpha of a ``--video`` run flicker more than its masks? DAVIS dev, one figure per sequence.

    python benchmarks/video_alpha_stability.py --runs /tmp/video_runs --run --sequences blackswan ...
    python benchmarks/video_alpha_stability.py --runs /tmp/video_runs        # measure existing runs

``--run`` runs each sequence as ``icm propagate --video JPEGImages/<seq> --ref <seq>/00000.jpg --mask
Annotations/<seq>/00000.png -o RUNS/<seq> --save masks,alpha`` (DAVIS protocol: reference = frame 0)
with the alpha steadying switched off, so RUNS/<seq>/alpha holds each frame's own solve. The
steadied alphas are then made from those exactly as a run with steadying writes them (the masks,
hence the trimaps and the solves, are the same; :class:`icm_cli.alpha_temporal.SequenceMatte` is
fed the written solves), into RUNS/<seq>/alpha_steady. Both kinds are also laid out as folders of
sequences (RUNS_eval/alpha_solo/<seq>, RUNS_eval/alpha_steady/<seq>, beside RUNS) for
``icm eval -r --stability`` (which reads RUNS/<seq>/masks itself).

Temporal stability T = mean over consecutive frames of their IoU (``icm eval --stability``);
for alpha mattes also the soft IoU, sum(min(a, b)) / sum(max(a, b)), which is the IoU for
binary masks and also counts changes of the soft edge. Flicker shows as T below the ground
truth's T (the object's own motion); the alpha should be at least as stable as the mask.
J (IoU with the ground truth, frames after the reference) checks that stability was not bought
with lag.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-dev"
if not DAVIS.exists():
    DAVIS = Path("/work/shared/data/davis2016-dev")

_UNSTEADIED = ("import sys, icm_cli.alpha_temporal as t; t.steady_alpha = lambda alpha, *a, **k: alpha; "
               "from icm_cli.cli import main; sys.argv = ['icm', *sys.argv[1:]]; main()")


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """sum(min) / sum(max) of two ``[H, W]`` maps in [0, 1]; 1.0 for two empty maps."""
    top = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / top) if top > 0 else 1.0


def stability(maps: list[np.ndarray], soft: bool) -> float:
    scores = []
    for prev, cur in zip(maps, maps[1:]):
        scores.append(soft_iou(prev, cur) if soft else soft_iou((prev >= 0.5) * 1.0, (cur >= 0.5) * 1.0))
    return float(np.mean(scores)) if scores else float("nan")


def j_mean(pred: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([soft_iou((p >= 0.5) * 1.0, (t >= 0.5) * 1.0) for p, t in zip(pred, truth)]))


def run(seq: str, runs: Path, extra: list[str]) -> None:
    frames = DAVIS / "JPEGImages" / seq
    cmd = [sys.executable, "-c", _UNSTEADIED, "propagate", "--video", str(frames), "--ref",
           str(frames / "00000.jpg"), "--mask", str(DAVIS / "Annotations" / seq / "00000.png"), "-o",
           str(runs / seq), "--save", "masks,alpha", "--quiet", *extra]
    subprocess.run(cmd, check=False, cwd=ROOT)


def steady(seq: str, runs: Path, names: list[str]) -> list[np.ndarray]:
    """The alphas a run with steadying writes, from the run's own solves (``alpha/``)."""
    from icm_cli.alpha_temporal import SequenceMatte
    from icm_cli.predict.fullres import mask_to_trimap_u8

    solo = {n: _grey(runs / seq / "alpha" / f"{n}.png") for n in names}
    matte = SequenceMatte(lambda image, trimap: solo[current])  # `current`: the frame being steadied
    out_dir = runs / seq / "alpha_steady"
    out_dir.mkdir(exist_ok=True)
    steadied = []
    for current in names:
        image = np.asarray(Image.open(DAVIS / "JPEGImages" / seq / f"{current}.jpg").convert("RGB"))
        mask = _grey(runs / seq / "masks" / f"{current}.png")
        trimap = mask_to_trimap_u8(mask, 20, 20).astype(np.float32) / 255.0  # --kernel 20, the default
        alpha = matte(image, trimap)
        Image.fromarray((alpha * 255.0 + 0.5).astype(np.uint8)).save(out_dir / f"{current}.png")
        steadied.append(alpha)
    return steadied


def _eval_tree(runs: Path, seq: str, kind: str, names: list[str]) -> None:
    folder = runs.parent / f"{runs.name}_eval" / kind / seq
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source = runs / seq / ("alpha" if kind == "alpha_solo" else kind)
    for n in names:
        os.symlink(source / f"{n}.png", folder / f"{n}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of <seq>/masks and <seq>/alpha")
    parser.add_argument("--run", action="store_true", help="run icm propagate --video for each sequence first")
    parser.add_argument("--sequences", nargs="*", help="default: every DAVIS dev sequence")
    args, extra = parser.parse_known_args()
    if not DAVIS.exists():
        sys.exit(f"{DAVIS}: DAVIS dev data not found")
    sequences = args.sequences or sorted(os.listdir(DAVIS / "JPEGImages"))
    rows = []
    head = f"{'sequence':20s} {'frames':>6s} {'T gt':>6s} {'J mask':>7s} {'T mask':>7s}"
    print(head + "  alpha solo: J  T>=.5  T soft | steadied: J  T>=.5  T soft")
    for seq in sequences:
        if args.run:
            run(seq, args.runs, extra)
        masks_dir, alpha_dir = args.runs / seq / "masks", args.runs / seq / "alpha"
        names = sorted(p.stem for p in masks_dir.glob("*.png")) if masks_dir.is_dir() else []
        truth_names = sorted(p.stem for p in (DAVIS / "Annotations" / seq).glob("*.png"))
        if not names or names != truth_names or not all((alpha_dir / f"{n}.png").exists() for n in names):
            print(f"{seq:20s} incomplete, skipped")
            continue
        masks = [_grey(masks_dir / f"{n}.png") for n in names]
        solo = [_grey(alpha_dir / f"{n}.png") for n in names]
        steadied = steady(seq, args.runs, names)
        truth = [_grey(DAVIS / "Annotations" / seq / f"{n}.png") for n in names]
        for kind in ("alpha_solo", "alpha_steady"):
            _eval_tree(args.runs, seq, kind, names)
        row = {"seq": seq, "frames": len(names), "T_gt": stability(truth, False),
               "J_mask": j_mean(masks[1:], truth[1:]), "T_mask": stability(masks, False),
               "J_solo": j_mean(solo[1:], truth[1:]), "T_solo": stability(solo, False),
               "Ts_solo": stability(solo, True),
               "J_steady": j_mean(steadied[1:], truth[1:]), "T_steady": stability(steadied, False),
               "Ts_steady": stability(steadied, True)}
        rows.append(row)
        print(_line(seq, row), flush=True)
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("seq", "frames")}
        mean["frames"] = sum(r["frames"] for r in rows)
        print(_line(f"mean ({len(rows)} seq)", mean))
        for kind in ("solo", "steady"):
            worse = [r["seq"] for r in rows if r[f"Ts_{kind}"] < r["T_mask"]]
            print(f"alpha {kind}: soft T below the mask's T in {len(worse)} of {len(rows)} sequences"
                  f"{': ' + ', '.join(worse) if worse else ''}")


def _line(name: str, r: dict) -> str:
    return (f"{name:20s} {r['frames']:6d} {r['T_gt']:6.4f} {r['J_mask']:7.4f} {r['T_mask']:7.4f}"
            f"  {r['J_solo']:13.4f} {r['T_solo']:6.4f} {r['Ts_solo']:6.4f} | {r['J_steady']:11.4f} "
            f"{r['T_steady']:6.4f} {r['Ts_steady']:6.4f}")


if __name__ == "__main__":
    main()
