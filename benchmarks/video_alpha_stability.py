"""Does the alpha of a ``--video`` run flicker more than its masks? DAVIS dev, one figure per sequence.

    python benchmarks/video_alpha_stability.py --runs /tmp/video_runs            # measure existing runs
    python benchmarks/video_alpha_stability.py --runs /tmp/video_runs --run      # run them first (resumable)

Each sequence is run as ``icm propagate --video JPEGImages/<seq> --ref <seq>/00000.jpg --mask
Annotations/<seq>/00000.png -o RUNS/<seq> --save masks,alpha`` (DAVIS protocol: reference = frame 0).

Temporal stability T = mean over consecutive frames of their IoU (``icm eval --stability``);
for alpha mattes also the soft IoU, sum(min(a, b)) / sum(max(a, b)), which is the IoU for
binary masks and also counts changes of the soft edge. Flicker shows as T below the ground
truth's T (the object's own motion); the alpha should be at least as stable as the mask.
The sequence means are printed beside ``icm eval``'s J of the masks and of the alpha at 0.5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-dev"
if not DAVIS.exists():
    DAVIS = Path("/work/shared/data/davis2016-dev")


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
    cmd = [sys.executable, "-m", "icm_cli", "propagate", "--video", str(frames), "--ref", str(frames / "00000.jpg"),
           "--mask", str(DAVIS / "Annotations" / seq / "00000.png"), "-o", str(runs / seq), "--save", "masks,alpha",
           "--quiet", *extra]
    subprocess.run(cmd, check=False, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of <seq>/masks and <seq>/alpha")
    parser.add_argument("--run", action="store_true", help="run icm propagate --video for each sequence first")
    parser.add_argument("--sequences", nargs="*", help="default: every DAVIS dev sequence")
    parser.add_argument("extra", nargs="*", help="more options for icm propagate (after --)")
    args = parser.parse_args()
    if not DAVIS.exists():
        sys.exit(f"{DAVIS}: DAVIS dev data not found")
    sequences = args.sequences or sorted(os.listdir(DAVIS / "JPEGImages"))
    rows = []
    print(f"{'sequence':20s} {'frames':>6s} {'J mask':>7s} {'J a>=.5':>7s} {'T gt':>6s} {'T mask':>7s} "
          f"{'T a>=.5':>7s} {'T a soft':>8s}")
    for seq in sequences:
        if args.run:
            run(seq, args.runs, args.extra)
        masks_dir, alpha_dir = args.runs / seq / "masks", args.runs / seq / "alpha"
        names = sorted(p.stem for p in masks_dir.glob("*.png"))
        if not names or not all((alpha_dir / f"{n}.png").exists() for n in names):
            print(f"{seq:20s} incomplete, skipped")
            continue
        masks = [_grey(masks_dir / f"{n}.png") for n in names]
        alphas = [_grey(alpha_dir / f"{n}.png") for n in names]
        truth = [_grey(DAVIS / "Annotations" / seq / f"{n}.png") for n in names]
        row = {"seq": seq, "frames": len(names),
               "J_mask": j_mean(masks[1:], truth[1:]), "J_alpha": j_mean(alphas[1:], truth[1:]),
               "T_gt": stability(truth, soft=False), "T_mask": stability(masks, soft=False),
               "T_alpha": stability(alphas, soft=False), "T_alpha_soft": stability(alphas, soft=True)}
        rows.append(row)
        print(f"{seq:20s} {row['frames']:6d} {row['J_mask']:7.4f} {row['J_alpha']:7.4f} {row['T_gt']:6.4f} "
              f"{row['T_mask']:7.4f} {row['T_alpha']:7.4f} {row['T_alpha_soft']:8.4f}", flush=True)
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("seq", "frames")}
        print(f"{'mean (' + str(len(rows)) + ' seq)':20s} {sum(r['frames'] for r in rows):6d} {mean['J_mask']:7.4f} "
              f"{mean['J_alpha']:7.4f} {mean['T_gt']:6.4f} {mean['T_mask']:7.4f} {mean['T_alpha']:7.4f} "
              f"{mean['T_alpha_soft']:8.4f}")
        worse = [r["seq"] for r in rows if r["T_alpha_soft"] < r["T_mask"] - 0.002]
        print(f"alpha (soft) less stable than the mask by more than 0.002 in {len(worse)} of {len(rows)} "
              f"sequences{': ' + ', '.join(worse) if worse else ''}")


if __name__ == "__main__":
    main()
