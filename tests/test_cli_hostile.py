"""The failures a hostile bad-input corpus found (issue 13), each through the CLI on files the test writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import FAST, propagate_args, save_png, source_records

runner = CliRunner()


@pytest.fixture(scope="module")
def scene(small_scene):
    return small_scene


def _propagate(scene, *args, input=None):
    return runner.invoke(app, propagate_args(scene, *args), input=input)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_1_stem_clash_names_are_unique_by_construction(scene, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, seed in (("a.jpg", 1), ("a.png", 2), ("a~2.png", 3)):
        Image.open(scene / "src" / f"s{seed % 3}.png").save(src / name)
    out = tmp_path / "out"
    res = _propagate(scene, str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    stems = [r["stem"] for r in source_records(out / "manifest.jsonl")]
    assert stems == ["a", "a~2", "a~2~2"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "a~2.png", "a~2~2.png"]
    tri = runner.invoke(app, ["trimap", str(out / "masks"), str(src), "-o", str(tmp_path / "t"), "--quiet"])
    assert len(list((tmp_path / "t").glob("*.png"))) == 6, tri.output  # 3 masks + 3 images: none skipped as "there"


def test_2_an_unreadable_source_folder_is_an_error_not_an_empty_success(scene, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    save_png(locked / "x.png", np.zeros((4, 4), np.uint8))
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("icm_cli.sources.os.scandir", scandir)
    for command in (["trimap", str(locked), "-o", str(tmp_path / "t")],
                    ["eval", str(locked), str(locked)],
                    ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                     str(locked), "-o", str(tmp_path / "o"), *FAST]):
        res = runner.invoke(app, command)
        assert res.exit_code in (1, 2) and "Permission denied" in res.output, (command[0], res.output)
    # inside a recursive walk it is one failure of the run (exit 1), the rest goes on
    save_png(tmp_path / "top" / "y.png", np.full((4, 4), 255, np.uint8))
    os.rename(locked, tmp_path / "top" / "locked")
    locked = tmp_path / "top" / "locked"
    res = runner.invoke(app, ["trimap", str(tmp_path / "top"), "-r", "-o", str(tmp_path / "t2"), "--quiet"])
    assert res.exit_code == 1 and "cannot read the folder" in res.output and (tmp_path / "t2" / "y.png").exists()


@pytest.mark.parametrize("args", [["propagate", "--threshold", "nan"], ["propagate", "--threshold", "inf"],
                                  ["propagate", "--only-below", "nan"], ["eval", "--tolerance", "nan"],
                                  ["inspect-attn", "--point", "inf,3"], ["inspect-attn", "--point", "nan,nan"]])
def test_3_nan_and_infinite_numbers_are_refused(scene, tmp_path, args):
    command, *opt = args
    if command == "propagate":
        full = ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                str(scene / "src"), "-o", str(tmp_path / "o"), *opt]
    elif command == "eval":
        full = ["eval", str(scene / "src"), str(scene / "src"), *opt]
    else:
        full = ["inspect-attn", str(scene / "src"), "--ref", str(scene / "ref.png"), "--mask",
                str(scene / "ref_mask.png"), "-o", str(tmp_path / "o"), *opt]
    res = runner.invoke(app, full)
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "o" / "masks").exists()


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_4_trimap_into_its_own_input_folder_is_refused(tmp_path, extra):
    masks = tmp_path / "masks"
    save_png(masks / "m.png", np.pad(np.full((6, 6), 255, np.uint8), 5))
    before = (masks / "m.png").read_bytes()
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(masks), *extra])
    assert res.exit_code == 2 and "outputs" in res.output
    assert (masks / "m.png").read_bytes() == before and len(list(masks.iterdir())) == 1


def test_5_out_inside_sources_is_never_read_back(scene, tmp_path):
    src = tmp_path / "photos"
    for i in range(3):
        Image.open(scene / "src" / f"s{i}.png").save(src / f"p{i}.png") if src.exists() else \
            (src.mkdir(), Image.open(scene / "src" / f"s{i}.png").save(src / f"p{i}.png"))
    out = src / "out"
    for _ in range(2):
        res = _propagate(scene, str(src), "-r", "-o", str(out))
        assert res.exit_code == 0, res.output
    assert len(list((out / "masks").rglob("*.png"))) == 3
    assert [r["status"] for r in source_records(out / "manifest.jsonl")] == ["done"] * 3 + ["skipped"] * 3


def test_6_a_planted_manifest_link_is_replaced(scene, tmp_path):
    outside = tmp_path / "victim.txt"
    outside.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(outside)
    res = _propagate(scene, str(scene / "src" / "s0.png"), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert outside.read_text() == "precious\n" and not (out / "manifest.jsonl").is_symlink()


def test_7_long_source_names_are_written(scene, tmp_path):
    name = "n" * 240 + ".png"
    src = tmp_path / "src"
    src.mkdir()
    Image.open(scene / "src" / "s0.png").save(src / name)
    out = tmp_path / "out"
    res = _propagate(scene, str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    (written,) = list((out / "masks").iterdir())
    assert written.name.startswith("n" * 200) and len(written.name.encode()) <= 255


def test_8_status_from_another_folder_sees_a_finished_run(scene, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    Image.open(scene / "src" / "s0.png").save(work / "src" / "a.png")
    monkeypatch.chdir(work)
    assert _propagate(scene, "src", "-o", "out").exit_code == 0
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["status", str(work / "out"), str(work / "src")])
    assert res.exit_code == 0 and "1 done" in res.output and "0 pending" in res.output, res.output


def test_9_json_into_head_stops_quietly_and_keeps_the_manifest_true(scene, tmp_path):
    out = tmp_path / "out"
    cmd = (f"set -o pipefail; {sys.executable} -m icm_cli propagate --ref {scene / 'ref.png'} "
           f"--mask {scene / 'ref_mask.png'} {scene / 'src'} -o {out} {' '.join(FAST)} --json | head -n1")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=240)
    assert json.loads(proc.stdout.strip())["status"] == "done"
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower(), proc.stderr
    records = source_records(out / "manifest.jsonl")
    assert records and all(r["status"] == "done" for r in records)
    for r in records:
        assert all(Path(p).exists() for p in r["outputs"].values())


def test_10_weights_of_another_variant_are_a_clean_error(scene, tmp_path):
    import contextlib
    import io as pyio

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(pyio.StringIO()):
        other = EfficientNet.from_name("efficientnet-lite2")
    torch.save(other.state_dict(), tmp_path / "lite2.pth")
    res = _propagate(scene, str(scene / "src"), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "lite2.pth"))
    assert res.exit_code == 2, res.output
    (line,) = _lines(res.output)
    assert "does not match efficientnet-lite0" in line and "lite2.pth" in line


def test_11_video_lists_are_checked_before_the_model_and_take_any_file_name(scene, tmp_path, monkeypatch):
    res = _propagate(scene, "--video", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "missing.txt: not found" in res.output
    frames = tmp_path / "frames"
    frames.mkdir()
    names = [os.fsdecode(b"f\xff0.png"), "f1.png"]
    for i, name in enumerate(names):
        Image.open(scene / "src" / f"s{i}.png").save(os.fsencode(frames / name))
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"frames/f\xff0.png\nframes/f1.png\n")
    out = tmp_path / "out"
    res = _propagate(scene, "--video", str(listing), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["f1.png", "f_0.png"]


def test_12_status_survives_an_unreadable_manifest_and_a_line_nested_too_deep(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    good = {"input": str(tmp_path / "a.png"), "stem": "a", "status": "done", "outputs": {}}
    (out / "manifest.1-of-2.jsonl").write_text(json.dumps(good) + "\n" + "[" * 100_000 + "\n")
    (out / "manifest.2-of-2.jsonl").write_text(json.dumps(good) + "\n")
    real = Path.read_text

    def read_text(self, *a, **k):
        if self.name == "manifest.2-of-2.jsonl":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    res = runner.invoke(app, ["status", str(out)])
    assert res.exit_code == 1, res.output
    assert "manifest.2-of-2.jsonl: cannot read (Permission denied)" in res.output
    assert "1 done" in res.output and "1 manifest line(s) could not be read" in res.output


def test_13_stability_of_a_sequence_with_frames_of_two_sizes(tmp_path):
    for folder in ("pred", "gt"):
        for i, shape in enumerate([(20, 30), (20, 30), (24, 30), (24, 30)]):
            m = np.zeros(shape, np.uint8)
            m[5:15, 5:20] = 255
            save_png(tmp_path / folder / "seq" / f"{i:05d}.png", m)
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "-r", "--stability", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["sequences"][0]["T_pred"] == pytest.approx(1.0) and report["mean"]["J"] == pytest.approx(1.0)


def test_14_inspect_attn_on_a_thin_strip_caps_the_montage_and_goes_on(scene, tmp_path):
    src = tmp_path / "src"
    save_png(src / "a_strip.png", np.random.default_rng(0).integers(0, 255, (3, 3000, 3), dtype=np.uint8))
    Image.open(scene / "src" / "s1.png").save(src / "b_normal.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["inspect-attn", str(src), "--ref", str(scene / "ref.png"), "--mask",
                              str(scene / "ref_mask.png"), "-o", str(out), "--size", "96", "--head-steps", "0",
                              "--height", "64", "-q"])
    assert res.exit_code == 0, res.output
    strip = Image.open(out / "a_strip.png")
    assert strip.height == 64 and strip.width <= 5 * 4 * 64 + 4 * 4
    assert (out / "b_normal.png").exists()


def test_15_a_huge_kernel_gives_an_all_unknown_band_at_once(tmp_path):
    masks = tmp_path / "masks"
    m = np.zeros((40, 50), np.uint8)
    m[10:30, 10:30] = 255
    save_png(masks / "m.png", m)
    res = runner.invoke(app, ["trimap", str(masks), "-o", str(tmp_path / "t"), "--kernel", "100000", "--quiet"])
    assert res.exit_code == 0, res.output
    assert np.unique(np.asarray(Image.open(tmp_path / "t" / "m.png"))).tolist() == [128]


def test_float_rgb_tiffs_are_read_and_postscript_is_never_handed_to_ghostscript(scene, tmp_path, monkeypatch):
    import tifffile

    src = tmp_path / "src"
    src.mkdir()
    rgb = np.asarray(Image.open(scene / "src" / "s0.png"), np.float32) / 255.0
    tifffile.imwrite(src / "float_rgb.tif", rgb, photometric="rgb")
    (src / "z_fake.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs_ran"
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    res = _propagate(scene, str(src), "-o", str(out))
    assert res.exit_code == 1
    assert (out / "masks" / "float_rgb.png").exists()
    assert "z_fake.jpg: is a PostScript file" in res.output and "not an image icm reads" in res.output
    assert not marker.exists()


def test_video_onto_a_full_disk_stops_with_one_line(scene, tmp_path, monkeypatch):
    import errno

    from icm_cli import io

    real = io.write_image_atomic
    calls = {"n": 0}

    def write(path, array):
        calls["n"] += 1
        if calls["n"] > 2:
            raise io.OutputError(f"{path}: cannot write (No space left on device)", errno.ENOSPC)
        real(path, array)

    monkeypatch.setattr(io, "write_image_atomic", write)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(6):
        Image.open(scene / "src" / f"s{i % 3}.png").save(frames / f"{i:05d}.png")
    out = tmp_path / "out"
    res = _propagate(scene, "--video", str(frames), "-o", str(out), "--save", "masks")
    assert res.exit_code == 1, res.output
    assert sum("No space left" in line for line in _lines(res.output)) == 2  # the failure, and "stopped: ..."
    assert "stopped: cannot write" in res.output and "rerun" in res.output
    records = source_records(out / "manifest.jsonl")
    assert [r["status"] for r in records] == ["done", "done", "failed"]


def test_video_model_error_with_an_empty_message_fails_one_frame(scene, tmp_path, monkeypatch):
    from icm_cli.pipeline import VideoPipeline

    real = VideoPipeline.predict_encoded
    calls = {"n": 0}

    def flaky(self, encoded):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError()
        return real(self, encoded)

    monkeypatch.setattr(VideoPipeline, "predict_encoded", flaky)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.open(scene / "src" / f"s{i}.png").save(frames / f"{i:05d}.png")
    out = tmp_path / "out"
    res = _propagate(scene, "--video", str(frames), "-o", str(out))
    assert res.exit_code == 1, res.output
    assert "00001.png: model failed: RuntimeError" in res.output
    assert [r["status"] for r in source_records(out / "manifest.jsonl")] == ["done", "failed", "done"]
