"""Scaling out `icm propagate`: local engine, `--shard` processes and the Ray engine.

    python benchmarks/bench_scale.py [--frames 64] [--skip-ray]

Runs, one after another, on the same 854x480 frames (DAVIS blackswan from
../shared/data/davis2016-dev when present, else synthetic scenes), each as
its own `icm propagate` process at default settings on the CPU:

- the local engine with 2 torch threads, and with 1;
- 2 processes `--shard 1/2` and `--shard 2/2` started together (1 thread each);
- the Ray engine (`--engine ray`, a local instance it starts) with 1 and 2 workers.

For each: wall time and images/s end to end (model load and reference set-up
included), the time to the first manifest record (for Ray it also holds Ray
Data's buffering of the first outputs), and the mean model + finish
(GrabCut, trimap, writing) seconds per image from the manifest (the local
engine overlaps these on two threads, so they add up to more than its
per-image wall time; a Ray worker runs them one after the other). The
Ray overhead per image is Ray-with-1-worker minus the local engine with 1
thread (both one thread of model work), end to end. Masks and trimaps of
every run are compared byte for byte with the local run of the same torch
thread count (the object head trains on one thread whatever the count, but
the backbone's float sums can differ in the last bits between thread counts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_propagate import make_frames  # noqa: E402  (one frame maker for every benchmark)


def _records(out: Path) -> list[dict]:
    lines = []
    for manifest in sorted(out.glob("manifest*.jsonl")):
        lines += [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
    return lines


def run(name: str, commands: list[list[str]], threads: int, out: Path, frames: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), RAY_USAGE_STATS_ENABLED="0")
    start = time.time()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    errors = [p.communicate()[1] for p in procs]
    wall = time.time() - start
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise SystemExit(f"{name}: exit {p.returncode}\n{err[-3000:]}")
    records = _records(out)
    done = [r for r in records if r["status"] == "done"]
    if len(done) != frames:
        raise SystemExit(f"{name}: {len(done)} of {frames} frames done")
    first = min(datetime.fromisoformat(r["time"]).timestamp() for r in done)
    work = sum(r["timing"]["model_s"] + r["timing"]["finish_s"] for r in done) / frames
    return {"name": name, "wall": wall, "ips": frames / wall, "first": first - start, "work": work,
            "threads": threads, "out": out}


def same_bytes(a: Path, b: Path) -> bool:
    for kind in ("masks", "trimaps"):
        names = sorted(p.name for p in (a / kind).glob("*.png"))
        if names != sorted(p.name for p in (b / kind).glob("*.png")):
            return False
        if any((a / kind / n).read_bytes() != (b / kind / n).read_bytes() for n in names):
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--skip-ray", action="store_true", help="Only the local engine and the shards.")
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
        have_ray = not args.skip_ray
    except ImportError:
        have_ray = False
    n = args.frames
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames, ref, mask = make_frames(tmp, n)
        print(f"{n} frames 854x480 from {'DAVIS blackswan' if 'shared' in str(ref) else 'synthetic scenes'}, "
              f"{os.cpu_count()} CPUs, default settings, CPU")

        def icm(out: Path, *extra: str) -> list[str]:
            return [sys.executable, "-m", "icm_cli", "propagate", "--ref", str(ref), "--mask", str(mask),
                    str(frames), "-o", str(out), "--quiet", "--device", "cpu", *extra]

        rows = [run("local engine, 2 threads", [icm(tmp / "local2")], 2, tmp / "local2", n),
                run("local engine, 1 thread", [icm(tmp / "local1")], 1, tmp / "local1", n),
                run("2 processes --shard 1/2, 2/2 (1 thread each)",
                    [icm(tmp / "shard", "--shard", "1/2"), icm(tmp / "shard", "--shard", "2/2")], 1,
                    tmp / "shard", n)]
        if have_ray:
            for k in (1, 2):
                rows.append(run(f"Ray engine, {k} worker{'s' if k > 1 else ''}",
                                [icm(tmp / f"ray{k}", "--engine", "ray", "--workers", str(k))], 1,
                                tmp / f"ray{k}", n))
        print(f"\n| {'run':46s} | {'wall s':>6s} | {'img/s':>5s} | {'1st record s':>12s} "
              f"| {'model+finish s/img':>18s} | {'same bytes as local, same threads':>33s} |")
        print(f"|{'-' * 48}|{'-' * 8}|{'-' * 7}|{'-' * 14}|{'-' * 20}|{'-' * 35}|")
        reference = {r["threads"]: r for r in rows[:2]}
        for r in rows:
            base = reference[r["threads"]]
            same = "(reference)" if base is r else ("yes" if same_bytes(base["out"], r["out"]) else "NO")
            print(f"| {r['name']:46s} | {r['wall']:6.1f} | {r['ips']:5.2f} | {r['first']:12.1f} "
                  f"| {r['work']:18.2f} | {same:>33s} |")
        if have_ray:
            local1, ray1 = rows[1], rows[3]
            print(f"\nRay overhead per image (1 worker vs local engine, 1 thread, end to end): "
                  f"{1000 * (ray1['wall'] - local1['wall']) / n:+.0f} ms "
                  f"({ray1['wall'] - local1['wall']:+.1f} s over {n} frames; Ray start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
