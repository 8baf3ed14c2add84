"""`icm trimap` on real mask files of every kind users have."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app

runner = CliRunner()


def _square_mask(h=40, w=50):
    m = np.zeros((h, w), np.uint8)
    m[10:30, 15:40] = 1
    return m


def test_trimap_values_sizes_and_bit_depths(tmp_path):
    m = _square_mask()
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(m * 255).save(masks / "a_u8.png")
    Image.fromarray(m.astype(np.uint16) * 65535).save(masks / "b_u16.png")
    pal = Image.frombytes("P", (50, 40), m.tobytes())
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.save(masks / "c_palette.png")
    Image.fromarray(m).save(masks / "d_01.png")
    (masks / "e_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--kernel", "5", "--quiet"])
    assert res.exit_code == 1  # the corrupt file failed ...
    assert "e_corrupt.png" in res.output
    results = {}
    for stem in ["a_u8", "b_u16", "c_palette", "d_01"]:  # ... and the rest were written
        t = np.asarray(Image.open(out / f"{stem}.png"))
        assert t.shape == (40, 50) and t.dtype == np.uint8
        assert set(np.unique(t)) == {0, 128, 255}
        results[stem] = t
    for stem in ["b_u16", "c_palette", "d_01"]:
        np.testing.assert_array_equal(results[stem], results["a_u8"])
    t = results["a_u8"]
    # Kernel 5: 2 pixels of erosion and dilation on each side of the square's edge.
    assert (t[12:28, 17:38] == 255).all() and t[11, 20] == 128 and t[10, 20] == 128
    assert t[8, 20] == 128 and t[7, 20] == 0 and t[20, 13] == 128 and t[20, 12] == 0


def test_even_kernel_and_separate_erode_dilate(tmp_path):
    m = _square_mask()
    Image.fromarray(m * 255).save(tmp_path / "m.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(tmp_path / "m.png"), "-o", str(out), "--erode", "3", "--dilate", "10", "-q"])
    assert res.exit_code == 0, res.output
    t = np.asarray(Image.open(out / "m.png"))
    assert t.shape == (40, 50)
    fg, unknown = (t == 255).sum(), (t == 128).sum()
    assert fg == 18 * 23  # eroded by one pixel on each side
    assert unknown > (20 * 25 - fg)  # band reaches outside the mask


def test_existing_trimaps_are_skipped_unless_overwrite(tmp_path):
    Image.fromarray(_square_mask() * 255).save(tmp_path / "m.png")
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.full((40, 50), 7, np.uint8)).save(out / "m.png")
    res = runner.invoke(app, ["trimap", str(tmp_path / "m.png"), "-o", str(out), "-q"])
    assert res.exit_code == 0 and np.asarray(Image.open(out / "m.png")).max() == 7
    res = runner.invoke(app, ["trimap", str(tmp_path / "m.png"), "-o", str(out), "-q", "--overwrite"])
    assert res.exit_code == 0 and np.asarray(Image.open(out / "m.png")).max() == 255
