"""End-to-end speed of `icm propagate` beside the baseline, on 854x480 frames.

    python benchmarks/bench_propagate.py [--frames 32] [--threads 2]

Prints, measured in this one run:
- images/s end to end (subprocess, model load included) for icm at default
  settings and for ../shared/baseline, and their ratio;
- for icm in-process: the share of wall time inside the backbone forward,
  reference set-up time, and batch size 1 vs 8;
- the learned decoder's own cost per image (when one is in use; ``--decoder``
  passes a choice to icm, e.g. ``--decoder none`` for the training-free path);
- peak resident memory of each subprocess.
Frames come from ../shared/data/davis2016-dev (blackswan) when present,
else synthetic 854x480 frames are generated.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def make_frames(folder: Path, count: int) -> tuple[Path, Path, Path]:
    """Copy-free: returns (frames_dir, ref, mask); frames_dir holds ``count`` 854x480 frames."""
    davis = SHARED / "data" / "davis2016-dev"
    frames = folder / "frames"
    frames.mkdir(parents=True)
    if davis.is_dir():
        seq = sorted((davis / "JPEGImages" / "blackswan").glob("*.jpg"))
        for i in range(count):
            os.symlink(seq[1 + i % (len(seq) - 1)], frames / f"{i:05d}.jpg")
        return frames, seq[0], davis / "Annotations" / "blackswan" / "00000.png"
    from tests.conftest import textured_scene
    for i in range(count):
        img, _ = textured_scene(480, 854, (150 + i % 20, 200 + 5 * i, 200, 260), seed=i)
        Image.fromarray(img).save(frames / f"{i:05d}.jpg", quality=90)
    img, mask = textured_scene(480, 854, (150, 200, 200, 260), seed=999)
    Image.fromarray(img).save(folder / "ref.jpg", quality=90)
    Image.fromarray(mask * 255).save(folder / "ref_mask.png")
    return frames, folder / "ref.jpg", folder / "ref_mask.png"


def run_child(cmd: list[str], env: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def in_process(frames: Path, ref: Path, mask: Path, out: Path, batch_size: int, decoder: str | None) -> dict:
    import torch
    from icm_cli.config import ModelConfig
    from icm_cli.predictor import Predictor
    from icm_cli.references import load_references
    from icm_cli.runner.batch import BatchRunner
    from icm_cli.runner.manifest import ManifestWriter
    from icm_cli.runner.outputs import OutputPlan
    from icm_cli.sources import SourceFinder

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    predictor = Predictor(ModelConfig(device="cpu", **({"decoder": decoder} if decoder else {})))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.set_references(load_references([str(ref)], [str(mask)]))
    ref_s = time.perf_counter() - t0
    predictor.engine.backbone_seconds = 0.0
    manifest = ManifestWriter(out / "manifest.jsonl")
    runner = BatchRunner(OutputPlan(out), manifest)
    t0 = time.perf_counter()
    outcome = runner.run_images(list(SourceFinder([frames])), predictor, batch_size=batch_size)
    wall = time.perf_counter() - t0
    manifest.close()
    prop = predictor.engine
    decoder_s = float("nan")
    if prop.decoder is not None:  # the decoder alone, on a few frames
        from icm_cli import io

        images = [io.read_image(p) for p in sorted(frames.iterdir())[:8]]
        preds = [prop.predict_grid([im])[0] for im in images]
        t0 = time.perf_counter()
        for im, pred in zip(images, preds):
            prop.decode(im, pred)
        decoder_s = (time.perf_counter() - t0) / len(images)
    return {"decoder_s": decoder_s, "load_s": load_s, "reference_s": ref_s, "stream_s": wall, "images": outcome.done,
            "backbone_share": prop.backbone_seconds / wall, "stream_ips": outcome.done / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--decoder", default=None, help="icm's --decoder (default: icm's default)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(SHARED / "baseline"))
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames, ref, mask = make_frames(tmp, args.frames)
        n = args.frames
        print(f"{n} frames 854x480 from {'DAVIS blackswan' if 'shared' in str(ref) else 'synthetic scenes'}; "
              f"{args.threads} threads; torch {torch.__version__}")
        icm_cmd = [sys.executable, "-m", "icm_cli", "propagate", "--ref", str(ref), "--mask", str(mask),
                   str(frames), "-o", str(tmp / "icm_out"), "--quiet", "--device", "cpu"] + \
                  (["--decoder", args.decoder] if args.decoder else [])
        icm_wall, icm_rss = run_child(icm_cmd, env)
        rows = [("icm (default settings)", icm_wall, icm_rss)]
        if not args.skip_baseline and (SHARED / "baseline").is_dir():
            base_cmd = [sys.executable, "-m", "icm_baseline", "propagate", str(frames), "--ref", str(ref),
                        "--mask", str(mask), "-o", str(tmp / "base_out")]
            base_wall, base_rss = run_child(base_cmd, env)
            rows.append(("baseline", base_wall, base_rss))
        print("\nend to end, model load included (subprocess):")
        print(f"  {'':24s} {'wall s':>8s} {'img/s':>7s} {'peak RSS MiB':>13s}")
        for name, wall, rss in rows:
            print(f"  {name:24s} {wall:8.2f} {n / wall:7.2f} {rss:13.0f}")
        if len(rows) == 2:
            print(f"  icm / baseline images/s ratio: {(n / rows[0][1]) / (n / rows[1][1]):.2f}x")
        print("\nicm in-process breakdown:")
        for bs in (1, 8):
            r = in_process(frames, ref, mask, tmp / f"inproc_{bs}", bs, args.decoder)
            print(f"  batch {bs}: model load {r['load_s']:.2f}s, reference set-up {r['reference_s']:.2f}s, "
                  f"stream {r['stream_s']:.2f}s = {r['stream_ips']:.2f} img/s, "
                  f"backbone forward {100 * r['backbone_share']:.0f}% of stream wall time"
                  + (f", decoder {1000 * r['decoder_s']:.0f} ms/image" if r['decoder_s'] == r['decoder_s'] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
