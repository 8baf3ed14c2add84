"""Where one image's time goes: CPU milliseconds per step of `icm propagate`, default settings.

    python benchmarks/profile_propagate.py [--frames 20] [--sequence blackswan] [--set key=value ...]

Runs the steps the batch runner runs for each source (read, backbone, the
in-context search, decoder, full-size finish, confidence, rendering, PNG
encoding of the default outputs) one after the other on one thread (torch on
one thread; ONNX Runtime's backbone on its own threads, counted), on 854x480
DAVIS frames of ../shared/data (synthetic frames when it is absent), and
prints each step's CPU time per image (PNG encoding as icm writes them, without the file) (process CPU time, so threads that
help a step are counted). Steps inside others are timed by wrapping the
functions that do them (nearest-neighbour contrast, ICM heat, GrabCut,
cleaning, confidence); "other" is what the enclosing step spends besides.
The reference set-up (context, object head) happens once and is not counted.
Compare the rows of one run; the machine's load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DAVIS = ROOT.parent / "shared" / "data" / "davis2016-dev"


def frames_and_reference(sequence: str, count: int):
    folder = DAVIS / "JPEGImages" / sequence
    if folder.is_dir():
        names = sorted(folder.iterdir())[:count]
        mask = np.asarray(Image.open(DAVIS / "Annotations" / sequence / "00000.png").convert("L")) > 127
        return [np.asarray(Image.open(n).convert("RGB")) for n in names], names[0], mask
    from tests.conftest import textured_scene

    scenes = [textured_scene(480, 854, (150, 300, 330, 560), seed=i) for i in range(count)]
    return [s[0] for s in scenes], None, scenes[0][1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--sequence", default="blackswan")
    parser.add_argument("--set", action="append", default=[], help="PropagateSettings override key=value")
    args = parser.parse_args()

    import dataclasses

    import torch

    from icm_cli.config import ModelConfig
    from icm_cli.io import encode_png
    from icm_cli.predict import confidence, evidence_builder, fullres, nearest
    from icm_cli.predictor import Predictor
    from icm_cli.runner.outputs import OutputPlan

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.process_time() - t
        return wrapper

    evidence_builder.contrast_similarities = timed("nearest-neighbour contrast", nearest.contrast_similarities)
    evidence_builder.icm_heat = timed("ICM heat (inter, intra)", evidence_builder.icm_heat)
    fullres.grabcut_mask = timed("GrabCut", fullres.grabcut_mask)
    fullres.fill_holes = timed("holes and components", fullres.fill_holes)
    fullres.keep_confident_components = timed("holes and components", fullres.keep_confident_components)
    confidence.assess = timed("confidence", confidence.assess)

    images, ref_path, ref_mask = frames_and_reference(args.sequence, args.frames)
    predictor = Predictor(ModelConfig(device="cpu"), reference_cache=False)
    if args.set:
        overrides = {}
        for item in args.set:
            key, value = item.split("=", 1)
            kind = type(getattr(predictor.propagator.settings, key))
            overrides[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
        predictor.propagator.settings = dataclasses.replace(predictor.propagator.settings, **overrides)
    predictor.set_reference(images[0], ref_mask.astype(np.float32))
    decoders = predictor.propagator.decoders
    decoders.decode = timed("decoder", decoders.decode)
    plan = OutputPlan(Path(tempfile.mkdtemp()))
    pipeline = predictor.pipeline

    steps = defaultdict(float)
    start = time.process_time()
    for index, image in enumerate(images):
        t = time.process_time()
        if ref_path is not None:  # read as the runner does (JPEG decode)
            Image.open(sorted((DAVIS / "JPEGImages" / args.sequence).iterdir())[index]).convert("RGB").load()
        steps["read (JPEG decode)"] += time.process_time() - t
        for name, call in (("backbone", lambda: pipeline.encode_batch([image])),):
            t = time.process_time()
            encoded = call()
            steps[name] += time.process_time() - t
        t = time.process_time()
        coarse = pipeline.predict_coarse([image], encoded=encoded)[0]
        steps["search (enclosing)"] += time.process_time() - t
        t = time.process_time()
        result = pipeline.finish(image, coarse)
        steps["finish (enclosing)"] += time.process_time() - t
        t = time.process_time()
        outputs = plan.render(image, result)
        steps["render outputs"] += time.process_time() - t
        t = time.process_time()
        for array in outputs.values():
            encode_png(array)
        steps["PNG encoding"] += time.process_time() - t
    total = time.process_time() - start

    n = len(images)
    inner_search = ("nearest-neighbour contrast", "ICM heat (inter, intra)")
    inner_finish = ("decoder", "GrabCut", "holes and components", "confidence")
    rows = [("read (JPEG decode)", steps["read (JPEG decode)"]), ("backbone", steps["backbone"])]
    rows += [(name, spent[name]) for name in inner_search]
    rows.append(("search: other (object head, fusion)", steps["search (enclosing)"] - sum(spent[k] for k in inner_search)))
    rows += [(name, spent[name]) for name in inner_finish]
    rows.append(("finish: other (resizing, gate)", steps["finish (enclosing)"] - sum(spent[k] for k in inner_finish)))
    rows += [("render outputs", steps["render outputs"]), ("PNG encoding", steps["PNG encoding"])]
    print(f"{n} frames {images[0].shape[1]}x{images[0].shape[0]} ({args.sequence if ref_path else 'synthetic'}), "
          f"runtime {predictor.runtime}, settings overrides {args.set or 'none'}; load {os.getloadavg()[0]:.1f}")
    print(f"{'step':40s} {'ms per image':>12s}")
    for name, seconds in rows:
        print(f"{name:40s} {1000 * seconds / n:12.1f}")
    print(f"{'total':40s} {1000 * total / n:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
