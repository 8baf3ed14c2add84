"""Make samples/montage.png for the README with icm itself.

    python samples/make_montage.py

Runs `icm propagate` on the demo set (samples/demo) and lays out, for three
sources, the source, its heat map and its mask outline, under the reference.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from icm_cli import io, render  # noqa: E402


def main() -> int:
    demo = HERE / "demo"
    picks = ["02_flipped_small_grass", "03_large_darker_gravel", "06_cut_by_frame_cat"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "icm_cli", "propagate", "--ref", str(demo / "reference.jpg"),
                        "--mask", str(demo / "reference_mask.png"), str(demo / "sources"), "-o", str(out),
                        "--quiet"], check=True)
        ref = io.read_image(demo / "reference.jpg")
        ref_mask = io.read_mask(demo / "reference_mask.png") >= 0.5
        rows = [render.montage([render.label(render.mask_outline(ref, ref_mask, (64, 255, 64), 3), "reference + mask")], 150)]
        for stem in picks:
            src = io.read_image(demo / "sources" / f"{stem}.jpg")
            heat = io.read_image(out / "heatmaps" / f"{stem}.png")
            mask = io.read_mask(out / "masks" / f"{stem}.png") >= 0.5
            rows.append(render.montage([render.label(render.fit_height(src, 150), "source"),
                                        render.label(render.fit_height(heat, 150), "heatmaps/"),
                                        render.label(render.fit_height(render.mask_outline(src, mask), 150), "masks/")], 150))
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        io.write_image_atomic(HERE / "montage.png", np.concatenate(padded, axis=0))
    print(f"wrote {HERE / 'montage.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
