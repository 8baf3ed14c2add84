"""`icm propagate --video` beside `icm propagate` on the same frames: frames/s, and peak memory vs length.

    python benchmarks/bench_video.py [--lengths 100,1000] [--size 240x320]

Synthetic frames (an object drifting over a textured background) are written
to a temporary folder; each configuration runs as a subprocess (start-up
included) and its peak RSS is read from the kernel: `propagate` (independent
frames), `--video` at its defaults (the memory's readout in the decoder's
prior), `--video --readout-weight 0.5` and `--video` without the memory. The
ratio column is frames/s against `propagate` in the same run. A bounded run
shows the same peak for 100 and 1000 frames.
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
sys.path.insert(0, str(ROOT))

from tests.conftest import textured_scene  # noqa: E402


def write_frames(folder: Path, count: int, h: int, w: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        x = int((w - 90) * (0.5 + 0.45 * __import__("math").sin(i / 15)))
        img, _ = textured_scene(h, w, (h // 3, x, h // 3, 80), seed=i % 50)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)


#: name -> the options after SOURCES (None: `propagate` on the folder, no --video)
CONFIGS = {
    "propagate": None,
    "--video": [],
    "--video --readout-weight 0.5": ["--readout-weight", "0.5"],
    "--video without the memory": ["--readout-prior", "0", "--readout-weight", "0"],
}


def run(frames: Path, ref: Path, mask: Path, out: Path, options: list[str] | None) -> tuple[float, float]:
    source = [str(frames)] if options is None else ["--video", str(frames), *options]
    cmd = [sys.executable, "-m", "icm_cli", "propagate", *source, "--ref", str(ref),
           "--mask", str(mask), "-o", str(out), "--save", "masks", "--quiet", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(proc.stderr.read().decode()[-2000:])
    return wall, usage.ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="100,1000")
    ap.add_argument("--size", default="240x320", help="HxW of the synthetic frames")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    lengths = [int(v) for v in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_frames(tmp / "frames_all", max(lengths), h, w)
        img, mask = textured_scene(h, w, (h // 3, int((w - 90) * 0.5), h // 3, 80), seed=0)
        Image.fromarray(img).save(tmp / "ref.png")
        Image.fromarray(mask * 255).save(tmp / "ref_mask.png")
        print(f"synthetic {h}x{w} frames; torch threads = {os.environ.get('OMP_NUM_THREADS', 'default')}")
        names = [n.strip() for n in args.configs.split(",")]
        print(f"{'frames':>7s} {'configuration':>30s} {'wall s':>8s} {'frames/s':>9s} {'ratio':>6s} {'peak RSS MiB':>13s}")
        for n in lengths:
            seq = tmp / f"seq{n}"
            seq.mkdir()
            for p in sorted((tmp / "frames_all").iterdir())[:n]:
                os.symlink(p, seq / p.name)
            base = None
            for k, name in enumerate(names):
                wall, rss = run(seq, tmp / "ref.png", tmp / "ref_mask.png", tmp / f"out_{n}_{k}", CONFIGS[name])
                base = base or (n / wall if CONFIGS[name] is None else None)
                ratio = f"{n / wall / base:6.2f}" if base else f"{'':6s}"
                print(f"{n:7d} {name:>30s} {wall:8.1f} {n / wall:9.2f} {ratio} {rss:13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
