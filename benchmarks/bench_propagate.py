"""End-to-end speed of `icm propagate` beside the baseline, on 854x480 frames, in one run.

    python benchmarks/bench_propagate.py [--frames 64] [--long 500] [--threads 2] [--runtimes onnx,torch]

Prints, measured in this one run (each a subprocess, start-up included):
- icm with a cold cache (the one-off ONNX export and the reference
  context), with the export cached but new references (a first run with
  new references), and a rerun whose reference context is cached; the
  baseline (../shared/baseline) between them; images/s, the ratio to the
  baseline, the time to the first result (from ``--json``) and peak RSS;
- ``--runtime torch`` beside ``--runtime onnx`` (export cached, new references);
- with ``--long N``: N frames, icm and the baseline;
- in-process: model load, reference set-up, stream images/s and the
  backbone's share of the stream.
Frames come from ../shared/data/davis2016-dev (blackswan, cycled) when
present, else synthetic 854x480 frames are generated. The machine's load
average is printed with each figure: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def load() -> str:
    return "load %.1f" % os.getloadavg()[0]


def run_child(cmd: list[str], env: dict) -> dict:
    """Run one command; wall seconds, peak RSS (MiB) and, for ``--json`` runs, seconds to the first record."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith("{"):
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed:\n{err[-2000:]}")
    return {"wall": wall, "rss": usage.ru_maxrss / 1024.0, "first": first, "load": load()}


def in_process(frames: Path, ref: Path, mask: Path, out: Path, runtime: str) -> dict:
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
    predictor = Predictor(ModelConfig(device="cpu", runtime=runtime), reference_cache=False)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.set_references(load_references([str(ref)], [str(mask)]))
    ref_s = time.perf_counter() - t0
    predictor.propagator.backbone_seconds = 0.0
    manifest = ManifestWriter(out / "manifest.jsonl")
    runner = BatchRunner(OutputPlan(out), manifest)
    workers = predictor.pipeline.stream_workers()
    t0 = time.perf_counter()
    with predictor.pipeline.streaming(workers):
        outcome = runner.run_images(list(SourceFinder([frames])), predictor.pipeline, batch_size=1, workers=workers)
    wall = time.perf_counter() - t0
    manifest.close()
    return {"load_s": load_s, "reference_s": ref_s, "stream_s": wall, "images": outcome.done,
            "backbone_share": predictor.propagator.backbone_seconds / wall, "stream_ips": outcome.done / wall,
            "workers": workers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--long", type=int, default=0, help="also run this many frames (icm and the baseline)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtimes", default="onnx,torch", help="runtimes compared in-process and end to end")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    import torch
    import onnxruntime

    torch.set_num_threads(args.threads)
    baseline = not args.skip_baseline and (SHARED / "baseline").is_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames, ref, mask = make_frames(tmp, max(args.frames, args.long))
        short = tmp / "short"
        short.mkdir()
        for p in sorted(frames.iterdir())[:args.frames]:
            os.symlink(os.path.realpath(p), short / p.name)
        cache = tmp / "cache"
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(SHARED / "baseline"),
                   ICM_CACHE_DIR=str(cache))
        n = args.frames
        print(f"{n} frames 854x480 from {'DAVIS blackswan' if 'shared' in str(ref) else 'synthetic scenes'}; "
              f"{args.threads} threads; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
              f"{os.cpu_count()} CPUs; {load()} at the start")

        def icm(name, source, runtime="auto"):
            cmd = [sys.executable, "-m", "icm_cli", "propagate", "--ref", str(ref), "--mask", str(mask), str(source),
                   "-o", str(tmp / name), "--json", "--device", "cpu", "--runtime", runtime]
            return run_child(cmd, env)

        def base(name, source):
            return run_child([sys.executable, "-m", "icm_baseline", "propagate", str(source), "--ref", str(ref),
                              "--mask", str(mask), "-o", str(tmp / name)], env)

        rows = [("icm, cold cache (export + context)", icm("cold", short))]
        if baseline:
            rows.append(("baseline", base("base1", short)))
        shutil.rmtree(cache / "contexts")
        rows.append(("icm, new references", icm("new_refs", short)))
        rows.append(("icm, rerun (context cached)", icm("warm", short)))
        if baseline:
            rows.append(("baseline (again)", base("base2", short)))
        runtimes = [r for r in args.runtimes.split(",") if r]
        for runtime in runtimes:
            shutil.rmtree(cache / "contexts")
            rows.append((f"icm --runtime {runtime}, new references", icm(f"rt_{runtime}", short, runtime)))
        base_ips = [n / r["wall"] for name, r in rows if name.startswith("baseline")]
        print("\nend to end, start-up included (subprocess):")
        print(f"  {'':40s} {'wall s':>7s} {'img/s':>6s} {'x base':>7s} {'first s':>8s} {'RSS MiB':>8s}  load")
        for name, r in rows:
            ips = n / r["wall"]
            ratio = f"{ips / (sum(base_ips) / len(base_ips)):.2f}x" if base_ips else ""
            first = f"{r['first']:.2f}" if r["first"] is not None else ""
            print(f"  {name:40s} {r['wall']:7.2f} {ips:6.2f} {ratio:>7s} {first:>8s} {r['rss']:8.0f}  {r['load']}")
        if args.long:
            print(f"\n{args.long} frames, start-up included (export cached, new references):")
            shutil.rmtree(cache / "contexts")
            long_rows = [("icm", icm("long_icm", frames))]
            if baseline:
                long_rows.append(("baseline", base("long_base", frames)))
            for name, r in long_rows:
                print(f"  {name:40s} {r['wall']:7.2f} s {args.long / r['wall']:6.2f} img/s "
                      f"{r['rss']:8.0f} MiB  {r['load']}")
            if len(long_rows) == 2:
                print(f"  icm / baseline images/s: {long_rows[1][1]['wall'] / long_rows[0][1]['wall']:.2f}x")
        print("\nicm in-process (no reference cache), per runtime:")
        os.environ["ICM_CACHE_DIR"] = str(cache)
        for runtime in runtimes:
            r = in_process(short, ref, mask, tmp / f"inproc_{runtime}", runtime)
            print(f"  {runtime:6s}: model load {r['load_s']:.2f}s, reference set-up {r['reference_s']:.2f}s, "
                  f"stream {r['stream_s']:.2f}s = {r['stream_ips']:.2f} img/s ({r['workers']} finishing threads), "
                  f"backbone forward {100 * r['backbone_share']:.0f}% of stream wall time  ({load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
