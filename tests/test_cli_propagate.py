"""`icm propagate` end to end on small images the tests write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import save_png, textured_scene, source_records

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    img, mask = textured_scene(120, 160, (30, 40, 60, 70), seed=1)
    save_png(root / "ref.png", img)
    save_png(root / "ref_mask.png", mask * 255)
    truths = {}
    for i, box in enumerate([(20, 70, 60, 70), (50, 10, 50, 60), (10, 20, 80, 100)]):
        s_img, s_mask = textured_scene(120, 160, box, seed=10 + i)
        save_png(root / "src" / f"frame{i}.png", s_img)
        truths[f"frame{i}"] = s_mask.astype(bool)
    return root, truths


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


def test_propagate_writes_every_output_named_by_stem(demo, tmp_path):
    root, truths = demo
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(root / "src"), "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    for stem, truth in truths.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        trimap = np.asarray(Image.open(out / "trimaps" / f"{stem}.png"))
        heat = Image.open(out / "heatmaps" / f"{stem}.png")
        assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}
        assert set(np.unique(trimap)) <= {0, 128, 255}
        assert heat.mode == "RGB" and heat.size == (160, 120)
        for kind in ("masks", "trimaps"):  # one channel, 8-bit grey
            with Image.open(out / kind / f"{stem}.png") as png:
                assert (png.format, png.mode) == ("PNG", "L"), kind
        assert _iou(mask > 127, truth) > 0.6, stem
    lines = source_records(out / "manifest.jsonl")
    assert [l["stem"] for l in lines] == ["frame0", "frame1", "frame2"]
    assert all(l["status"] == "done" and l["error"] is None for l in lines)


def test_existing_outputs_are_skipped_and_stdin_sources_work(demo, tmp_path):
    root, _ = demo
    out = tmp_path / "out"
    args = ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"), "-o", str(out),
            "--save", "masks", *FAST]
    first = runner.invoke(app, args + [str(root / "src" / "frame0.png")])
    assert first.exit_code == 0, first.output
    before = (out / "masks" / "frame0.png").stat().st_mtime_ns
    listing = "\n".join(str(root / "src" / f"frame{i}.png") for i in range(3)) + "\n"
    second = runner.invoke(app, args + ["-", "--json"], input=listing)
    assert second.exit_code == 0, second.output
    records = [json.loads(l) for l in second.stdout.splitlines() if l.startswith("{")]
    assert [r["status"] for r in records] == ["skipped", "done", "done"]
    assert (out / "masks" / "frame0.png").stat().st_mtime_ns == before
    assert not (out / "trimaps").exists()


def test_bad_source_fails_alone_with_nonzero_exit(demo, tmp_path):
    root, _ = demo
    src = tmp_path / "src"
    src.mkdir()
    (src / "a_broken.png").write_bytes(b"\x89PNG garbage")
    Image.open(root / "src" / "frame1.png").save(src / "b_good.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(src), "-o", str(out), *FAST])
    assert res.exit_code == 1
    assert "a_broken.png" in res.output
    assert (out / "masks" / "b_good.png").exists()
    records = source_records(out / "manifest.jsonl")
    assert {r["stem"]: r["status"] for r in records} == {"a_broken": "failed", "b_good": "done"}


def test_non_square_and_exif_rotated_sources_keep_their_display_size(demo, tmp_path):
    root, _ = demo
    img, _ = textured_scene(90, 200, (20, 60, 50, 60), seed=5)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 8
    src = tmp_path / "src"
    src.mkdir()
    pil.save(src / "rotated.jpg", exif=exif.tobytes(), quality=95)
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(src), "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert Image.open(out / "masks" / "rotated.png").size == (90, 200)


def test_several_references_are_one_context(demo, tmp_path):
    root, truths = demo
    img2, mask2 = textured_scene(100, 100, (20, 20, 50, 50), seed=7)
    save_png(tmp_path / "ref2.png", img2)
    save_png(tmp_path / "ref2_mask.png", mask2)  # 0/1 mask
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              "--ref", str(tmp_path / "ref2.png"), "--mask", str(tmp_path / "ref2_mask.png"),
                              str(root / "src" / "frame1.png"), "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    mask = np.asarray(Image.open(out / "masks" / "frame1.png")) > 127
    assert _iou(mask, truths["frame1"]) > 0.6


@pytest.mark.parametrize("case", ["empty_mask", "size_mismatch", "missing_ref", "unpaired"])
def test_reference_problems_are_one_line_errors(demo, tmp_path, case):
    root, _ = demo
    ref, mask = str(root / "ref.png"), str(root / "ref_mask.png")
    extra = []
    if case == "empty_mask":
        mask = save_png(tmp_path / "empty.png", np.zeros((120, 160), np.uint8))
    elif case == "size_mismatch":
        mask = save_png(tmp_path / "small.png", np.full((60, 80), 255, np.uint8))
    elif case == "missing_ref":
        ref = str(tmp_path / "nope.png")
    elif case == "unpaired":
        extra = ["--ref", ref]
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", mask, *extra, str(root / "src"),
                              "-o", str(tmp_path / "out"), *FAST])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert {"empty_mask": "empty", "size_mismatch": "--resize-masks", "missing_ref": "nope.png",
            "unpaired": "one --mask per --ref"}[case] in res.output


def test_alpha_and_cutout_outputs(demo, tmp_path):
    root, truths = demo
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(root / "src" / "frame0.png"), "-o", str(out), "--save", "alpha,cutout",
                              "--kernel", "6", *FAST])
    assert res.exit_code == 0, res.output
    alpha = np.asarray(Image.open(out / "alpha" / "frame0.png"))
    cut = Image.open(out / "cutout" / "frame0.png")
    assert alpha.shape == (120, 160) and alpha.dtype == np.uint8
    assert cut.mode == "RGBA" and cut.size == (160, 120)
    assert np.array_equal(np.asarray(cut)[..., 3], alpha)
    truth = truths["frame0"]
    assert alpha[truth].mean() > 200 and alpha[~truth].mean() < 40
    assert not (out / "masks").exists()


def test_unknown_save_kind_is_an_error(demo, tmp_path):
    root, _ = demo
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(root / "src"), "-o", str(tmp_path / "o"), "--save", "masks,sparkles", *FAST])
    assert res.exit_code == 2 and "--save" in res.output and "'sparkles'" in res.output  # (mattes is alpha now)


def test_fine_edges_run_end_to_end(demo, tmp_path):
    root, truths = demo
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"),
                              str(root / "src" / "frame2.png"), "-o", str(out), "--save", "masks", "--fine-edges",
                              *FAST])
    assert res.exit_code == 0, res.output
    assert _iou(np.asarray(Image.open(out / "masks" / "frame2.png")) > 127, truths["frame2"]) > 0.6
