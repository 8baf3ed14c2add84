"""Output folder names come from one place (``runner/outputs``), and alpha is rounded to 8 bits by one
function (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icm_cli.alpha_temporal import quantised
from icm_cli.config import OutputConfig
from icm_cli.matting import alpha_to_u8
from icm_cli.runner.outputs import OutputPlan, output_folder, output_path, scored_folder_name


def test_output_names_known_answers():
    root = Path("/o")
    assert output_folder(root, "masks") == Path("/o/masks")
    assert output_path(root, "alpha", "clip/f001") == Path("/o/alpha/clip/f001.png")
    plan = OutputPlan(root, OutputConfig(("masks", "alpha")))
    assert plan.paths("x") == {"masks": Path("/o/masks/x.png"), "alpha": Path("/o/alpha/x.png")}
    assert Path("/o/heatmaps") in plan.written_folders
    assert (scored_folder_name("mask"), scored_folder_name("alpha")) == ("masks", "alpha")


def test_alpha_to_u8_known_answers_rounds_halves_up():
    alpha = np.array([[-1.0, 0.0, 0.2, 0.5, 1.0, 2.0, np.float32(100.5) / 255]], np.float32)
    assert np.float32(0.5) * np.float32(255.0) == np.float32(127.5)  # an exact tie, rounded up
    assert alpha_to_u8(alpha).tolist() == [[0, 0, 51, 128, 255, 255, 101]]
    assert alpha_to_u8(alpha).dtype == np.uint8


def test_the_steadied_state_is_what_the_png_stores():
    """quantised() gives exact levels k/255, which alpha_to_u8 (the PNG writer's rounding) stores as k."""
    rng = np.random.default_rng(3)
    alpha = rng.random((64, 64), dtype=np.float32)
    alpha.flat[:3] = [np.float32(0.5), 0.0, 1.0]
    levels = quantised(alpha)
    assert levels.dtype == np.float32
    np.testing.assert_array_equal(alpha_to_u8(levels).astype(np.float32) / 255.0, levels)
    np.testing.assert_array_equal(quantised(alpha_to_u8(levels).astype(np.float32) / 255.0), levels)  # a resume
