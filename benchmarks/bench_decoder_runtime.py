"""The learned decoder's time per image on torch and on ONNX Runtime, in one run, on one thread.

Run:  python benchmarks/bench_decoder_runtime.py [--frames 20] [--rounds 3] [--threads 1]

Builds ``Predictor(ModelConfig(device="cpu"))`` (the backbone and the decoder
on ONNX Runtime, the default on a CPU), sets DAVIS blackswan's first frame
and mask as the reference and makes each frame's real evidence with the
pipeline (``predict_coarse``), untimed. Then decodes the same evidence with
the decoder on torch and on ONNX Runtime, in alternating rounds, and prints
the milliseconds per image of ``Decoders.decode`` (the whole step: canvas,
maps, the network, sigmoid) and of the network alone, best and median round,
and the largest probability difference between the two. Frames are 854x480.
Skips when the data is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("ICM_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sequence", default="blackswan")
    args = ap.parse_args()
    seq = DATA / "davis2016-dev" / "JPEGImages" / args.sequence
    if not seq.is_dir():
        print(f"skipped: {seq} not found (the shared evaluation data is not on this machine)")
        return 0
    import torch

    from icm_cli import io
    from icm_cli.config import ModelConfig
    from icm_cli.predict.decoder import decoder_maps
    from icm_cli.predict.context import to_tensor
    from icm_cli.predictor import Predictor

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    frames = sorted(seq.glob("*.jpg"))
    mask = DATA / "davis2016-dev" / "Annotations" / args.sequence / f"{frames[0].stem}.png"
    predictor = Predictor(ModelConfig(device="cpu"))
    decoders = predictor.propagator.decoders
    if decoders.runtime != "onnx":
        print(f"the decoder is not on ONNX Runtime here: {predictor.runtime_note}")
        return 1
    predictor.set_reference(str(frames[0]), str(mask))
    context = predictor.propagator.context
    images = [io.read_image(f) for f in frames[1:1 + args.frames]]
    evidence = [predictor.pipeline.predict_coarse([img])[0] for img in images]
    print(f"{len(images)} frames of {images[0].shape[1]}x{images[0].shape[0]}, canvas "
          f"{evidence[0].geometry.padded_w}x{evidence[0].geometry.padded_h}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    # The network's own inputs, as decode() makes them, for the network-alone times.
    inputs = []
    for img, ev in zip(images, evidence):
        canvas = ev.geometry.to_canvas(to_tensor(img))
        inputs.append((decoder_maps(ev), canvas, dict(ev.levels), {s: p[None] for s, p in context.prototypes.items()}))

    def run(runtime: str) -> tuple[float, float, list]:
        decoders.use_runtime(runtime)
        network = decoders._run(decoders.decoder)
        t0 = time.perf_counter()
        probs = [decoders.decode(img, ev, context) for img, ev in zip(images, evidence)]
        t1 = time.perf_counter()
        for maps, canvas, levels, protos in inputs:
            network(maps, canvas, levels, protos)
        t2 = time.perf_counter()
        return 1e3 * (t1 - t0) / len(images), 1e3 * (t2 - t1) / len(images), probs

    times = {"torch": [], "onnx": []}
    probs = {}
    run("torch"), run("onnx")  # warm-up: sessions made, caches filled
    for _ in range(args.rounds):
        for runtime in ("torch", "onnx"):
            step, net, probs[runtime] = run(runtime)
            times[runtime].append((step, net))
    for runtime, rows in times.items():
        steps, nets = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{runtime:6s} decode() {min(steps):6.1f} ms/image (median {statistics.median(steps):.1f})   "
              f"network alone {min(nets):6.1f} ms (median {statistics.median(nets):.1f})")
    diff = max(float((a - b).abs().max()) for a, b in zip(probs["torch"], probs["onnx"]))
    speedup = min(r[0] for r in times["torch"]) / min(r[0] for r in times["onnx"])
    print(f"decode() ONNX Runtime vs torch: {speedup:.2f}x; largest |probability difference| {diff:.2e}; "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
