"""Shared fixtures: small real image files written by the tests themselves."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "2")
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
