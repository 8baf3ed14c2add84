"""`icm review` on many results: first run (every thumbnail made), rerun (all reused), rerun after a fix.

    python benchmarks/bench_review.py [--n 1000] [--size 854x480] [--workers 0] [--keep DIR]

Writes N synthetic results as a propagate run leaves them (JPEG sources,
0/255 mask PNGs and RGB heat-map PNGs at the source size, a manifest with a
run record and confidences, a few failed sources), then times the real
``icm review`` command in a fresh process each time, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_results(root: Path, n: int, width: int, height: int) -> Path:
    """N results under ``root/out`` from sources under ``root/src``; returns OUT."""
    rng = np.random.default_rng(0)
    out, src = root / "out", root / "src"
    for d in (src, out / "masks", out / "heatmaps"):
        d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([40 + 150 * xx / width, 60 + 120 * yy / height, 120 + 0 * xx], -1)
    noise = rng.normal(0, 10, (height, width, 3))
    lines = [json.dumps({"record": "run", "run": "bench", "time": "2026-01-01T10:00:00+00:00",
                         "command": ["icm", "propagate", "--ref", "ref.jpg", "--mask", "ref_mask.png", str(src),
                                     "-o", str(out)], "cwd": str(root), "version": "bench", "settings": {},
                         "references": []})]
    for i in range(n):
        name = f"frame_{i:05d}"
        cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, rng.uniform(0.1, 0.3) * height
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = base + np.roll(noise, i, axis=1)
        img[mask] = (220, 190, 50)
        img = np.clip(img, 0, 255).astype(np.uint8)
        failed = i % 250 == 7
        if failed:
            (src / f"{name}.jpg").write_bytes(b"not a jpeg")
        else:
            Image.fromarray(img).save(src / f"{name}.jpg", quality=90)
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{name}.png", compress_level=1)
            heat = (0.5 * img + 0.5 * np.where(mask[..., None], [230, 50, 30], [40, 40, 150])).astype(np.uint8)
            Image.fromarray(heat).save(out / "heatmaps" / f"{name}.png", compress_level=1)
        rec = {"record": "source", "run": "bench", "input": str(src / f"{name}.jpg"), "stem": name,
               "status": "failed" if failed else "done",
               "outputs": {} if failed else {k: str(out / k / f"{name}.png") for k in ("masks", "heatmaps")},
               "error": f"{src / name}.jpg: not an image PIL can read" if failed else None, "timing": {},
               "confidence": None if failed else round(float(rng.beta(5, 2)), 4), "empty": None if failed else False,
               "mask_area": None if failed else float(mask.mean()),
               "time": f"2026-01-01T10:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i % 60:03d}+00:00"}
        lines.append(json.dumps(rec))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def timed_review(out: Path, workers: int) -> tuple[str, str]:
    """Wall seconds and CPU seconds (user + system) of one `icm review` process, and its summary line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "icm_cli", "review", str(out), "--workers", str(workers)],
                          cwd=ROOT, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"icm review failed ({done.returncode}): {done.stderr}")
    return f"{secs:6.2f}s wall, {cpu:6.2f}s CPU", done.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", default="854x480", help="WIDTHxHEIGHT of the synthetic sources")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="make the results here and keep them (reused when present)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    root = args.keep or Path(tempfile.mkdtemp(prefix="icm-bench-review-"))
    try:
        out = root / "out"
        if not (out / "manifest.jsonl").is_file():
            t0 = time.perf_counter()
            make_results(root, args.n, width, height)
            print(f"made {args.n} synthetic results at {width}x{height} in {time.perf_counter() - t0:.0f}s")
        shutil.rmtree(out / ".review", ignore_errors=True)
        first, line = timed_review(out, args.workers)
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"first run (all thumbnails made): {first}   {line}")
        again, line = timed_review(out, args.workers)
        print(f"rerun (all reused):              {again}   {line}")
        for mask in sorted((out / "masks").glob("*.png"))[:10]:
            mask.touch()
        fixed, line = timed_review(out, args.workers)
        print(f"rerun after 10 masks changed:    {fixed}   {line}")
        page = out / "review.html"
        print(f"page: {page} ({page.stat().st_size / 1e6:.2f} MB), thumbnails "
              f"{sum(p.stat().st_size for p in (out / '.review' / 'thumbs').glob('*.jpg')) / 1e6:.1f} MB")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
