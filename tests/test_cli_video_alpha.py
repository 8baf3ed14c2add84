"""`icm propagate --video ... --save masks,alpha,cutout`: the alphas agree with the masks they come from."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.predict.fullres import mask_to_trimap_u8
from tests.conftest import save_png, textured_scene

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]
KERNEL = 6


def test_video_alpha_is_sure_in_the_masks_core_and_zero_outside_its_band(tmp_path):
    frames = tmp_path / "frames"
    for i in range(4):
        img, _ = textured_scene(96, 128, (30, 10 + 12 * i, 40, 50), seed=100 + i)
        save_png(frames / f"{i:03d}.png", img)
    ref, ref_mask = textured_scene(96, 128, (30, 10, 40, 50), seed=100)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--video", str(frames), "--ref", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "ref_mask.png"), "-o", str(out),
                              "--save", "masks,alpha,cutout", "--kernel", str(KERNEL), *FAST])
    assert res.exit_code == 0, res.output
    for i in range(4):
        mask = np.asarray(Image.open(out / "masks" / f"{i:03d}.png")) > 127
        alpha = np.asarray(Image.open(out / "alpha" / f"{i:03d}.png"))
        cut = np.asarray(Image.open(out / "cutout" / f"{i:03d}.png"))
        assert mask.any() and alpha.shape == mask.shape and cut.shape == (*mask.shape, 4)
        trimap = mask_to_trimap_u8(mask.astype(np.float32), KERNEL, KERNEL)
        core, outside = trimap == 255, trimap == 0
        assert core.any() and outside.any()
        assert np.all(alpha[core] == 255), i                   # the eroded mask is sure object
        assert np.all(alpha[outside] == 0), i                  # beyond the dilated mask, nothing
        assert np.array_equal(cut[..., 3], alpha)              # the cut-out carries the same alpha
        assert np.array_equal(cut[core][:, :3], np.asarray(Image.open(frames / f"{i:03d}.png"))[core])
        band = trimap == 128
        assert 0 < alpha[band].mean() < 255                    # the band is solved, not copied from the mask
