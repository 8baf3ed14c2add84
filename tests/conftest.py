"""Shared fixtures: small real image files written by the tests themselves."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "2")
# The ONNX export and the reference contexts are cached (icm_cli/cache.py): tests never touch the user's
# cache folder; they share one made for this session (the subprocesses they start inherit it).
TEST_CACHE = tempfile.mkdtemp(prefix="icm-test-cache-")
os.environ["ICM_CACHE_DIR"] = TEST_CACHE
atexit.register(shutil.rmtree, TEST_CACHE, True)
torch.manual_seed(0)


def textured_scene(h: int, w: int, box: tuple[int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like RGB image with a textured red object in ``box`` (top, left, height, width)
    on a textured green-grey background, and its 0/1 mask. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([90 + 30 * np.sin(xx / 7.0), 120 + 25 * np.cos(yy / 5.0), 90 + 20 * np.sin((xx + yy) / 9.0)], -1)
    img = bg + rng.normal(0, 6, (h, w, 3))
    top, left, bh, bw = box
    mask = np.zeros((h, w), np.uint8)
    cy, cx = top + bh / 2, left + bw / 2
    inside = ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1.0
    mask[inside] = 1
    obj = np.stack([200 + 30 * np.sin(xx / 3.0), 40 + 20 * np.cos(yy / 2.0), 50 + 15 * np.sin(xx / 2.0)], -1)
    img[inside] = obj[inside] + rng.normal(0, 6, (int(inside.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


@pytest.fixture
def scene():
    return textured_scene


def save_png(path, array, mode=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """``ref.png``, ``ref_mask.png`` (0/255) and ``src/s0.png`` ... ``s2.png``: the object moved a little each time."""
    root = tmp_path_factory.mktemp("scene")
    img, mask = textured_scene(72, 96, (18, 24, 36, 40), seed=1)
    save_png(root / "ref.png", img)
    save_png(root / "ref_mask.png", mask * 255)
    for i in range(3):
        s_img, _ = textured_scene(72, 96, (12 + 4 * i, 20 + 6 * i, 36, 40), seed=10 + i)
        save_png(root / "src" / f"s{i}.png", s_img)
    return root


#: Settings that make a propagate run take a second on tiny test images.
FAST = ["--head-steps", "10", "--size", "96", "--no-edges", "--quiet"]


def propagate_args(scene, *args) -> list[str]:
    """``icm propagate`` with the scene's reference, ``args`` and :data:`FAST`."""
    return ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"), *args, *FAST]


def write_clip(path, frames, rate=25, codec: str = "mpeg4", *, rotation: int = 0, gop_size: int | None = None,
               options: dict | None = None):
    """Encode ``frames`` (``[H, W, 3]`` uint8, one size) into the video file ``path`` with PyAV; ``rotation``
    goes into the display matrix, ``gop_size`` 1 makes every frame a keyframe, ``options`` are the muxer's."""
    import av

    frames = list(frames)
    container = av.open(str(path), mode="w", **({"options": options} if options else {}))
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    if rotation:
        stream.set_display_rotation(rotation)
    if gop_size is not None:
        stream.codec_context.gop_size = gop_size
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def source_records(manifest) -> list[dict]:
    """The per-source lines of a manifest (each run also writes one ``"record": "run"`` line first)."""
    import json
    from pathlib import Path

    lines = Path(manifest).read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("record") != "run"]


def run_records(manifest) -> list[dict]:
    """The run lines of a manifest: command, settings, references."""
    import json
    from pathlib import Path

    lines = Path(manifest).read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("record") == "run"]
