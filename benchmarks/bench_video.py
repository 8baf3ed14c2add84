"""`icm propagate --video`: frames/s with and without memory, and peak memory vs sequence length.

    python benchmarks/bench_video.py [--lengths 100,1000] [--size 240x320]

Synthetic frames (an object drifting over a textured background) are written
to a temporary folder; each configuration runs as a subprocess and its peak
RSS is read from the kernel. A bounded run shows the same peak for 100 and
1000 frames.
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


def run(frames: Path, ref: Path, mask: Path, out: Path, memory: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "icm_cli", "propagate", "--video", str(frames), "--ref", str(ref),
           "--mask", str(mask), "-o", str(out), "--memory", str(memory), "--save", "masks", "--quiet",
           "--device", "cpu"]
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
    ap.add_argument("--memory", default="0,3")
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
        print(f"{'frames':>7s} {'memory':>7s} {'wall s':>8s} {'frames/s':>9s} {'peak RSS MiB':>13s}")
        for n in lengths:
            seq = tmp / f"seq{n}"
            seq.mkdir()
            for p in sorted((tmp / "frames_all").iterdir())[:n]:
                os.symlink(p, seq / p.name)
            for m in (int(v) for v in args.memory.split(",")):
                wall, rss = run(seq, tmp / "ref.png", tmp / "ref_mask.png", tmp / f"out_{n}_{m}", m)
                print(f"{n:7d} {m:7d} {wall:8.1f} {n / wall:9.2f} {rss:13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
