"""Reading images/masks as users have them, finding sources, writing atomically."""

from __future__ import annotations

import io as pyio
import os

import numpy as np
import pytest
from PIL import Image

from icm_cli import io


def _mask_array():
    m = np.zeros((6, 8), np.uint8)
    m[1:4, 2:6] = 1
    return m


@pytest.mark.parametrize("kind", ["u8_255", "u8_01", "palette", "u16", "rgb", "rgb_blue", "la", "bit"])
def test_read_mask_all_formats_give_the_same_binary_mask(tmp_path, kind):
    m = _mask_array()
    path = tmp_path / f"{kind}.png"
    if kind == "u8_255":
        Image.fromarray(m * 255).save(path)
    elif kind == "u8_01":
        Image.fromarray(m).save(path)
    elif kind == "palette":
        # Palette colours chosen so that index 1 is dark: indices, not colours, must count.
        pal = [255, 255, 255, 10, 10, 10] + [0] * (256 * 3 - 6)
        img = Image.frombytes("P", (8, 6), m.tobytes())
        img.putpalette(pal)
        img.save(path)
    elif kind == "u16":
        Image.fromarray((m.astype(np.uint16) * 65535)).save(path)
    elif kind == "rgb":
        Image.fromarray(np.repeat(m[..., None] * 255, 3, axis=2)).save(path)
    elif kind == "rgb_blue":
        rgb = np.zeros((6, 8, 3), np.uint8)
        rgb[..., 2] = m * 255
        Image.fromarray(rgb).save(path)
    elif kind == "la":
        Image.fromarray(m * 255).convert("LA").save(path)
    elif kind == "bit":
        Image.fromarray(m * 255).convert("1").save(path)
    got = io.binary_mask(io.read_mask(path))
    assert got.dtype == bool
    np.testing.assert_array_equal(got, m.astype(bool))


def test_read_mask_16bit_thresholds_at_half_range(tmp_path):
    arr = np.array([[0, 30000, 40000, 65535]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "m.png")
    np.testing.assert_array_equal(io.binary_mask(io.read_mask(tmp_path / "m.png")), [[False, False, True, True]])


def test_read_image_converts_modes_to_rgb(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # transparent pixel becomes white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = io.read_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[1, 1]) == (200, 0, 0)
    Image.fromarray((np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)).save(tmp_path / "g16.png")
    g = io.read_image(tmp_path / "g16.png")
    assert g.shape == (4, 5, 3) and g[3, 4, 0] == round(19 * 3000 / 65535 * 255)
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    c = io.read_image(tmp_path / "c.jpg")
    assert c.shape == (4, 5, 3) and c[0, 0, 0] > 200 and c[0, 0, 1] < 60


def test_read_image_applies_exif_rotation(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = io.read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)
    assert out[:10].mean() > 200 and out[10:].mean() < 50  # left half is now on top


@pytest.mark.parametrize("content,needle", [(b"", "corrupt"), (b"not an image at all", "corrupt"),
                                            (None, "not found")])
def test_read_image_errors_name_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(io.InputError) as err:
        io.read_image(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert needle in msg or "not an image" in msg


def test_truncated_png_is_an_input_error(tmp_path):
    buf = pyio.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(io.InputError, match="t.png"):
        io.read_image(tmp_path / "t.png")


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(io.InputError, match="over the limit"):
        io.read_image(tmp_path / "big.png", max_pixels=5000)


def test_write_image_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out" / "m.png"
    io.write_image_atomic(target, np.full((3, 4), 255, np.uint8))
    assert np.asarray(Image.open(target)).tolist() == [[255] * 4] * 3
    assert [p.name for p in target.parent.iterdir()] == ["m.png"]


def test_write_into_unwritable_folder_is_an_output_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "m.png"  # a path below a regular file can never be created
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "m.png"
    with pytest.raises(io.OutputError, match="m.png|file") as err:
        io.write_image_atomic(target, np.zeros((2, 2), np.uint8))
    assert not isinstance(err.value, io.InputError)  # the output is at fault, not an input


@pytest.mark.parametrize("shape", [(5, 7), (1, 300), (300, 1), (17, 19, 3), (16, 9, 4), (1, 1, 3), (6, 5, 2)])
def test_written_png_decodes_to_exactly_the_array(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    array.reshape(-1)[:256] = np.arange(256)[: array.size]  # every value, where the image is big enough
    target = tmp_path / "out.png"
    io.write_image_atomic(target, array)
    with Image.open(target) as img:
        assert img.format == "PNG"
        assert img.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[shape[2] if len(shape) == 3 else 1], img.mode
        assert np.array_equal(np.asarray(img), array)
    assert os.stat(target).st_mode & 0o777 == io.output_file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_written_mask_and_trimap_are_8_bit_grey(tmp_path):
    trimap = np.zeros((40, 60), np.uint8)
    trimap[5:30, 10:50] = 128
    trimap[10:25, 15:45] = 255
    io.write_image_atomic(tmp_path / "t.png", trimap)
    with Image.open(tmp_path / "t.png") as img:
        assert (img.mode, img.info.get("bits", 8)) == ("L", 8)
        assert np.array_equal(np.asarray(img), trimap)


def test_write_image_refuses_other_than_uint8(tmp_path):
    with pytest.raises(TypeError):
        io.write_image_atomic(tmp_path / "f.png", np.zeros((3, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_png_written_through_pillow_where_opencv_cannot_set_the_filter(tmp_path, monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "IMWRITE_PNG_FILTER")
    array = np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    io.write_image_atomic(tmp_path / "p.png", array)
    with Image.open(tmp_path / "p.png") as img:
        assert np.array_equal(np.asarray(img), array)


def test_every_format_reads_in_a_fresh_process(tmp_path):
    """Only the common plugins are registered up front: a WebP, TIFF or GIF still opens (Pillow registers
    the rest when a file needs them), in a process that has read nothing before."""
    import subprocess
    import sys

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[1:4, 2:6] = (200, 30, 90)
    for suffix, extra in ((".webp", {"lossless": True}), (".tif", {}), (".gif", {}), (".bmp", {})):
        Image.fromarray(rgb).save(tmp_path / f"a{suffix}", **extra)
    code = ("import sys; from icm_cli import io\n"
            "for p in sys.argv[1:]: print(p, io.read_image(p)[2, 3].tolist())")
    files = [str(tmp_path / f"a{s}") for s in (".webp", ".tif", ".gif", ".bmp")]
    out = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"{p} [200, 30, 90]" for p in files], out
