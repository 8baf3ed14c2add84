"""Bad input, unwritable outputs and untrusted files never cost a user their batch.

A corpus of bad and unusual files is built here by the tests themselves and
run through the real CLI (`icm propagate`, `icm trimap`, `icm refine`), then
each case is checked as a user would: one error line naming the file and the
reason (never a traceback), a manifest record, the rest of the batch written,
and a non-zero exit code when anything failed. Interruption (SIGINT, SIGKILL)
lives in test_reliability_signals.py, fuzzing in test_fuzz.py.
"""

from __future__ import annotations

import contextlib
import errno
import io as pyio
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from icm_cli import io
from icm_cli.cli import app
from tests.conftest import save_png, source_records, textured_scene

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]
SRC_H, SRC_W = 48, 64


# ----------------------------------------------------------------- file makers

def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = pyio.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = pyio.BytesIO()
    img.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _scene(seed: int, h: int = SRC_H, w: int = SRC_W) -> Image.Image:
    img, _ = textured_scene(h, w, (h // 5, w // 4, h // 2, w // 2), seed=seed)
    return Image.fromarray(img)


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its header claiming another size (CRC recomputed); the data no longer fits it."""
    assert png[12:16] == b"IHDR"
    fields = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + fields) & 0xFFFFFFFF)
    return png[:16] + fields + crc + png[33:]


def _exif_jpeg(img: Image.Image, orientation: int) -> bytes:
    exif = img.getexif()
    exif[0x0112] = orientation
    return _jpeg_bytes(img, exif=exif.tobytes())


@dataclass
class Case:
    """One corpus file: how to make it and what a user should see."""

    name: str               # file name inside the corpus folder (str, or bytes for non-UTF-8 names)
    make: object            # bytes, or a callable(path) that creates the entry
    expect: str             # "ok", "fail" or "ignored" (not an image source: never listed)
    reason: str = ""        # for "fail": words the one-line error must contain
    size: tuple = (SRC_W, SRC_H)  # for "ok": (width, height) of the outputs
    out: str | None = None  # for "ok": output stem when it differs from the file stem


def _symlink(target: str):
    return lambda path: os.symlink(target, path)


def _mkdir(path) -> None:
    os.mkdir(path)


def _corpus() -> list[Case]:
    good = _scene(1)
    rgba = np.dstack([np.asarray(_scene(2)), np.full((SRC_H, SRC_W), 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    pal = _scene(3).quantize(16)
    pal_t = _scene(4).quantize(16)
    pal_t.info["transparency"] = 0
    g16 = (np.asarray(_scene(5).convert("L")).astype(np.uint16) * 257)
    wide = _scene(6, h=SRC_W, w=SRC_H)  # stored 48 wide x 64 high, displayed 64 x 48 after rotation
    import cv2

    def rgb48(path):
        arr = (np.asarray(_scene(7)).astype(np.uint16) * 257)[..., ::-1]
        assert cv2.imwrite(str(path), np.ascontiguousarray(arr))

    def anim(path):
        frames = [_scene(8), _scene(9)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)

    png = _png_bytes(good)
    jpg = _jpeg_bytes(good)
    return [
        Case("good.png", png, "ok"),
        Case("empty.png", b"", "fail", "empty"),
        Case("truncated.png", png[: len(png) * 2 // 3], "fail", "truncated"),
        Case("truncated_header.jpg", jpg[:150], "fail", "truncated"),
        Case("truncated.jpg", jpg[: len(jpg) // 2], "fail", "truncated"),
        Case("random.png", np.random.default_rng(0).bytes(700), "fail", "not an image"),
        Case("random_magic.png", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(700), "fail", "image"),
        Case("text.jpg", b"this is a text file, not a JPEG\n" * 8, "fail", "not an image"),
        Case("notes.txt", b"not an image suffix\n", "ignored"),
        Case("folder.png", _mkdir, "ignored"),
        Case("gray16.png", lambda p: Image.fromarray(g16).save(p), "ok"),
        Case("rgba.png", _png_bytes(Image.fromarray(rgba)), "ok"),
        Case("la.png", _png_bytes(_scene(10).convert("LA")), "ok"),
        Case("palette.png", _png_bytes(pal), "ok"),
        Case("palette_transparent.png", _png_bytes(pal_t, transparency=0), "ok"),
        Case("cmyk.jpg", _jpeg_bytes(_scene(11).convert("CMYK")), "ok"),
        Case("exif6.jpg", _exif_jpeg(wide, 6), "ok", size=(SRC_W, SRC_H)),
        Case("exif8.jpg", _exif_jpeg(wide, 8), "ok", size=(SRC_W, SRC_H)),
        Case("one_pixel.png", _png_bytes(Image.new("RGB", (1, 1), (200, 30, 30))), "ok", size=(1, 1)),
        Case("bomb.png", _with_ihdr_size(_png_bytes(Image.new("L", (8, 8))), 20000, 20000), "fail",
             "over the limit"),
        Case("bilevel.png", _png_bytes(_scene(12).convert("1")), "ok"),
        Case("float.tif", lambda p: Image.fromarray(np.asarray(_scene(13).convert("L"), np.float32) / 255).save(p),
             "ok"),
        Case("rgb48.png", rgb48, "ok"),
        Case("anim.gif", anim, "ok"),
        Case("bitmap.bmp", lambda p: _scene(14).save(p), "ok"),
        Case("web.webp", lambda p: _scene(15).save(p), "ok"),
        Case("UPPER.PNG", _png_bytes(_scene(16)), "ok"),
        Case("with space.png", _png_bytes(_scene(17)), "ok"),
        Case(b"caf\xe9.png", _png_bytes(_scene(18)), "ok", out="caf_"),
        Case(b"bad\xff.png", b"junk with a name that is not UTF-8", "fail", "not an image"),
        Case("..png", _png_bytes(_scene(19)), "ignored"),  # a hidden file, like .DS_Store: never a source
        Case("a\\..\\b.png", _png_bytes(_scene(20)), "ok", out="a_.._b"),
        Case("dup.jpg", _jpeg_bytes(_scene(21)), "ok", out="dup"),
        Case("dup.png", _png_bytes(_scene(22)), "ok", out="dup~2"),
        Case("self_loop.png", _symlink("self_loop.png"), "fail", "link"),
        Case("dangling.png", _symlink("nowhere/missing.png"), "fail", "link"),
        Case("loop", _symlink("."), "ignored"),  # recursive walk: the folder is visited once
        Case("sub/a/frame.png", _png_bytes(_scene(23)), "ok", out="sub/a/frame"),  # -r mirrors sub-folders
        Case("sub/b/frame.png", _png_bytes(_scene(24)), "ok", out="sub/b/frame"),
    ]


def _fs_name(case: Case) -> str:
    return os.fsdecode(case.name) if isinstance(case.name, bytes) else case.name


def build_corpus(folder: Path) -> list[Case]:
    cases = _corpus()
    for case in cases:
        path = folder / _fs_name(case)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(case.make, bytes):
            with open(os.fsencode(path), "wb") as fh:  # bytes path: non-UTF-8 names on Linux
                fh.write(case.make)
        else:
            case.make(path)
    return cases


def _records(manifest: Path) -> list[dict]:
    return source_records(manifest)


def _error_lines(output: str, path: str) -> list[str]:
    shown = path.encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable bytes print as \udcXX
    return [line for line in output.splitlines() if path in line or shown in line]


def _all_pngs_load(folder: Path) -> int:
    count = 0
    for png in folder.rglob("*.png"):
        with Image.open(png) as img:
            img.load()
        count += 1
    return count


# ----------------------------------------------------------------- the corpus

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    img, mask = textured_scene(64, 80, (14, 18, 34, 44), seed=1)
    return save_png(root / "ref.png", img), save_png(root / "ref_mask.png", mask * 255), img, mask


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory, reference):
    """One `icm propagate -r` and one `icm trimap -r` over the whole corpus."""
    root = tmp_path_factory.mktemp("corpus")
    folder = root / "corpus"
    folder.mkdir()
    cases = build_corpus(folder)
    ref, mask, _, _ = reference
    out = root / "out"
    prop = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, str(folder), "-r", "-o", str(out), *FAST])
    tri_out = root / "trimaps"
    tri = runner.invoke(app, ["trimap", str(folder), "-r", "-o", str(tri_out), "--kernel", "3", "--quiet"])
    return folder, cases, out, prop, tri_out, tri


CASES = _corpus()
IDS = [_fs_name(c).replace("\\", "BS") for c in CASES]


def test_corpus_has_at_least_forty_cases():
    assert len(CASES) + len(REF_CASES) >= 40


def test_propagate_corpus_batch_finishes_with_exit_1(corpus_runs):
    folder, cases, out, prop, _, _ = corpus_runs
    assert prop.exit_code == 1, prop.output
    assert "Traceback" not in prop.output
    records = _records(out / "manifest.jsonl")
    listed = {Path(r["input"]).relative_to(folder).as_posix() for r in records}
    expected = {_fs_name(c) for c in cases if c.expect != "ignored"}
    assert listed == expected  # every source once: the symlink loop added nothing, ignored entries absent
    assert all(r["status"] in ("done", "failed") for r in records)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_propagate_corpus_case(corpus_runs, case):
    folder, _, out, prop, _, _ = corpus_runs
    name = _fs_name(case)
    records = {Path(r["input"]).relative_to(folder).as_posix(): r for r in _records(out / "manifest.jsonl")}
    if case.expect == "ignored":
        assert name not in records
        return
    record = records[name]
    if case.expect == "fail":
        assert record["status"] == "failed"
        assert case.reason in record["error"].lower(), record["error"]
        lines = _error_lines(prop.output, str(folder / name))
        assert len(lines) == 1 and lines[0].startswith("error:"), prop.output
        assert case.reason in lines[0].lower()
        return
    assert record["status"] == "done", record
    stem = case.out or Path(name).stem
    assert record["stem"] == stem
    for kind, mode in (("masks", "L"), ("trimaps", "L"), ("heatmaps", "RGB")):
        path = out / kind / f"{stem}.png"
        assert Path(record["outputs"][kind]) == path
        with Image.open(path) as img:
            assert img.size == case.size and img.mode == mode
        assert (out / kind).resolve() in path.resolve().parents  # never outside its folder


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trimap_corpus_case(corpus_runs, case):
    folder, _, _, _, tri_out, tri = corpus_runs
    assert tri.exit_code == 1 and "Traceback" not in tri.output
    name = _fs_name(case)
    stem = case.out or Path(name).stem
    if case.expect == "fail":
        lines = _error_lines(tri.output, str(folder / name))
        assert len(lines) == 1 and lines[0].startswith("error:") and case.reason in lines[0].lower(), tri.output
        assert not (tri_out / f"{stem}.png").exists()
    elif case.expect == "ok":
        with Image.open(tri_out / f"{stem}.png") as img:
            assert img.size == case.size and img.mode == "L"
            assert set(np.unique(np.asarray(img))) <= {0, 128, 255}


def test_exif_rotation_is_applied_to_sources(corpus_runs):
    """The rotated JPEGs hold the object the other way round; the outputs follow the display orientation."""
    _, _, out, _, _, _ = corpus_runs
    six = np.asarray(Image.open(out / "heatmaps" / "exif6.png"))
    eight = np.asarray(Image.open(out / "heatmaps" / "exif8.png"))
    assert six.shape == eight.shape == (SRC_H, SRC_W, 3)
    # orientation 6 and 8 are 180 degrees apart: the heat overlays match rotated by 180
    diff_rot = np.abs(six.astype(int) - eight[::-1, ::-1].astype(int)).mean()
    diff_same = np.abs(six.astype(int) - eight.astype(int)).mean()
    assert diff_rot < diff_same


# ------------------------------------------------------------ mask formats (trimap)

def _box_mask(h=40, w=50) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[8:30, 12:38] = 1
    return m


def test_trimap_mask_encodings_give_the_same_trimap(tmp_path):
    m = _box_mask()
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(m * 255).save(masks / "m255.png")
    Image.fromarray(m).save(masks / "m01.png")
    # 16-bit: 30000 is under half range (not object), 40000 over it (object)
    Image.fromarray(np.where(m == 1, 40000, 30000).astype(np.uint16)).save(masks / "m16.png")
    pal = Image.frombytes("P", (50, 40), m.tobytes())
    pal.putpalette([255, 255, 255, 10, 10, 10] + [0] * 762)  # index 1 is dark: indices count, not colours
    pal.save(masks / "mpal.png")
    Image.fromarray(np.dstack([m * 255] * 3 + [np.full_like(m, 255)])).save(masks / "mrgba.png")
    rot = Image.fromarray(np.rot90(m * 255, 1).copy())  # stored rotated; EXIF 6 turns it back
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(masks / "mexif.jpg", exif=exif.tobytes(), quality=100)
    Image.fromarray(np.zeros_like(m)).save(masks / "zeros.png")
    Image.fromarray(np.full_like(m, 255)).save(masks / "ones.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--kernel", "5", "--quiet"])
    assert res.exit_code == 0, res.output
    want = np.asarray(Image.open(out / "m255.png"))
    assert set(np.unique(want)) == {0, 128, 255}
    for stem in ["m01", "m16", "mpal", "mrgba"]:
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}.png")), want, err_msg=stem)
    exif_trimap = np.asarray(Image.open(out / "mexif.png"))
    assert exif_trimap.shape == want.shape  # rotation applied
    assert (exif_trimap == want).mean() > 0.97  # JPEG edges may move a pixel
    assert not np.asarray(Image.open(out / "zeros.png")).any()
    assert (np.asarray(Image.open(out / "ones.png")) == 255).all()


def test_trimap_max_pixels_is_checked_before_decoding(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(_box_mask(20, 20) * 255).save(masks / "small.png")  # 400 pixels
    Image.fromarray(_box_mask(40, 40) * 255).save(masks / "large.png")  # 1600 pixels
    # the header says 100x100 but the data is an 8x8 image: decoding it would fail as corrupt,
    # so "over the limit" proves the limit was checked first
    (masks / "header_only.png").write_bytes(_with_ihdr_size(_png_bytes(Image.new("L", (8, 8))), 100, 100))
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--max-pixels", "1000", "--quiet"])
    assert res.exit_code == 1
    assert (out / "small.png").exists() and not (out / "large.png").exists()
    for name in ["large.png", "header_only.png"]:
        lines = _error_lines(res.output, name)
        assert len(lines) == 1 and "over the limit of 1000" in lines[0] and "--max-pixels" in lines[0]


# ------------------------------------------------------- references and masks

REF_CASES = ["mask_all_zero", "mask_all_one", "mask_other_size", "swapped", "mask_is_photo",
             "ref_corrupt", "ref_bomb", "mask_missing", "ref_is_folder"]


@pytest.mark.parametrize("case", REF_CASES)
def test_reference_problems_stop_before_the_batch_with_exit_2(reference, tmp_path, case):
    ref, mask, img, m = reference
    src = save_png(tmp_path / "src" / "s.png", np.asarray(_scene(30)))
    reason = {"mask_all_zero": "empty", "mask_all_one": "whole image", "mask_other_size": "--resize-masks",
              "swapped": "swapped", "mask_is_photo": "photo", "ref_corrupt": "truncated",
              "ref_bomb": "over the limit", "mask_missing": "not found", "ref_is_folder": "folder"}[case]
    bad = None
    if case == "mask_all_zero":
        mask = bad = save_png(tmp_path / "zero.png", np.zeros(m.shape, np.uint8))
    elif case == "mask_all_one":
        mask = bad = save_png(tmp_path / "one.png", np.ones(m.shape, np.uint8))  # a {0,1} mask, all 1
    elif case == "mask_other_size":
        mask = bad = save_png(tmp_path / "half.png", m[::2, ::2] * 255)
    elif case == "swapped":  # the photo given as --mask, the mask as --ref
        ref, mask = mask, ref
        bad = mask
    elif case == "mask_is_photo":
        mask = bad = save_png(tmp_path / "photo_mask.png", img)
    elif case == "ref_corrupt":
        ref = bad = str(tmp_path / "ref_cut.png")
        Path(ref).write_bytes(Path(reference[0]).read_bytes()[:400])
    elif case == "ref_bomb":
        ref = bad = str(tmp_path / "ref_bomb.png")
        Path(ref).write_bytes(_with_ihdr_size(_png_bytes(Image.new("RGB", (8, 8))), 20000, 20000))
    elif case == "mask_missing":
        mask = bad = str(tmp_path / "no_such_mask.png")
    elif case == "ref_is_folder":
        ref = bad = str(tmp_path / "dir.png")
        os.mkdir(ref)
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, src, "-o", str(out), *FAST])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and bad in lines[0], res.output
    assert reason in lines[0]
    assert not (out / "masks").exists()


def test_mask_encodings_and_resize_masks_through_propagate(reference, corpus_runs, tmp_path):
    """A {0,1} mask gives exactly what {0,255} gave; a 16-bit mask of another size works with --resize-masks."""
    ref, _, _, m = reference
    folder, _, corpus_out, _, _, _ = corpus_runs
    mask01 = save_png(tmp_path / "m01.png", m.astype(np.uint8))
    out = tmp_path / "out01"
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask01, str(folder / "good.png"),
                              "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / "good.png")),
                                  np.asarray(Image.open(corpus_out / "masks" / "good.png")))
    big16 = np.kron(m.astype(np.uint16) * 65535, np.ones((2, 2), np.uint16))  # twice the size, 16-bit
    mask16 = save_png(tmp_path / "m16_big.png", big16)
    out = tmp_path / "out16"
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask16, "--resize-masks",
                              str(folder / "good.png"), "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    got = np.asarray(Image.open(out / "masks" / "good.png")) > 127
    want = np.asarray(Image.open(corpus_out / "masks" / "good.png")) > 127
    assert np.logical_and(got, want).sum() / max(1, np.logical_or(got, want).sum()) > 0.9


# --------------------------------------------------------- names and outputs

def test_output_names_never_escape_and_duplicates_never_overwrite(reference, tmp_path):
    """Stdin-provided paths with `..`, backslashes and duplicate stems; a folder and a missing file on stdin."""
    ref, mask, _, _ = reference
    d = tmp_path / "in"
    for sub, seed in (("one", 40), ("two", 41)):
        save_png(d / sub / "frame.png", np.asarray(_scene(seed)))
    (d / "..png").write_bytes(_png_bytes(_scene(42)))
    (d / "x\\..\\..\\y.png").write_bytes(_png_bytes(_scene(43)))
    (d / "dir.png").mkdir()
    listing = "\n".join([str(d / "one" / "frame.png"), str(d / "two" / ".." / "two" / "frame.png"),
                         str(d / "one" / ".." / "..png"), str(d / "x\\..\\..\\y.png"),
                         str(d / "dir.png"), str(d / "missing.png")]) + "\n"
    out = tmp_path / "deep" / "out"
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, "-", "-o", str(out), "--save", "masks",
                              "--no-edges", *FAST], input=listing)
    assert res.exit_code == 1, res.output
    records = {r["input"]: r for r in _records(out / "manifest.jsonl")}  # failures are recorded first
    inputs = [os.path.normpath(os.path.abspath(line)) for line in listing.splitlines()]  # recorded absolute
    assert [records[i]["stem"] for i in inputs] == ["frame", "frame~2", "_", "x_.._.._y", "dir", "missing"]
    assert [records[i]["status"] for i in inputs] == ["done"] * 4 + ["failed"] * 2
    assert "folder" in records[inputs[4]]["error"] and "not found" in records[inputs[5]]["error"]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png") if "in" not in p.parts)
    assert written == ["deep/out/masks/_.png", "deep/out/masks/frame.png", "deep/out/masks/frame~2.png",
                       "deep/out/masks/x_.._.._y.png"]
    one = np.asarray(Image.open(out / "masks" / "frame.png"))
    two = np.asarray(Image.open(out / "masks" / "frame~2.png"))
    assert not np.array_equal(one, two)  # two different sources, two different results
    # a rerun with the same inputs in the same order keeps the names and skips what is done
    again = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, "-", "-o", str(out), "--save", "masks",
                                "--no-edges", *FAST], input=listing)
    assert again.exit_code == 1
    second = {r["input"]: r["status"] for r in _records(out / "manifest.jsonl")[6:]}
    assert [second[i] for i in inputs] == ["skipped"] * 4 + ["failed"] * 2


def _blocked_output(tmp_path: Path) -> Path:
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file: nothing can be created below it")
    return blocker / "out"


@pytest.mark.parametrize("command", ["propagate", "trimap", "refine"])
def test_output_folder_that_cannot_be_created_is_exit_2(reference, tmp_path, command):
    ref, mask, _, _ = reference
    out = _blocked_output(tmp_path)
    if command == "propagate":
        args = ["propagate", "--ref", ref, "--mask", mask, ref, "-o", str(out), *FAST]
    elif command == "trimap":
        args = ["trimap", mask, "-o", str(out), "--quiet"]
    else:
        args = ["refine", mask, "--images", str(Path(ref).parent), "-o", str(out), "--size", "128", "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in res.output, res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_is_exit_2(reference, tmp_path):
    _, mask, _, _ = reference
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        res = runner.invoke(app, ["trimap", mask, "-o", str(out / "sub"), "--quiet"])
    finally:
        out.chmod(0o700)
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_full_disk_stops_the_batch_cleanly_and_a_rerun_finishes(reference, tmp_path, monkeypatch):
    """ENOSPC from the PNG writer (after the first source's files): no partial files, manifest intact, exit 1."""
    ref, mask, _, _ = reference
    src = tmp_path / "src"
    for i in range(10):
        save_png(src / f"f{i}.png", np.asarray(_scene(50 + i)))
    from icm_cli import atomic

    real_atomic_file = atomic.atomic_file
    calls = {"n": 0}

    @contextlib.contextmanager
    def atomic_file(path, *args, **kwargs):
        with real_atomic_file(path, *args, **kwargs) as fh:
            if str(path).endswith(".png"):
                calls["n"] += 1
                if calls["n"] > 1:  # the first source's mask is written, then the disk is full
                    fh.write(b"\x89PNG\r\n\x1a\n half a file")
                    raise OSError(errno.ENOSPC, "No space left on device")
            yield fh

    monkeypatch.setattr(atomic, "atomic_file", atomic_file)
    out = tmp_path / "out"
    args = ["propagate", "--ref", ref, "--mask", mask, str(src), "-o", str(out), "--save", "masks",
            "--no-edges", *FAST]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert "No space left on device" in res.output
    assert "rerun" in res.output.lower()
    assert not list(out.rglob("*.tmp"))
    assert _all_pngs_load(out) == 1
    records = _records(out / "manifest.jsonl")
    # two finishing threads write side by side, so the first PNG written may be f0's or f1's
    assert sorted(r["status"] for r in records[:2]) == ["done", "failed"]
    first_failed = next(r for r in records if r["status"] == "failed")
    assert f"{first_failed['stem']}.png" in res.output
    assert len(records) <= 4  # it stopped instead of failing every remaining source the same way
    monkeypatch.setattr(atomic, "atomic_file", real_atomic_file)  # space freed
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"f{i}.png" for i in range(10)]


def test_refine_batch_survives_bad_pairs(reference, tmp_path):
    ref, mask, img, m = reference
    images, masks = tmp_path / "images", tmp_path / "masks"
    save_png(images / "good.png", img)
    save_png(masks / "good.png", m * 255)
    save_png(images / "small.png", img)
    save_png(masks / "small.png", m[::2, ::2] * 255)  # mask of another size than its image
    save_png(masks / "orphan.png", m * 255)  # no image of that name
    (masks / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n no data")
    save_png(images / "broken.png", img)
    (images / "cut.png").write_bytes(Path(ref).read_bytes()[:300])  # truncated image
    save_png(masks / "cut.png", m * 255)
    out = tmp_path / "out"
    res = runner.invoke(app, ["refine", str(masks), "--images", str(images), "-o", str(out), "--size", "128",
                              "--quiet"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert [p.name for p in out.glob("*.png")] == ["good.png"]
    for name, reason in (("small.png", "mask is"), ("orphan.png", "no image"), ("broken.png", "image"),
                         ("cut.png", "truncated")):
        lines = [line for line in res.output.splitlines() if f"{name}:" in line]
        assert len(lines) == 1 and lines[0].startswith("error:") and reason in lines[0], (name, res.output)


# --------------------------------------------------------- untrusted weights

class _CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: code running from a weights file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_weights_are_refused_through_the_cli(reference, tmp_path):
    ref, mask, _, _ = reference
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"stem.weight": torch.zeros(2), "payload": _CreatesMarker(str(marker))}, evil)
    assert not marker.exists()
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, ref, "-o", str(tmp_path / "out"),
                              "--weights", str(evil), *FAST])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(evil) in lines[0] and "refused" in lines[0], res.output
    assert not marker.exists()


# --------------------------------------------------- unexpected errors, --debug

def test_unexpected_error_is_one_line_and_exit_3_unless_debug(tmp_path, monkeypatch):
    masks = tmp_path / "masks"
    save_png(masks / "m.png", _box_mask() * 255)

    def boom(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr("icm_cli.sources.SourceFinder.__iter__", boom)
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 3, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ZeroDivisionError" in lines[0] and "--debug" in lines[0], res.output
    assert "Traceback" not in res.output
    debug = runner.invoke(app, ["--debug", "trimap", str(masks), "-o", str(tmp_path / "out"), "--quiet"])
    assert isinstance(debug.exception, ZeroDivisionError)  # the traceback is the user's to see


def test_unexpected_error_on_one_item_fails_that_item_only(tmp_path, monkeypatch):
    from icm_cli.predict import fullres as trimap_cmd  # where `icm trimap` takes its trimap function from

    masks = tmp_path / "masks"
    for name in ("a", "b", "c"):
        save_png(masks / f"{name}.png", _box_mask() * 255)
    real = trimap_cmd.mask_to_trimap_u8
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated library error\nwith a second line")
        return real(*args, **kwargs)

    monkeypatch.setattr(trimap_cmd, "mask_to_trimap_u8", flaky)
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--quiet"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if "b.png" in line]
    assert len(lines) == 1 and "RuntimeError" in lines[0] and "second line" in lines[0]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]


def test_keyboard_interrupt_in_trimap_is_one_line_exit_130(tmp_path, monkeypatch):
    from icm_cli.predict import fullres as trimap_cmd

    masks = tmp_path / "masks"
    for name in ("a", "b", "c"):
        save_png(masks / f"{name}.png", _box_mask() * 255)
    real = trimap_cmd.mask_to_trimap_u8
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trimap_cmd, "mask_to_trimap_u8", interrupted)
    out = tmp_path / "out"
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--quiet"])
    assert res.exit_code == 130, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0].lower() and "rerun" in lines[0].lower(), res.output
    assert [p.name for p in out.glob("*.png")] == ["a.png"]
    again = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--quiet"])
    assert again.exit_code == 0 and sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]


# ------------------------------------------------------- manifest and temp files

def test_manifest_with_a_torn_last_line_is_repaired_on_reopen(tmp_path):
    from icm_cli.runner.manifest import ManifestWriter, SourceRecord

    path = tmp_path / "manifest.jsonl"
    path.write_text('{"input": "a.png", "status": "done"}\n{"input": "b.png", "sta', encoding="utf-8")
    manifest = ManifestWriter(path)
    manifest.write(SourceRecord(input=os.fsdecode(b"caf\xe9.png"), stem="caf_", status="done"))
    manifest.close()
    records = _records(path)
    assert [r["input"] for r in records] == ["a.png", os.fsdecode(b"caf\xe9.png")]


def test_stale_temp_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    io.write_image_atomic(tmp_path / "done.png", np.zeros((2, 2), np.uint8))
    stale = tmp_path / f".{io.temp_tag(dead_pid)}-abc.tmp"
    live = tmp_path / f".{io.temp_tag(os.getpid())}-abd.tmp"
    foreign = tmp_path / f".{io.temp_tag(dead_pid, host='elsewhere')}-abc.tmp"  # judged by age only
    old = tmp_path / f".w.png.{io.temp_tag(os.getpid(), host='elsewhere')}.abc.tmp"  # an older version's name
    other = tmp_path / ".notes.tmp"  # not ours
    for p in (stale, live, foreign, old, other):
        p.write_bytes(b"partial")
    os.utime(old, (0, 0))  # untouched for decades: no write takes that long
    assert io.remove_stale_temp_files(tmp_path) == 2
    assert not stale.exists() and not old.exists()
    assert live.exists() and foreign.exists() and other.exists()
    assert (tmp_path / "done.png").exists()


def test_outputs_get_the_usual_file_mode_not_the_temp_files_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    io.write_image_atomic(tmp_path / "m.png", np.zeros((2, 2), np.uint8))
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_manifest_that_cannot_be_written_stops_the_run(tmp_path):
    from icm_cli.runner.batch import BatchRunner
    from icm_cli.runner.manifest import ManifestWriter
    from icm_cli.runner.outputs import OutputPlan
    from icm_cli.sources import Source

    manifest = ManifestWriter(tmp_path / "manifest.jsonl")
    manifest._fh.close()
    manifest._fh = open("/dev/full", "w", encoding="utf-8")  # every flush: ENOSPC
    run = BatchRunner(OutputPlan(tmp_path), manifest)
    run.fail(Source(Path("a.png"), "a.png", "a", "a"), "a.png: broken")
    assert run.halt.is_set() and "manifest" in run.outcome.stopped
    assert run.outcome.exit_code == 1
    manifest.close()
